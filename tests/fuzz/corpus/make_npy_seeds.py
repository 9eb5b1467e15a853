#!/usr/bin/env python3
"""Writes the .npy seed inputs of tests/fuzz.rs (tests/fuzz/corpus/npy/); stdlib only.

The prefix of a file's name is what kiln::npy must make of it (tests/fuzz/npy.rs checks it):
  ok_      read and read_indices both return Ok
  idxerr_  read returns Ok, read_indices an Error (an int64 index outside 0..=i32::MAX)
  err_     both return an Error (never a panic, never an abort)
The valid files are byte for byte what numpy.save writes (format 1.0 and 2.0 headers, padded
to 64 bytes with the trailing newline).
"""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "npy")


def header(descr, shape, fortran=False, version=1, text=None):
    if text is None:
        shape_text = "(" + "".join(f"{d}, " for d in shape)[:-2] + ("," if len(shape) == 1 else "") + ")"
        text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}"
    raw = text.encode("latin1") if isinstance(text, str) else text
    prefix = 10 if version == 1 else 12
    pad = (64 - (prefix + len(raw) + 1) % 64) % 64
    raw = raw + b" " * pad + b"\n"
    size = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + size + raw


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(HERE, exist_ok=True)
    f4 = struct.pack("<6f", 0.5, -1.0, 2.25, 3.0, -0.125, 7.0)
    # Valid files of every element type kiln reads.
    write("ok_f4_2x3.npy", header("<f4", (2, 3)) + f4)
    write("ok_f8_scalar.npy", header("<f8", ()) + struct.pack("<d", 3.5))
    write("ok_i4_5.npy", header("<i4", (5,)) + struct.pack("<5i", 0, 1, 2, -3, 2**31 - 1))
    write("ok_i8_4.npy", header("<i8", (4,)) + struct.pack("<4q", 0, 1, 7, 2**31 - 1))
    write("ok_f4_big_endian.npy", header(">f4", (3,)) + struct.pack(">3f", 1.0, 2.0, 3.0))
    write("ok_f4_empty_0x4.npy", header("<f4", (0, 4)))
    write("ok_f4_v2_header.npy", header("<f4", (2, 3), version=2) + f4)
    write("ok_f4_v3_header.npy", header("<f4", (2, 3), version=3) + f4)
    # Extra bytes after the data: numpy's reader ignores them too.
    write("ok_f4_trailing_bytes.npy", header("<f4", (2,)) + struct.pack("<3f", 1.0, 2.0, 3.0))
    # int64 indices outside the i32 range: read keeps them, read_indices refuses them.
    write("idxerr_i8_negative.npy", header("<i8", (2,)) + struct.pack("<2q", 0, -1))
    write("idxerr_i8_past_i32.npy", header("<i8", (1,)) + struct.pack("<q", 2**31))
    # Malformed files.
    write("err_empty_file.npy", b"")
    write("err_bad_magic.npy", b"\x93NUMPZ\x01\x00" + header("<f4", (2, 3))[8:] + f4)
    write("err_bad_version.npy", b"\x93NUMPY\x09\x00" + header("<f4", (2, 3))[8:] + f4)
    write("err_truncated_header.npy", header("<f4", (2, 3))[:40])
    write("err_truncated_data.npy", header("<f4", (4,)) + f4[:8])
    write("err_fortran_order.npy", header("<f4", (2, 3), fortran=True) + f4)
    write("err_complex64.npy", header("<c8", (1,)) + struct.pack("<2f", 1.0, 0.0))
    write("err_uint8.npy", header("|u1", (3,)) + b"\x01\x02\x03")
    write("err_unicode.npy", header("<U2", (1,)) + "ab".encode("utf-32-le"))
    write("err_object_pickle.npy", header("|O", (1,)) + b"\x80\x04N.")
    write("err_structured.npy", header("", (1,), text="{'descr': [('a', '<f4'), ('b', '<i4')], "
                                       "'fortran_order': False, 'shape': (1,), }") + struct.pack("<fi", 1.0, 2))
    write("err_subarray_dtype.npy", header("", (1,), text="{'descr': [('a', '<f4', (2,))], "
                                          "'fortran_order': False, 'shape': (1,), }") + struct.pack("<2f", 1.0, 2.0))
    write("err_negative_dim.npy", header("", (), text="{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"))
    write("err_shape_not_tuple.npy", header("", (), text="{'descr': '<f4', 'fortran_order': False, 'shape': 5, }"))
    write("err_missing_descr.npy", header("", (), text="{'fortran_order': False, 'shape': (1,), }") + f4[:4])
    write("err_not_a_dict.npy", header("", (), text="['<f4', False, (1,)]") + f4[:4])
    write("err_not_utf8.npy", header("", (), text=b"{'descr': '<f4\xff', 'fortran_order': False, 'shape': (1,), }"))
    # Shapes whose element count overflows 64 bits (and one where a later 0 would make it 0):
    # a reader that multiplies without checking panics (debug) or wraps (release).
    write("err_shape_overflow.npy", header("<f4", (2**32, 2**32)))
    write("err_shape_overflow_then_zero.npy", header("<f4", (2**32, 2**32, 0)))
    write("err_dim_past_u64.npy", header("<f4", (2**64,)))
    write("err_shape_huge_no_data.npy", header("<f8", (2**40,)))
    # A format 2.0 header that claims 4 GiB: must fail on the short file, not allocate it.
    write("err_header_len_4gib.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr': '<f4'}")
    # Deep nesting inside a header of numpy's own maximum size (a recursive parser's stack).
    write("err_deep_nesting.npy", header("", (), text="{'descr': " + "[" * 4000 + "]" * 4000 + "}"))


if __name__ == "__main__":
    main()

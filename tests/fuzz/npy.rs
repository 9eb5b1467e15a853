//! `kiln::npy::read` and `read_indices` (what `kiln run` reads its inputs with) on the seed
//! files, on structured mutations of a valid header (version, length field, descr, order,
//! shape, data length) and on arbitrary bytes. The property: they never panic (nor abort),
//! and return either an array whose data matches its shape or a typed `Error`; where the
//! mutation is known to leave a valid file, or known to break it, the answer must be that one.

use std::path::Path;

use kiln::Error;
use kiln::registry::Array;
use proptest::prelude::*;

use super::{Tally, config, corpus, scratch};

/// What kiln must make of a file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// `read` returns an array of this many elements (and this shape, checked by the caller).
    Ok,
    /// `read` returns an error.
    Err,
    /// Either: the input was mutated in a way whose effect the test does not predict.
    Any,
}

/// Reads `path` both ways and checks what every answer must satisfy; returns the `read` result.
fn read_both(path: &Path) -> kiln::Result<Array> {
    let array = kiln::npy::read(path);
    if let Ok(a) = &array {
        // An array's data always matches its shape (a product that overflows is never Ok).
        let n = a.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(n, Some(a.data.len()), "{}: shape {:?} with {} values", path.display(), a.shape, a.data.len());
    }
    if let Err(e) = &array {
        assert!(matches!(e, Error::File { .. }), "{}: read's error is not Error::File: {e:?}", path.display());
    }
    let indices = kiln::npy::read_indices(path, "fuzz_indices");
    match (&array, &indices) {
        // Same file, same parse: read_indices fails only on what read fails on, or on an
        // index outside the i32 range, named by the argument.
        (Ok(a), Ok(b)) => {
            let bits = |a: &Array| a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!((&a.shape, bits(a)), (&b.shape, bits(b)), "{}", path.display())
        }
        (Ok(a), Err(Error::InvalidValue { arg: "fuzz_indices", .. })) => {
            assert!(a.data.iter().any(|v| !(0.0..=i32::MAX as f64).contains(v)), "{}", path.display())
        }
        (Err(_), Err(Error::File { .. })) => {}
        (a, b) => panic!("{}: read gave {a:?} but read_indices {b:?}", path.display()),
    }
    array
}

/// Every seed file, first: its name's prefix says what kiln must make of it (see
/// tests/fuzz/corpus/make_npy_seeds.py).
#[test]
fn npy_seed_corpus() {
    let tally = Tally::new("npy seeds");
    let mut names: Vec<_> = std::fs::read_dir(corpus("npy")).expect("tests/fuzz/corpus/npy").flatten().collect();
    names.sort_by_key(|e| e.file_name());
    assert!(names.len() >= 30, "the seed corpus is missing");
    for entry in names {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let array = read_both(&path);
        let indices = kiln::npy::read_indices(&path, "fuzz_indices");
        match name.split('_').next() {
            Some("ok") => {
                assert!(array.is_ok() && indices.is_ok(), "{name}: {array:?} / {indices:?}");
            }
            Some("idxerr") => assert!(array.is_ok() && indices.is_err(), "{name}: {array:?} / {indices:?}"),
            Some("err") => assert!(array.is_err(), "{name}: read gave {array:?}"),
            _ => panic!("{name}: a seed's name starts with ok_, idxerr_ or err_"),
        }
        tally.add("files");
    }
    // Not a file at all.
    assert!(matches!(kiln::npy::read(&corpus("npy")), Err(Error::File { .. })));
    assert!(matches!(kiln::npy::read(&corpus("npy").join("absent.npy")), Err(Error::File { .. })));
}

/// The known-good values in seeds: exact numbers, so the seeds also pin the reader's decoding.
#[test]
fn npy_seed_values() {
    let read = |name: &str| kiln::npy::read(&corpus("npy").join(name)).expect(name);
    let a = read("ok_f4_2x3.npy");
    assert_eq!((a.shape, a.data), (vec![2, 3], vec![0.5, -1.0, 2.25, 3.0, -0.125, 7.0]));
    let a = read("ok_f8_scalar.npy");
    assert_eq!((a.shape, a.data), (vec![], vec![3.5]));
    let a = read("ok_f4_big_endian.npy");
    assert_eq!(a.data, vec![1.0, 2.0, 3.0]);
    let a = read("ok_i8_4.npy");
    assert_eq!(a.data, vec![0.0, 1.0, 7.0, i32::MAX as f64]);
    let a = read("ok_f4_empty_0x4.npy");
    assert_eq!((a.shape, a.data.len()), (vec![0, 4], 0));
}

/// One element type a header can name: its descr and its byte size, and whether kiln reads it.
const DESCRS: &[(&str, usize, bool)] = &[
    ("<f4", 4, true),
    ("<f8", 8, true),
    ("<i4", 4, true),
    ("<i8", 8, true),
    (">f4", 4, true),
    (">i8", 8, true),
    ("<f2", 2, false),
    ("<c8", 8, false),
    ("|u1", 1, false),
    ("|b1", 1, false),
    ("<u4", 4, false),
    ("<U3", 12, false),
    ("<M8[ns]", 8, false),
    ("|V8", 8, false),
    ("|O", 8, false),
];

/// Descr texts no reader should accept (the whole `'descr': ...` value as written).
const BAD_DESCRS: &[&str] = &[
    "''",
    "'<'",
    "'f4'",
    "'<i0'",
    "'<f16'",
    "'<V18446744073709551615'",
    "'<U4611686018427387904'",
    "'<f99999999999999999999'",
    "'<f4\\x00'",
    "[('a', '<f4', (4294967296, 4294967296))]",
    "[('a', '<f4'), ('a', '<f4')]",
    "[]",
    "None",
    "4",
];

/// A dimension as the header writes it: a number, a token that is not a dimension, or one that
/// Python's literal syntax reads as an integer although numpy never writes it (`+3`, `0x10`).
#[derive(Clone, Debug)]
enum Dim {
    Num(u64),
    Bad(&'static str),
    Exotic(&'static str),
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        6 => (0u64..8).prop_map(Dim::Num),
        2 => prop::sample::select(vec![
            16u64,
            255,
            1 << 31,
            1 << 32,
            1 << 40,
            1 << 62,
            1 << 63,
            u64::MAX,
            u64::MAX / 3,
        ])
        .prop_map(Dim::Num),
        1 => prop::sample::select(vec![
            "-1",
            "-5",
            "18446744073709551616",
            "99999999999999999999999999",
            "1.5",
            "'2'",
            "None",
            "(2,)",
        ])
        .prop_map(Dim::Bad),
        // An empty item is a trailing comma when last (`(0, )` is `(0,)`), an error elsewhere.
        1 => prop::sample::select(vec!["-0", "+3", "0x10", "1_0", "True", "00", ""]).prop_map(Dim::Exotic),
    ]
}

/// A structured mutation of a valid `.npy` file.
#[derive(Clone, Debug)]
struct NpyCase {
    version: u8,
    /// An index into DESCRS, or a bad descr text.
    descr: Result<usize, &'static str>,
    fortran: &'static str,
    shape: Vec<Dim>,
    /// Shape written as a list instead of a tuple.
    shape_as_list: bool,
    /// A second 'shape' key after the first (Python keeps the last).
    duplicate_shape: Option<Vec<Dim>>,
    /// Added to the header-length field.
    header_len_delta: i64,
    /// Data bytes relative to what the shape needs: cut (negative) or extra (positive).
    data_delta: i64,
    /// Byte-level edits applied last: (position, new byte); any edit makes the outcome Any.
    flips: Vec<(usize, u8)>,
    /// Cut the file after this many bytes (applied last).
    cut: Option<usize>,
}

fn npy_case() -> impl Strategy<Value = NpyCase> {
    (
        prop_oneof![8 => Just(1u8), 2 => Just(2), 2 => Just(3), 1 => any::<u8>()],
        prop_oneof![6 => (0..DESCRS.len()).prop_map(Ok), 1 => prop::sample::select(BAD_DESCRS).prop_map(Err)],
        prop_oneof![8 => Just("False"), 1 => Just("True"), 1 => prop::sample::select(vec!["0", "None", "'no'", "[]"])],
        prop::collection::vec(dim(), 0..4),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.08, prop::collection::vec(dim(), 0..3)),
        prop_oneof![10 => Just(0i64), 1 => -70i64..70, 1 => Just(i64::from(u32::MAX))],
        prop_oneof![6 => Just(0i64), 2 => -16i64..0, 1 => 1i64..16],
        prop_oneof![7 => Just(vec![]), 3 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..3)],
        prop::option::weighted(0.05, any::<usize>()),
    )
        .prop_map(
            |(
                version,
                descr,
                fortran,
                shape,
                shape_as_list,
                duplicate_shape,
                header_len_delta,
                data_delta,
                flips,
                cut,
            )| {
                NpyCase {
                    version,
                    descr,
                    fortran,
                    shape,
                    shape_as_list,
                    duplicate_shape,
                    header_len_delta,
                    data_delta,
                    flips,
                    cut,
                }
            },
        )
}

fn shape_text(dims: &[Dim], as_list: bool) -> String {
    let items: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Num(n) => n.to_string(),
            Dim::Bad(t) | Dim::Exotic(t) => t.to_string(),
        })
        .collect();
    match (as_list, items.len()) {
        (true, _) => format!("[{}]", items.join(", ")),
        (false, 1) => format!("({},)", items[0]),
        (false, _) => format!("({})", items.join(", ")),
    }
}

/// The element count of a shape: None when a dimension is not an integer, Some(None) when it
/// cannot be counted in 64 bits, Err(()) when the shape holds an exotic token (not predicted).
/// kiln refuses a shape whose nonzero dimensions overflow even when another is 0 (numpy would
/// read it as empty): npyz multiplies the dimensions in order, and no such file is real.
fn numeric_count(dims: &[Dim]) -> Result<Option<Option<u64>>, ()> {
    let mut nonzero = Some(1u64);
    for d in dims {
        match d {
            Dim::Num(0) => {}
            Dim::Num(v) => nonzero = nonzero.and_then(|n| n.checked_mul(*v)),
            Dim::Bad(_) => return Ok(None),
            Dim::Exotic(_) => return Err(()),
        }
    }
    let zero = dims.iter().any(|d| matches!(d, Dim::Num(0)));
    Ok(Some(nonzero.map(|n| if zero { 0 } else { n })))
}

/// The file's bytes and what kiln must make of them (with the shape it must report).
fn build(case: &NpyCase) -> (Vec<u8>, Expect, Vec<usize>) {
    let descr_text = match case.descr {
        Ok(i) => format!("'{}'", DESCRS[i].0),
        Err(t) => t.to_string(),
    };
    let mut dict = format!(
        "{{'descr': {descr_text}, 'fortran_order': {}, 'shape': {}, ",
        case.fortran,
        shape_text(&case.shape, case.shape_as_list)
    );
    if let Some(dup) = &case.duplicate_shape {
        dict += &format!("'shape': {}, ", shape_text(dup, false));
    }
    dict += "}";
    let prefix = if case.version == 1 { 10 } else { 12 };
    let pad = (64 - (prefix + dict.len() + 1) % 64) % 64;
    let text = format!("{dict}{}\n", " ".repeat(pad));
    let len = (text.len() as i64 + case.header_len_delta).max(0);
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend([case.version, 0]);
    if case.version == 1 {
        bytes.extend((len as u16).to_le_bytes());
    } else {
        bytes.extend((len as u32).to_le_bytes());
    }
    bytes.extend(text.as_bytes());

    // The shape that counts is the last one written (a Python dict keeps the last key).
    let shape = case.duplicate_shape.as_ref().unwrap_or(&case.shape);
    let count = numeric_count(shape);
    let item = match case.descr {
        Ok(i) => DESCRS[i].1 as u64,
        Err(_) => 4,
    };
    // Data: the bytes the shape needs (when that is small), plus or minus data_delta.
    let needed = count.ok().flatten().flatten().and_then(|n| n.checked_mul(item)).filter(|&b| b <= 4096);
    let data_len = (needed.unwrap_or(64) as i64 + case.data_delta).max(0) as usize;
    bytes.extend((0..data_len).map(|i| (i * 37 % 251) as u8));

    let well_formed = matches!(case.version, 1..=3) && case.header_len_delta == 0 && !case.shape_as_list;
    let supported = matches!(case.descr, Ok(i) if DESCRS[i].2);
    let mut expect = match (well_formed, count, case.descr) {
        // A damaged preamble, an exotic dimension or an unusual descr text: not predicted.
        (false, _, _) | (_, Err(()), _) | (_, _, Err(_)) => Expect::Any,
        // A dimension that is not a non-negative integer, or a count that overflows: never Ok.
        (true, Ok(None), Ok(_)) | (true, Ok(Some(None)), Ok(_)) => Expect::Err,
        // An element type kiln does not read, or Fortran order: refused.
        (true, Ok(Some(Some(_))), Ok(_)) if !supported || case.fortran == "True" => Expect::Err,
        (true, Ok(Some(Some(_))), Ok(_)) if case.fortran != "False" || case.duplicate_shape.is_some() => Expect::Any,
        // A valid header: read when the data is all there, refused when it is cut short.
        (true, Ok(Some(Some(_))), Ok(_)) => match needed {
            Some(b) if data_len as u64 >= b => Expect::Ok,
            _ => Expect::Err,
        },
    };
    for &(pos, byte) in &case.flips {
        let n = bytes.len();
        if n > 0 {
            bytes[pos % n] = byte;
            expect = Expect::Any;
        }
    }
    if let Some(cut) = case.cut {
        let n = bytes.len();
        bytes.truncate(cut % (n + 1));
        expect = Expect::Any;
    }
    let shape_usize: Option<Vec<usize>> =
        shape.iter().map(|d| if let Dim::Num(v) = d { Some(*v as usize) } else { None }).collect();
    (bytes, expect, shape_usize.unwrap_or_default())
}

/// Cases of each property (a case is one temporary file, read twice: about a millisecond).
const CASES_MUTATED: u32 = 1500;
const CASES_BYTES: u32 = 600;

#[test]
fn npy_mutated_headers() {
    let tally = Tally::new("npy mutated headers");
    let path = scratch("npy").join("mutated.npy");
    proptest!(config(CASES_MUTATED), |(case in npy_case())| {
        let (bytes, expect, shape) = build(&case);
        std::fs::write(&path, &bytes).expect("write a case");
        let result = read_both(&path);
        match expect {
            Expect::Ok => {
                let a = result.unwrap_or_else(|e| panic!("a valid file was refused: {e}"));
                prop_assert_eq!(&a.shape, &shape);
                tally.add("valid files read");
            }
            Expect::Err => {
                prop_assert!(result.is_err(), "an invalid file was read: {:?}", result);
                tally.add("invalid files refused");
            }
            Expect::Any => tally.add(if result.is_ok() { "other files read" } else { "other files refused" }),
        }
    });
}

#[test]
fn npy_arbitrary_bytes() {
    let tally = Tally::new("npy arbitrary bytes");
    let path = scratch("npy").join("bytes.npy");
    // Arbitrary bytes after the magic and a version most of the time, so the parser is reached.
    let file = (prop::bool::weighted(0.8), 1u8..4, prop::collection::vec(any::<u8>(), 0..400));
    proptest!(config(CASES_BYTES), |((magic, version, tail) in file)| {
        let mut bytes = Vec::new();
        if magic {
            bytes.extend(b"\x93NUMPY");
            bytes.extend([version, 0]);
        }
        bytes.extend(&tail);
        std::fs::write(&path, &bytes).expect("write a case");
        let result = read_both(&path);
        tally.add(if result.is_ok() { "read" } else { "refused" });
    });
}

/// Regression (found by `npy_mutated_headers`): a shape whose element count overflows 64 bits,
/// `(4294967296, 4294967296)`, panicked inside npyz (it multiplies the dimensions unchecked) in
/// debug builds and read as an empty array of that shape in release builds. Now an error.
#[test]
fn regression_npy_shape_count_overflow_is_an_error() {
    for name in ["err_shape_overflow.npy", "err_shape_overflow_then_zero.npy", "err_dim_past_u64.npy"] {
        match kiln::npy::read(&corpus("npy").join(name)) {
            Err(Error::File { reason, .. }) => assert!(reason.contains("shape"), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Regression: a header length field beyond numpy's 10000-byte limit is refused before any of
/// it is read (a 4 GiB claim must not become a 4 GiB allocation).
#[test]
fn regression_npy_header_length_beyond_numpy_limit_is_an_error() {
    match kiln::npy::read(&corpus("npy").join("err_header_len_4gib.npy")) {
        Err(Error::File { reason, .. }) => assert!(reason.contains("more than numpy reads"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

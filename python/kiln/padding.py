"""Unpad / pad of variable-length batches (kernels/padding.cu; flash-attn bert_padding semantics).

hidden ``[batch, seqlen, ...]``, packed ``[nnz, ...]``; token (b, s) has the flat index
``b·seqlen + s``; indices and cu_seqlens are int32.
"""

from collections import namedtuple

from ._launch import FLOAT, I32, U8, Launch, prod
from . import _lib

Unpadded = namedtuple("Unpadded", "packed indices cu_seqlens max_seqlen")
Unpadded.__doc__ = "packed [nnz, ...], indices int32 [nnz], cu_seqlens int32 [batch + 1], max_seqlen (int)."


def _data_status(L, word):
    code = int(word[0])
    if code != 0:
        raise ValueError(f"{L.op}: bad data ({_lib.data_status_name(code)}); nothing was written")


def unpad(hidden, mask=None, seqlens=None):
    """Removes padding: the kept tokens are ``mask`` [batch, seqlen] (bool/uint8/int32, nonzero
    keeps, holes allowed) or the first ``seqlens[b]`` tokens of each sequence (int32 [batch]).
    Reads nnz back to the host (as flash-attn's unpad_input does): the kept tokens are indexed in
    one pass (kiln.h's unpad with ``packed`` NULL: a mask takes one look-back launch), then exactly nnz rows are
    gathered, so no padded-size buffer is allocated."""
    op = "padding/unpad fwd"
    with Launch(op, hidden, "hidden") as L:
        dt = L.check(hidden, "hidden", dtypes=FLOAT)
        if hidden.ndim < 2:
            raise ValueError(f"{op}: hidden must be [batch, seqlen, ...], got shape {list(hidden.shape)}")
        batch, seqlen = int(hidden.shape[0]), int(hidden.shape[1])
        dim = prod(hidden.shape[2:])
        if (mask is None) == (seqlens is None):
            raise TypeError(f"{op}: give exactly one of mask and seqlens")
        if mask is not None:
            mdt = L.check(mask, "mask", dtypes=(U8, I32), shape=(batch, seqlen))
        else:
            L.check(seqlens, "seqlens", dtypes=(I32,), shape=(batch,))
            mdt = U8
        capacity = batch * seqlen
        hp, mp, sp = L.ptr(hidden), L.ptr(mask), L.ptr(seqlens)
        indices, ip = L.empty((capacity,), I32)
        cu, cup = L.empty((batch + 1,), I32)
        counts, cp = L.empty((2,), I32)
        word, wp = L.zeros_word()
        ws = L.lib.kiln_padding_workspace_bytes(batch, seqlen)
        L.call("kiln_padding_unpad_fwd", dt, hp, mdt, mp, sp, batch, seqlen, dim, capacity, None, ip, cup, cp, wp,
               L.workspace(ws), max(ws, 0))
        if L.cuda:
            word, counts = word.cpu(), counts.cpu()  # the host sync flash-attn's unpad_input has too
        _data_status(L, word)
        nnz, max_seqlen = int(counts[0]), int(counts[1])
    indices = indices[:nnz]
    # The indices are in range by construction: no second read of a status word.
    return Unpadded(gather(hidden, indices, check_data=False), indices, cu, max_seqlen)


def _packed_args(L, packed, indices):
    dt = L.check(packed, "packed", dtypes=FLOAT)
    if packed.ndim < 1:
        raise ValueError(f"{L.op}: packed must be [nnz, ...]")
    nnz = int(packed.shape[0])
    L.check(indices, "indices", dtypes=(I32,), shape=(nnz,))
    return dt, nnz, prod(packed.shape[1:])


def pad(packed, indices, batch, seqlen, check_data=True):
    """``hidden [batch, seqlen, ...]``: zeros, with ``hidden[indices[i]] = packed[i]`` (the
    backward of unpad). Indices must be distinct and in range: ``ValueError`` otherwise, which
    on CUDA costs a host read of the kernels' data-status word; ``check_data=False`` skips that
    read (for indices known good, e.g. unpad's), and then bad indices leave the output unwritten."""
    op = "padding/pad fwd"
    with Launch(op, packed, "packed") as L:
        dt, nnz, dim = _packed_args(L, packed, indices)
        batch, seqlen = int(batch), int(seqlen)
        pp, ip = L.ptr(packed), L.ptr(indices)
        hidden, hp = L.empty((batch, seqlen) + tuple(packed.shape[1:]), packed)
        word, wp = L.zeros_word()
        ws = L.lib.kiln_padding_workspace_bytes(batch, seqlen)
        L.call("kiln_padding_pad_fwd", dt, pp, ip, None, nnz, batch, seqlen, dim, hp, wp, L.workspace(ws),
               max(ws, 0))
        if check_data or not L.cuda:
            _data_status(L, word.cpu() if L.cuda else word)
        return hidden


def gather(hidden, indices, check_data=True):
    """``packed[i] = hidden[indices[i]]`` for hidden ``[batch, seqlen, ...]`` (the backward of
    pad); ``check_data`` as in ``pad``."""
    op = "padding/gather fwd"
    with Launch(op, hidden, "hidden") as L:
        dt = L.check(hidden, "hidden", dtypes=FLOAT)
        if hidden.ndim < 2:
            raise ValueError(f"{op}: hidden must be [batch, seqlen, ...], got shape {list(hidden.shape)}")
        batch, seqlen = int(hidden.shape[0]), int(hidden.shape[1])
        L.check(indices, "indices", dtypes=(I32,), shape=(None,))
        nnz = int(indices.shape[0])
        hp, ip = L.ptr(hidden), L.ptr(indices)
        packed, pp = L.empty((nnz,) + tuple(hidden.shape[2:]), hidden)
        word, wp = L.zeros_word()
        L.call("kiln_padding_gather_fwd", dt, hp, ip, None, nnz, batch, seqlen, prod(hidden.shape[2:]), pp, wp)
        if check_data or not L.cuda:
            _data_status(L, word.cpu() if L.cuda else word)
        return packed


__all__ = ["Unpadded", "unpad", "pad", "gather"]

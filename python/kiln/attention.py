"""FlashAttention-2 style attention with ALiBi (kernels/attention.cu), shared/REFERENCE.md §4.

q ``[total_q, H, D]``, k/v ``[total_k, H_k, D]`` packed by ``cu_seqlens_q/k`` (int32
``[batch + 1]``), f16 or bf16, D in 32/64/96/128, H a multiple of H_k (GQA/MQA). Bias: none,
linear ALiBi ``−slope·|i + sk − sq − j|`` with slopes f32 ``[H]`` or ``[batch, H]``, or
geometric ``−slope·‖p_i − p_j‖`` from positions f32 ``[total, 3]`` (self-attention). Causal is
bottom-right aligned; with ``prefix_len`` (int32 ``[batch]``, lengths >= 0) it is prefix-LM: key j of
sequence b is also visible to every query when j < prefix_len[b]. Returns the output and the true
log-sum-exp f32 ``[H, total_q]``.
``forward_padded`` takes a padded batch ``[B, S, H, D]`` with an optional padding mask.

``backward`` gives dq, dk, dv from the forward's inputs, its out and lse and dout, and on request
the gradients of the ALiBi slopes (``[H]`` or ``[B, H]``, as given) and of the geometric
positions; deterministic (no float atomics). ``backward_padded`` is the padded form's backward.
``has_backward()`` says whether the C ABI this package speaks has ``kiln_attention_alibi_bwd``.
"""

import math
from collections import namedtuple

import numpy as np

from ._launch import BF16, F16, F32, I32, Launch, is_torch
from . import _lib

Output = namedtuple("Output", "out lse")
Grads = namedtuple("Grads", "dq dk dv dslopes dpositions")
Grads.__doc__ = ("dq [total_q, H, D], dk/dv [total_k, H_k, D] in q's dtype; dslopes f32 of the slopes' shape and "
                 "dpositions f32 [total, 3] when asked for (else None).")
_Dims = namedtuple("_Dims", "dtype total_q total_k heads heads_k head_dim batch per_batch")


def has_backward():
    """Whether the C ABI this package speaks has the attention backward."""
    return _lib.has_function("kiln_attention_alibi_bwd")


def alibi_slopes(heads):
    """The standard ALiBi slopes for ``heads`` heads (non-powers of two included), f32 numpy."""
    def power_of_two(n):
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    m = 2 ** int(math.floor(math.log2(heads)))
    s = power_of_two(m)
    if m < heads:
        s += power_of_two(2 * m)[0::2][: heads - m]
    return np.asarray(s, dtype=np.float32)


def _host_ints(L, t):
    return [int(v) for v in (t.cpu().tolist() if L.torch else t.tolist())]


def _check_inputs(L, q, k, v, cu_seqlens_q, cu_seqlens_k, slopes, positions):
    """The checks forward and backward share; returns the sizes (``_Dims``)."""
    op = L.op
    dt = L.check(q, "q", dtypes=(F16, BF16))
    if q.ndim != 3:
        raise ValueError(f"{op}: q must be [total_q, heads, head_dim], got shape {list(q.shape)}")
    total_q, heads, d = (int(s) for s in q.shape)
    L.check(k, "k", dtypes=(F16, BF16), like=q, shape=(None, None, d))
    total_k, heads_k = int(k.shape[0]), int(k.shape[1])
    L.check(v, "v", like=q, dtypes=(F16, BF16), shape=(total_k, heads_k, d))
    if not L.lib.kiln_attention_head_dim_supported(d):
        raise ValueError(f"{op}: head_dim {d} is not supported (32, 64, 96 or 128)")
    if heads_k < 1 or heads % heads_k:
        raise ValueError(f"{op}: q's {heads} heads must be a multiple of k's {heads_k}")
    L.check(cu_seqlens_q, "cu_seqlens_q", dtypes=(I32,), shape=(None,))
    batch = int(cu_seqlens_q.shape[0]) - 1
    if batch < 0:
        raise ValueError(f"{op}: cu_seqlens_q must have batch + 1 >= 1 entries")
    L.check(cu_seqlens_k, "cu_seqlens_k", dtypes=(I32,), shape=(batch + 1,))
    per_batch = 0
    if slopes is not None:
        L.check(slopes, "slopes", dtypes=(F32,))
        if tuple(slopes.shape) == (heads,):
            per_batch = 0
        elif tuple(slopes.shape) == (batch, heads):
            per_batch = 1
        else:
            raise ValueError(f"{op}: slopes has shape {list(slopes.shape)}, expected [{heads}] or [{batch}, {heads}]")
    if positions is not None:
        if slopes is None:
            raise ValueError(f"{op}: geometric ALiBi (positions) needs slopes")
        if total_q != total_k:
            raise ValueError(f"{op}: geometric ALiBi is self-attention: total_q {total_q} != total_k {total_k}")
        L.check(positions, "positions", dtypes=(F32,), shape=(total_q, 3))
    return _Dims(dt, total_q, total_k, heads, heads_k, d, batch, per_batch)


def _max_seqlen(L, cu_seqlens):
    cu = _host_ints(L, cu_seqlens)
    return max((b - a for a, b in zip(cu, cu[1:])), default=0)


def _check_prefix(L, prefix_len, batch):
    if prefix_len is not None:
        L.check(prefix_len, "prefix_len", dtypes=(I32,), shape=(batch,))


def forward(q, k, v, cu_seqlens_q, cu_seqlens_k, *, slopes=None, positions=None, causal=False,
            softmax_scale=None, max_seqlen_q=None, prefix_len=None):
    """``Output(out, lse)`` (see the module doc). ``max_seqlen_q`` defaults to the longest query
    sequence (read from cu_seqlens_q: a host sync for CUDA tensors)."""
    op = "attention/alibi fwd"
    with Launch(op, q, "q") as L:
        n = _check_inputs(L, q, k, v, cu_seqlens_q, cu_seqlens_k, slopes, positions)
        _check_prefix(L, prefix_len, n.batch)
        if max_seqlen_q is None:
            max_seqlen_q = _max_seqlen(L, cu_seqlens_q)
        scale = 1.0 / math.sqrt(n.head_dim) if softmax_scale is None else float(softmax_scale)
        qp, kp, vp = L.ptr(q), L.ptr(k), L.ptr(v)
        cqp, ckp, sp, pp = L.ptr(cu_seqlens_q), L.ptr(cu_seqlens_k), L.ptr(slopes), L.ptr(positions)
        out, outp = L.empty(q.shape, q)
        lse, lsep = L.empty((n.heads, n.total_q), F32)
        L.call("kiln_attention_alibi_fwd", n.dtype, qp, kp, vp, cqp, ckp, sp, n.per_batch, pp, n.batch, n.total_q,
               n.total_k, n.heads, n.heads_k, n.head_dim, int(max_seqlen_q), int(bool(causal)), L.ptr(prefix_len),
               scale, outp, lsep)
        return Output(out, lse)


def _lse_pad(lse_packed, indices, tokens):
    """lse [H, tokens]: −inf, with lse[h, indices[i]] = lse_packed[h, i]."""
    op = "attention/lse_pad fwd"
    with Launch(op, lse_packed, "lse_packed") as L:
        L.check(lse_packed, "lse_packed", dtypes=(F32,), shape=(None, None))
        heads, nnz = (int(s) for s in lse_packed.shape)
        L.check(indices, "indices", dtypes=(I32,), shape=(nnz,))
        lp, ip = L.ptr(lse_packed), L.ptr(indices)
        lse, lsep = L.empty((heads, int(tokens)), F32)
        L.call("kiln_attention_lse_pad_fwd", lp, ip, heads, nnz, int(tokens), lsep)
        return lse


def _padded_sizes(op, q, k, v, positions):
    """batch, seqlen_q, seqlen_k, heads of the padded form (checks the ranks and the batch)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if getattr(t, "ndim", None) != 4:
            raise ValueError(f"{op}: {name} must be [batch, seqlen, heads, head_dim], got shape "
                             f"{list(getattr(t, 'shape', []))}")
    batch, sq, heads, _ = (int(x) for x in q.shape)
    sk = int(k.shape[1])
    if int(k.shape[0]) != batch:
        raise ValueError(f"{op}: k has batch {int(k.shape[0])}, q has {batch}")
    if positions is not None and tuple(positions.shape) != (batch, sq, 3):
        raise ValueError(f"{op}: positions has shape {list(positions.shape)}, expected [{batch}, {sq}, 3]")
    return batch, sq, sk, heads


def _uniform_cu(like, batch, seqlen):
    """cu_seqlens int32 [batch + 1] of batch sequences of seqlen tokens, of like's kind and device."""
    c = np.arange(batch + 1, dtype=np.int32) * np.int32(seqlen)
    if is_torch(like):
        import torch

        return torch.from_numpy(c).to(like.device)
    return c


def _flat(t):
    """[batch, seqlen, ...] as [batch·seqlen, ...] (a view of a contiguous array)."""
    return t.reshape((t.shape[0] * t.shape[1],) + tuple(t.shape[2:]))


def _take_tokens(lse, indices):
    """lse [heads, tokens] at the columns ``indices``: [heads, nnz], contiguous."""
    if is_torch(lse):
        return lse.index_select(1, indices.long()).contiguous()
    return np.ascontiguousarray(lse[:, indices])


def forward_padded(q, k, v, padding_mask=None, *, slopes=None, positions=None, causal=False, softmax_scale=None):
    """Attention over a padded batch: q ``[B, S_q, H, D]``, k/v ``[B, S_k, H_k, D]``, an optional
    padding mask ``[B, S]`` (bool/uint8/int32, nonzero keeps the token as a query and a key; needs
    S_q = S_k), slopes ``[H]`` or ``[B, H]``, geometric positions f32 ``[B, S, 3]``. Without a mask
    the kernel reads the padded tensors as they are; with one the kept tokens are unpadded,
    attended and padded back (MosaicBERT): kept tokens are numbered 0, 1, … within their
    sequence, dropped rows get out 0 and lse −inf. Returns out ``[B, S_q, H, D]`` and lse f32
    ``[H, B, S_q]`` (the Rust ``attention::forward_padded``)."""
    from . import padding

    op = "attention/alibi fwd (padded)"
    batch, sq, sk, heads = _padded_sizes(op, q, k, v, positions)
    if padding_mask is None:
        o = forward(_flat(q), _flat(k), _flat(v), _uniform_cu(q, batch, sq), _uniform_cu(q, batch, sk), slopes=slopes,
                    causal=causal, positions=None if positions is None else _flat(positions),
                    softmax_scale=softmax_scale, max_seqlen_q=sq)
        return Output(o.out.reshape(q.shape), o.lse.reshape(heads, batch, sq))
    if sk != sq:
        raise ValueError(f"{op}: a padding mask needs seqlen_k = seqlen_q, got {sk} and {sq}")
    u = padding.unpad(q, mask=padding_mask)
    kp, vp = padding.gather(k, u.indices), padding.gather(v, u.indices)
    pp = None if positions is None else padding.gather(positions, u.indices)
    o = forward(u.packed, kp, vp, u.cu_seqlens, u.cu_seqlens, slopes=slopes, positions=pp, causal=causal,
                softmax_scale=softmax_scale, max_seqlen_q=u.max_seqlen)
    out = padding.pad(o.out, u.indices, batch, sq)
    lse = _lse_pad(o.lse, u.indices, batch * sq)
    return Output(out, lse.reshape(heads, batch, sq))


def backward(q, k, v, out, lse, dout, cu_seqlens_q, cu_seqlens_k, *, slopes=None, positions=None, causal=False,
             softmax_scale=None, max_seqlen_q=None, max_seqlen_k=None, slope_grad=False, position_grad=False,
             prefix_len=None):
    """``Grads(dq, dk, dv, dslopes, dpositions)``: the gradients of a loss with respect to q, k, v
    from ``dout`` (its gradient with respect to the forward's output, ``[total_q, H, D]`` in q's
    dtype), and with ``slope_grad`` / ``position_grad`` those of the slopes (f32, their shape:
    ``[H]`` or ``[B, H]``) and of the geometric positions (f32 ``[total, 3]``). The other
    arguments are the forward's; ``out`` and ``lse`` are what ``forward`` returned for them (the
    kernels recompute the probabilities from lse). GQA's dk/dv sum over the query heads that share
    a kv head; rows that see no key get dq = 0, keys that no query sees dk = dv = 0.
    ``max_seqlen_q`` / ``max_seqlen_k`` default to the longest sequences (read from the
    cu_seqlens: a host sync for CUDA tensors). Deterministic: the same bits on every run."""
    op = "attention/alibi bwd"
    if not has_backward():
        raise NotImplementedError(f"{op}: this kiln C ABI has no kiln_attention_alibi_bwd; rebuild the library and "
                                  "regenerate python/kiln/_abi.py (scripts/python-abi.py)")
    with Launch(op, q, "q") as L:
        n = _check_inputs(L, q, k, v, cu_seqlens_q, cu_seqlens_k, slopes, positions)
        _check_prefix(L, prefix_len, n.batch)
        L.check(out, "out", dtypes=(F16, BF16), like=q, shape=tuple(q.shape))
        L.check(dout, "dout", dtypes=(F16, BF16), like=q, shape=tuple(q.shape))
        L.check(lse, "lse", dtypes=(F32,), shape=(n.heads, n.total_q))
        if slope_grad and slopes is None:
            raise ValueError(f"{op}: slope_grad needs ALiBi slopes, but slopes is None")
        if position_grad and positions is None:
            raise ValueError(f"{op}: position_grad needs geometric ALiBi, but positions is None")
        if max_seqlen_q is None:
            max_seqlen_q = _max_seqlen(L, cu_seqlens_q)
        if max_seqlen_k is None:
            max_seqlen_k = _max_seqlen(L, cu_seqlens_k)
        scale = 1.0 / math.sqrt(n.head_dim) if softmax_scale is None else float(softmax_scale)
        qp, kp, vp, op_, lp, dop = (L.ptr(t) for t in (q, k, v, out, lse, dout))
        cqp, ckp, sp, pp = L.ptr(cu_seqlens_q), L.ptr(cu_seqlens_k), L.ptr(slopes), L.ptr(positions)
        dq, dqp = L.empty(q.shape, q)
        dk, dkp = L.empty(k.shape, k)
        dv, dvp = L.empty(v.shape, v)
        dslopes, dsp = L.empty(slopes.shape, F32) if slope_grad else (None, None)
        dpositions, dpp = L.empty((n.total_q, 3), F32) if position_grad else (None, None)
        ws = L.lib.kiln_attention_alibi_bwd_workspace_bytes(n.total_q, n.total_k, n.heads, n.heads_k)
        L.call("kiln_attention_alibi_bwd", n.dtype, qp, kp, vp, op_, lp, dop, cqp, ckp, sp, n.per_batch, pp, n.batch,
               n.total_q, n.total_k, n.heads, n.heads_k, n.head_dim, int(max_seqlen_q), int(max_seqlen_k),
               int(bool(causal)), L.ptr(prefix_len), scale, dqp, dkp, dvp, dsp, dpp, L.workspace(ws), max(ws, 0))
        return Grads(dq, dk, dv, dslopes, dpositions)


def backward_padded(q, k, v, out, lse, dout, padding_mask=None, *, slopes=None, positions=None, causal=False,
                    softmax_scale=None, slope_grad=False, position_grad=False):
    """The backward of ``forward_padded``: its arguments, its out ``[B, S_q, H, D]`` and lse f32
    ``[H, B, S_q]``, and dout ``[B, S_q, H, D]``. Without a mask the varlen backward runs on the
    padded tensors as they are; with one the kept tokens are unpadded (as the forward did), the
    varlen backward runs on them and dq, dk, dv (and dpositions, ``[B, S, 3]``) are padded back:
    0 for dropped tokens. Returns ``Grads`` in the padded shapes."""
    from . import padding

    op = "attention/alibi bwd (padded)"
    batch, sq, sk, heads = _padded_sizes(op, q, k, v, positions)
    with Launch(op, q, "q") as L:
        L.check(out, "out", dtypes=(F16, BF16), like=q, shape=tuple(q.shape))
        L.check(dout, "dout", dtypes=(F16, BF16), like=q, shape=tuple(q.shape))
        L.check(lse, "lse", dtypes=(F32,), shape=(heads, batch, sq))
    kw = dict(slopes=slopes, causal=causal, softmax_scale=softmax_scale, slope_grad=slope_grad,
              position_grad=position_grad)
    if padding_mask is None:
        g = backward(_flat(q), _flat(k), _flat(v), _flat(out), lse.reshape(heads, batch * sq), _flat(dout),
                     _uniform_cu(q, batch, sq), _uniform_cu(q, batch, sk),
                     positions=None if positions is None else _flat(positions), max_seqlen_q=sq, max_seqlen_k=sk, **kw)
        return Grads(g.dq.reshape(q.shape), g.dk.reshape(k.shape), g.dv.reshape(v.shape), g.dslopes,
                     None if g.dpositions is None else g.dpositions.reshape(batch, sq, 3))
    if sk != sq:
        raise ValueError(f"{op}: a padding mask needs seqlen_k = seqlen_q, got {sk} and {sq}")
    u = padding.unpad(q, mask=padding_mask)
    kp, vp, op_, dop = (padding.gather(t, u.indices, check_data=False) for t in (k, v, out, dout))
    pp = None if positions is None else padding.gather(positions, u.indices, check_data=False)
    g = backward(u.packed, kp, vp, op_, _take_tokens(lse.reshape(heads, batch * sq), u.indices), dop, u.cu_seqlens,
                 u.cu_seqlens, positions=pp, max_seqlen_q=u.max_seqlen, max_seqlen_k=u.max_seqlen, **kw)

    def pad(t):
        return None if t is None else padding.pad(t, u.indices, batch, sq, check_data=False)

    return Grads(pad(g.dq), pad(g.dk), pad(g.dv), g.dslopes, pad(g.dpositions))


__all__ = ["Output", "Grads", "alibi_slopes", "forward", "forward_padded", "backward", "backward_padded",
           "has_backward"]

"""FlashAttention-2 style attention with ALiBi (kernels/attention.cu), shared/REFERENCE.md §4.

q ``[total_q, H, D]``, k/v ``[total_k, H_k, D]`` packed by ``cu_seqlens_q/k`` (int32
``[batch + 1]``), f16 or bf16, D in 32/64/96/128, H a multiple of H_k (GQA/MQA). Bias: none,
linear ALiBi ``−slope·|i + sk − sq − j|`` with slopes f32 ``[H]`` or ``[batch, H]``, or
geometric ``−slope·‖p_i − p_j‖`` from positions f32 ``[total, 3]`` (self-attention). Causal is
bottom-right aligned. Returns the output and the true log-sum-exp f32 ``[H, total_q]``.
``forward_padded`` takes a padded batch ``[B, S, H, D]`` with an optional padding mask.

The backward exists when the C ABI has ``kiln_attention_alibi_bwd`` (``has_backward()``).
"""

import math
from collections import namedtuple

import numpy as np

from ._launch import BF16, F16, F32, I32, Launch
from . import _lib

Output = namedtuple("Output", "out lse")


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


def forward(q, k, v, cu_seqlens_q, cu_seqlens_k, *, slopes=None, positions=None, causal=False,
            softmax_scale=None, max_seqlen_q=None):
    """``Output(out, lse)`` (see the module doc). ``max_seqlen_q`` defaults to the longest query
    sequence (read from cu_seqlens_q: a host sync for CUDA tensors)."""
    op = "attention/alibi fwd"
    with Launch(op, q, "q") as L:
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
        if max_seqlen_q is None:
            cu = _host_ints(L, cu_seqlens_q)
            max_seqlen_q = max((b - a for a, b in zip(cu, cu[1:])), default=0)
        scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
        qp, kp, vp = L.ptr(q), L.ptr(k), L.ptr(v)
        cqp, ckp, sp, pp = L.ptr(cu_seqlens_q), L.ptr(cu_seqlens_k), L.ptr(slopes), L.ptr(positions)
        out, outp = L.empty(q.shape, q)
        lse, lsep = L.empty((heads, total_q), F32)
        L.call("kiln_attention_alibi_fwd", dt, qp, kp, vp, cqp, ckp, sp, per_batch, pp, batch, total_q, total_k,
               heads, heads_k, d, int(max_seqlen_q), int(bool(causal)), scale, outp, lsep)
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
    for name, t in (("q", q), ("k", k), ("v", v)):
        if getattr(t, "ndim", None) != 4:
            raise ValueError(f"{op}: {name} must be [batch, seqlen, heads, head_dim], got shape "
                             f"{list(getattr(t, 'shape', []))}")
    batch, sq, heads, d = (int(x) for x in q.shape)
    sk = int(k.shape[1])
    if int(k.shape[0]) != batch:
        raise ValueError(f"{op}: k has batch {int(k.shape[0])}, q has {batch}")
    if positions is not None and tuple(positions.shape) != (batch, sq, 3):
        raise ValueError(f"{op}: positions has shape {list(positions.shape)}, expected [{batch}, {sq}, 3]")
    if padding_mask is None:
        torch_like = not isinstance(q, np.ndarray)

        def cu(s):
            c = np.arange(0, batch * s + 1, max(s, 1), dtype=np.int32)[: batch + 1]
            if torch_like:
                import torch

                return torch.from_numpy(c).to(q.device)
            return c

        def flat(t):
            return t.reshape((t.shape[0] * t.shape[1],) + tuple(t.shape[2:]))

        o = forward(flat(q), flat(k), flat(v), cu(sq), cu(sk), slopes=slopes, causal=causal,
                    positions=None if positions is None else flat(positions), softmax_scale=softmax_scale,
                    max_seqlen_q=sq)
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


def backward(*args, **kwargs):
    """The attention backward: not in this C ABI yet (see ``has_backward()``)."""
    raise NotImplementedError(
        "attention/alibi bwd: this kiln C ABI has no kiln_attention_alibi_bwd yet; rebuild the library and "
        "regenerate python/kiln/_abi.py (scripts/python-abi.py) once it lands"
    )


__all__ = ["Output", "alibi_slopes", "forward", "forward_padded", "backward", "has_backward"]

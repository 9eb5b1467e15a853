"""Fused residual add + LayerNorm / RMSNorm over the last dimension (kernels/norm.cu).

``s = x + residual`` (in f32; residual optional), LayerNorm ``y = (s − mean)·rstd·γ + β``,
RMSNorm ``y = s·rstd·γ + β``. x, residual, y: ``[..., D]`` in the storage dtype (1 ≤ D ≤ 65536);
γ, β: f32 ``[D]`` or None (1 and 0); mean, rstd: f32 ``[rows]`` (rows = numel / D), the
statistics the backward takes.
"""

from collections import namedtuple

from ._launch import F32, Launch, numel

KINDS = ("layernorm", "rmsnorm")

Forward = namedtuple("Forward", "y residual_out mean rstd")
Forward.__doc__ = "y; residual_out (s in the storage dtype, None unless asked); mean (LayerNorm); rstd."
Backward = namedtuple("Backward", "dx dresidual dgamma dbeta")
Backward.__doc__ = "dx; dresidual (None unless asked); dgamma, dbeta (f32 [D], None unless asked)."


def _kind(kind):
    if kind not in KINDS:
        raise ValueError(f"unknown norm {kind!r}; kiln has {', '.join(KINDS)}")


def _dims(L, x):
    if x.ndim == 0:
        raise ValueError(f"{L.op}: x must have at least one dimension (the normalised one)")
    d = int(x.shape[-1])
    return numel(x) // max(d, 1), d


def _affine(L, gamma, beta, d):
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None:
            L.check(p, name, dtypes=(F32,), shape=(d,))


def forward(kind, x, gamma=None, beta=None, *, residual=None, eps=1e-5, residual_out=False):
    """Normalises x (+ residual); returns ``Forward(y, residual_out, mean, rstd)``."""
    _kind(kind)
    op = f"norm/{kind} fwd"
    with Launch(op, x) as L:
        dt = L.check(x, "x")
        rows, d = _dims(L, x)
        if residual is not None:
            L.check(residual, "residual", shape=tuple(x.shape), like=x)
        _affine(L, gamma, beta, d)
        xp, rp, gp, bp = L.ptr(x), L.ptr(residual), L.ptr(gamma), L.ptr(beta)
        y, yp = L.empty(x.shape, x)
        ro, rop = L.empty(x.shape, x) if residual_out else (None, None)
        stats_shape = tuple(x.shape[:-1])
        rstd, rstdp = L.empty(stats_shape, F32)
        if kind == "layernorm":
            mean, meanp = L.empty(stats_shape, F32)
            L.call("kiln_norm_layernorm_fwd", dt, xp, rp, gp, bp, rows, d, float(eps), yp, rop, meanp, rstdp)
        else:
            mean = None
            L.call("kiln_norm_rmsnorm_fwd", dt, xp, rp, gp, bp, rows, d, float(eps), yp, rop, rstdp)
        return Forward(y, ro, mean, rstd)


def backward(kind, dy, x, mean, rstd, gamma=None, *, residual=None, dresidual_out=None, need_dresidual=False,
             need_dgamma=True, need_dbeta=False):
    """Gradients of ``forward``: ``Backward(dx, dresidual, dgamma, dbeta)``. mean (LayerNorm) and
    rstd are the forward's; residual the forward's (or None when x already is the sum);
    dresidual_out the gradient flowing into the forward's residual_out."""
    _kind(kind)
    op = f"norm/{kind} bwd"
    with Launch(op, x) as L:
        dt = L.check(x, "x")
        rows, d = _dims(L, x)
        L.check(dy, "dy", shape=tuple(x.shape), like=x)
        stats_shape = tuple(x.shape[:-1])
        if kind == "layernorm":
            if mean is None:
                raise TypeError(f"{op}: LayerNorm's backward needs the forward's mean")
            L.check(mean, "mean", dtypes=(F32,), shape=stats_shape)
        L.check(rstd, "rstd", dtypes=(F32,), shape=stats_shape)
        for name, t in (("residual", residual), ("dresidual_out", dresidual_out)):
            if t is not None:
                L.check(t, name, shape=tuple(x.shape), like=x)
        _affine(L, gamma, None, d)
        dyp, xp, rp = L.ptr(dy), L.ptr(x), L.ptr(residual)
        mp, sp, gp, drop = L.ptr(mean) if kind == "layernorm" else None, L.ptr(rstd), L.ptr(gamma), L.ptr(dresidual_out)
        dx, dxp = L.empty(x.shape, x)
        dr, drp = L.empty(x.shape, x) if need_dresidual else (None, None)
        dg, dgp = L.empty((d,), F32) if need_dgamma else (None, None)
        db, dbp = L.empty((d,), F32) if need_dbeta else (None, None)
        ws = L.lib.kiln_norm_workspace_bytes(rows, d) if (need_dgamma or need_dbeta) else 0
        wsp = L.workspace(ws) if ws > 0 else None
        if kind == "layernorm":
            L.call("kiln_norm_layernorm_bwd", dt, dyp, xp, rp, mp, sp, gp, drop, rows, d, dxp, drp, dgp, dbp, wsp,
                   max(ws, 0))
        else:
            L.call("kiln_norm_rmsnorm_bwd", dt, dyp, xp, rp, sp, gp, drop, rows, d, dxp, drp, dgp, dbp, wsp, max(ws, 0))
        return Backward(dx, dr, dg, db)


__all__ = ["KINDS", "Forward", "Backward", "forward", "backward"]

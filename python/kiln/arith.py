"""Neural arithmetic units (kernels/arith.cu; Madsen & Johansen, ICLR 2020, stable-nalu's
conventions). x ``[B, I]``, W ``[O, I]`` (torch's Linear layout), z and dz ``[B, O]``, row-major, in
the storage dtype (math in f32).

- The NMU, z_bo = Π_i (W_c,oi·(x_bi − 1) + 1), W_c = clamp(W, ε, 1): ``nmu_forward`` saves the
  product of the nonzero terms (f32) and the zero count (int32) per output, ``nmu_backward`` takes
  them (exact gradients with zero terms, no [B, I, O] buffer, deterministic).
- The regularisers of a unit's weights (``shape`` "linear", the paper's, or "squared"):
  ``regularizers`` gives R_sparse, R_oob and the sparsity error (f32 ``[1]`` each; one pass,
  deterministic); ``regularizers_backward`` the gradient of dsparse·R_sparse + doob·R_oob
  (dsparse, doob f32 ``[1]`` arrays, as an autograd holds them).
- The NAU, z = x·W_cᵀ, W_c = clamp(W, −1, 1): kiln's two weight passes (``nau_weights``: W_c, and
  the regularisers in the same read; ``nau_dw``: clamp's gradient mask on dzᵀ·x, plus the
  regularisers' gradient) around the caller's framework's GEMMs (``nau_forward`` and
  ``nau_backward`` use ``@``: numpy's or torch's; set torch's
  ``torch.backends.cuda.matmul.allow_tf32 = False`` for IEEE f32, which the unit needs to learn
  exact sums).
- The NALU (stable-nalu's defaults: one NAC weight for both paths, ε = 1e-7): ``nalu_forward``
  and ``nalu_backward`` run kiln's six elementwise passes (``nalu_weights``, ``nalu_log``,
  ``nalu_combine``, ``nalu_combine_backward``, ``nalu_dx``, ``nalu_dweights``; every intermediate
  f32) around the framework's f32 GEMMs (``@``) and its column sum for db.
- ``lambda_schedule``: the papers' λ ramp.
"""

from collections import namedtuple

from ._launch import F32, I32, Launch, numel
from ._abi import CONSTANTS as _C

UNITS = {"nau": _C["KILN_ARITH_NAU"], "nmu": _C["KILN_ARITH_NMU"]}
SHAPES = {"linear": _C["KILN_ARITH_REG_LINEAR"], "squared": _C["KILN_ARITH_REG_SQUARED"]}

NmuForward = namedtuple("NmuForward", "z prod zeros")
NmuForward.__doc__ = "z; prod (f32 [B, O]) and zeros (int32 [B, O]), None unless saved."
Gradients = namedtuple("Gradients", "dx dw")
Gradients.__doc__ = "dx [B, I] and dw [O, I], the input's dtype."
Regularizers = namedtuple("Regularizers", "sparse oob sparsity_error")
NaluGradients = namedtuple("NaluGradients", "dx dw_hat dm_hat dg dbias")
NaluGradients.__doc__ = "Every NALU gradient, shaped and typed as its input."
Regularizers.__doc__ = "R_sparse, R_oob and max min(|W|, |1 − |W||), each f32 [1]."


def _unit(unit):
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; kiln has {', '.join(UNITS)}")
    return UNITS[unit]


def _shape(shape):
    if shape not in SHAPES:
        raise ValueError(f"unknown regulariser shape {shape!r}; kiln has {', '.join(SHAPES)}")
    return SHAPES[shape]


def _dims(L, x, w):
    dt = L.check(x, "x")
    if x.ndim != 2:
        raise ValueError(f"{L.op}: x has shape {list(x.shape)}, expected [batch, in]")
    b, i = (int(s) for s in x.shape)
    L.check(w, "w", shape=(None, i), like=x)
    return dt, b, i, int(w.shape[0])


def _eps(L, eps):
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{L.op}: eps is {eps}; the NMU clamps to [eps, 1], eps in [0, 1]")
    return float(eps)


def nmu_forward(x, w, eps=0.0, save=True):
    """The NMU forward: ``NmuForward(z, prod, zeros)`` (prod, zeros None unless ``save``)."""
    with Launch("arith/nmu fwd", x) as L:
        dt, b, i, o = _dims(L, x, w)
        eps = _eps(L, eps)
        xp, wp = L.ptr(x), L.ptr(w)
        z, zp = L.empty((b, o), x)
        prod, pp = L.empty((b, o), F32) if save else (None, None)
        zeros, cp = L.empty((b, o), I32) if save else (None, None)
        L.call("kiln_arith_nmu_fwd", dt, xp, wp, b, i, o, eps, zp, pp, cp)
        return NmuForward(z, prod, zeros)


def nmu_backward(x, w, dz, prod, zeros, eps=0.0):
    """The NMU backward from the forward's saved prod and zeros: ``Gradients(dx, dw)``."""
    with Launch("arith/nmu bwd", x) as L:
        dt, b, i, o = _dims(L, x, w)
        eps = _eps(L, eps)
        L.check(dz, "dz", shape=(b, o), like=x)
        L.check(prod, "prod", dtypes=(F32,), shape=(b, o))
        L.check(zeros, "zeros", dtypes=(I32,), shape=(b, o))
        args = [L.ptr(t) for t in (x, w, dz, prod, zeros)]
        dx, dxp = L.empty((b, i), x)
        dw, dwp = L.empty((o, i), x)
        nbytes = L.lib.kiln_arith_nmu_workspace_bytes(b, i, o)
        L.call("kiln_arith_nmu_bwd", dt, *args, b, i, o, eps, dxp, dwp, L.workspace(nbytes), max(nbytes, 0))
        return Gradients(dx, dw)


def _weights_len(L, w):
    n = numel(w)
    if n == 0:
        raise ValueError(f"{L.op}: w has no entries; the regularisers are means over at least one weight")
    return n


def regularizers(unit, w, shape="linear"):
    """``Regularizers(sparse, oob, sparsity_error)`` of ``unit``'s weights (any shape)."""
    u, s = _unit(unit), _shape(shape)
    with Launch(f"arith/{unit}_reg fwd", w, "w") as L:
        dt = L.check(w, "w")
        n = _weights_len(L, w)
        wp = L.ptr(w)
        (sp_, spp), (ob, obp), (se, sep) = (L.empty((1,), F32) for _ in range(3))
        nbytes = L.lib.kiln_arith_reg_workspace_bytes(n)
        L.call("kiln_arith_reg_fwd", dt, u, s, wp, n, spp, obp, sep, L.workspace(nbytes), nbytes)
        return Regularizers(sp_, ob, se)


def _reg_grads(L, dsparse, doob):
    L.check(dsparse, "dsparse", dtypes=(F32,), shape=(1,))
    L.check(doob, "doob", dtypes=(F32,), shape=(1,))
    return L.ptr(dsparse), L.ptr(doob)


def regularizers_backward(unit, w, dsparse, doob, shape="linear"):
    """dw, the gradient of dsparse·R_sparse + doob·R_oob (torch's conventions at the kinks)."""
    u, s = _unit(unit), _shape(shape)
    with Launch(f"arith/{unit}_reg bwd", w, "w") as L:
        dt = L.check(w, "w")
        n = _weights_len(L, w)
        wp = L.ptr(w)
        dsp, dbp = _reg_grads(L, dsparse, doob)
        dw, dwp = L.empty(tuple(w.shape), w)
        L.call("kiln_arith_reg_bwd", dt, u, s, wp, n, dsp, dbp, dwp)
        return dw


def nau_weights(w, shape=None):
    """``(wc, regs)``: W_c = clamp(W, −1, 1) (NaN kept) and, with ``shape``, the NAU's
    ``Regularizers`` from the same pass over W (else None)."""
    s = _shape(shape) if shape is not None else SHAPES["linear"]
    with Launch("arith/nau weights", w, "w") as L:
        dt = L.check(w, "w")
        n = numel(w)
        if shape is not None:
            _weights_len(L, w)
        wp = L.ptr(w)
        wc, wcp = L.empty(tuple(w.shape), w)
        if shape is None:
            L.call("kiln_arith_nau_weights", dt, wp, n, wcp, s, None, None, None, None, 0)
            return wc, None
        (sp_, spp), (ob, obp), (se, sep) = (L.empty((1,), F32) for _ in range(3))
        nbytes = L.lib.kiln_arith_reg_workspace_bytes(n)
        L.call("kiln_arith_nau_weights", dt, wp, n, wcp, s, spp, obp, sep, L.workspace(nbytes), nbytes)
        return wc, Regularizers(sp_, ob, se)


def nau_dw(w, grad, dsparse=None, doob=None, shape="linear"):
    """The NAU's dW from ``grad`` = dzᵀ·x: 0 where W is outside [−1, 1] (bounds included), plus
    the regularisers' gradient when dsparse and doob (f32 [1]) are given. Returns a new array."""
    if (dsparse is None) != (doob is None):
        raise TypeError("arith/nau dw: give both dsparse and doob, or neither")
    s = _shape(shape)
    with Launch("arith/nau dw", w, "w") as L:
        dt = L.check(w, "w")
        L.check(grad, "grad", shape=tuple(w.shape), like=w)
        n = numel(w)
        wp = L.ptr(w)
        dsp, dbp = _reg_grads(L, dsparse, doob) if dsparse is not None else (None, None)
        dw, dwp = L.copy_of(grad)
        L.call("kiln_arith_nau_dw", dt, wp, n, dwp, s, dsp, dbp)
        return dw


def _matmul(a, b, like):
    """a @ b in like's dtype (numpy's ml_dtypes bf16 products come back as f32)."""
    r = a @ b
    if r.dtype != like.dtype:
        r = r.astype(like.dtype) if hasattr(r, "astype") else r.to(like.dtype)
    return r


def nau_forward(x, w, shape=None):
    """The NAU forward: ``(z, regs)``, z = x·W_cᵀ by the framework's GEMM (``@``), regs as
    ``nau_weights`` gives them."""
    wc, regs = nau_weights(w, shape)
    return _matmul(x, wc.T, x), regs


def nau_backward(x, w, dz, dsparse=None, doob=None, shape="linear"):
    """The NAU backward: ``Gradients(dx, dw)``, dx = dz·W_c and dW = dzᵀ·x by the framework's
    GEMMs, dW finished by ``nau_dw`` (with the regularisers' gradient when given)."""
    wc, _ = nau_weights(w)
    return Gradients(_matmul(dz, wc, x), nau_dw(w, _matmul(dz.T, x, x), dsparse, doob, shape))


def lambda_schedule(lambda_hat, start, end, t):
    """λ̂·clamp((t − start)/(end − start), 0, 1); a step at ``start`` when end <= start."""
    if end <= start:
        return lambda_hat if t >= start else 0.0
    return lambda_hat * min(max((t - start) / (end - start), 0.0), 1.0)


# ------------------------------------------------------------------------------------------ NALU
def _nalu_eps(L, eps):
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"{L.op}: eps is {eps}; log(|x| + eps) needs 0 < eps <= 1")
    return float(eps)


def nalu_weights(w_hat, m_hat, g):
    """``(w, g32)``: W = tanh(Ŵ)·σ(M̂) and G, both f32, from one pass."""
    with Launch("arith/nalu weights", w_hat, "w_hat") as L:
        dt = L.check(w_hat, "w_hat")
        L.check(m_hat, "m_hat", shape=tuple(w_hat.shape), like=w_hat)
        L.check(g, "g", shape=tuple(w_hat.shape), like=w_hat)
        args = [L.ptr(t) for t in (w_hat, m_hat, g)]
        w, wp = L.empty(tuple(w_hat.shape), F32)
        g32, gp = L.empty(tuple(w_hat.shape), F32)
        L.call("kiln_arith_nalu_weights", dt, *args, numel(w_hat), wp, gp)
        return w, g32


def nalu_log(x, eps=1e-7):
    """``(log_x, x32)``: log(|x| + ε) and x, both f32, from one pass."""
    with Launch("arith/nalu log", x) as L:
        dt = L.check(x, "x")
        eps = _nalu_eps(L, eps)
        xp = L.ptr(x)
        lx, lp = L.empty(tuple(x.shape), F32)
        x32, xp32 = L.empty(tuple(x.shape), F32)
        L.call("kiln_arith_nalu_log", dt, xp, numel(x), eps, lp, xp32)
        return lx, x32


def _combine_args(L, a, lm, gl, bias):
    if a.ndim != 2:
        raise ValueError(f"{L.op}: a has shape {list(a.shape)}, expected [batch, out]")
    b, o = (int(v) for v in a.shape)
    for name, t in (("a", a), ("lm", lm), ("gl", gl)):
        L.check(t, name, dtypes=(F32,), shape=(b, o))
    dt = L.check(bias, "bias", shape=(o,))
    return dt, b, o


def nalu_combine(a, lm, gl, bias):
    """y = g·a + (1 − g)·exp(lm), g = σ(gl + bias), in bias's dtype (a, lm, gl f32 [B, O])."""
    with Launch("arith/nalu combine", a, "a") as L:
        dt, b, o = _combine_args(L, a, lm, gl, bias)
        args = [L.ptr(t) for t in (a, lm, gl, bias)]
        y, yp = L.empty((b, o), bias)
        L.call("kiln_arith_nalu_combine_fwd", dt, *args, b, o, yp)
        return y


def nalu_combine_backward(a, lm, gl, bias, dy):
    """``(da, dlm, dgl)`` (f32 [B, O]): the gradients through the combine."""
    with Launch("arith/nalu combine bwd", a, "a") as L:
        dt, b, o = _combine_args(L, a, lm, gl, bias)
        L.check(dy, "dy", shape=(b, o), like=bias)
        args = [L.ptr(t) for t in (a, lm, gl, bias, dy)]
        outs = [L.empty((b, o), F32) for _ in range(3)]
        L.call("kiln_arith_nalu_combine_bwd", dt, *args, b, o, *(p for _, p in outs))
        return tuple(t for t, _ in outs)


def nalu_dx(x, dsum, dlog, eps=1e-7):
    """dx = dsum + dlog·sign(x)/(|x| + ε) in x's dtype (dsum, dlog f32, x's shape)."""
    with Launch("arith/nalu dx", x) as L:
        dt = L.check(x, "x")
        eps = _nalu_eps(L, eps)
        L.check(dsum, "dsum", dtypes=(F32,), shape=tuple(x.shape))
        L.check(dlog, "dlog", dtypes=(F32,), shape=tuple(x.shape))
        args = [L.ptr(t) for t in (x, dsum, dlog)]
        dx, dxp = L.empty(tuple(x.shape), x)
        L.call("kiln_arith_nalu_dx", dt, args[0], numel(x), eps, args[1], args[2], dxp)
        return dx


def nalu_dweights(w_hat, m_hat, dw, dg32, dbias32):
    """``(dw_hat, dm_hat, dg, dbias)`` in Ŵ's dtype from dW, dG (f32 [O, I]) and db (f32 [O])."""
    with Launch("arith/nalu dweights", w_hat, "w_hat") as L:
        dt = L.check(w_hat, "w_hat")
        shape = tuple(w_hat.shape)
        L.check(m_hat, "m_hat", shape=shape, like=w_hat)
        L.check(dw, "dw", dtypes=(F32,), shape=shape)
        L.check(dg32, "dg", dtypes=(F32,), shape=shape)
        L.check(dbias32, "dbias", dtypes=(F32,), shape=(shape[0],))
        args = [L.ptr(t) for t in (w_hat, m_hat, dw, dg32, dbias32)]
        outs = [L.empty(shape, w_hat) for _ in range(3)] + [L.empty((shape[0],), w_hat)]
        L.call("kiln_arith_nalu_dweights", dt, *args, numel(w_hat), shape[0], *(p for _, p in outs))
        return tuple(t for t, _ in outs)


def _c32(t):
    """t as a contiguous f32 array of its kind (the framework's GEMM results)."""
    if hasattr(t, "contiguous"):
        return t.float().contiguous()
    import numpy as np

    return np.ascontiguousarray(t, dtype=np.float32)


def _nalu_forward_parts(x, w_hat, m_hat, g, eps):
    if x.ndim != 2 or w_hat.ndim != 2 or x.shape[1] != w_hat.shape[1]:
        raise ValueError(
            f"arith/nalu: x has shape {list(x.shape)} and w_hat {list(w_hat.shape)}; expected [batch, in] and [out, in]"
        )
    w, g32 = nalu_weights(w_hat, m_hat, g)
    log_x, x32 = nalu_log(x, eps)
    return w, g32, log_x, x32, _c32(x32 @ w.T), _c32(log_x @ w.T), _c32(x32 @ g32.T)


def nalu_forward(x, w_hat, m_hat, g, bias, eps=1e-7):
    """y = g·(x·Wᵀ) + (1 − g)·exp(log(|x| + ε)·Wᵀ), W = tanh(Ŵ)·σ(M̂), g = σ(x·Gᵀ + b)."""
    *_, a, lm, gl = _nalu_forward_parts(x, w_hat, m_hat, g, eps)
    return nalu_combine(a, lm, gl, bias)


def nalu_backward(x, w_hat, m_hat, g, bias, dy, eps=1e-7):
    """Every NALU gradient: ``NaluGradients(dx, dw_hat, dm_hat, dg, dbias)`` (the forward's
    passes and GEMMs recomputed)."""
    w, g32, log_x, x32, a, lm, gl = _nalu_forward_parts(x, w_hat, m_hat, g, eps)
    da, dlm, dgl = nalu_combine_backward(a, lm, gl, bias, dy)
    dx = nalu_dx(x, _c32(da @ w + dgl @ g32), _c32(dlm @ w), eps)
    dw = _c32(da.T @ x32 + dlm.T @ log_x)
    return NaluGradients(dx, *nalu_dweights(w_hat, m_hat, dw, _c32(dgl.T @ x32), _c32(dgl.sum(0))))

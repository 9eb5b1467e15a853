"""Gated linear units (kernels/glu.cu): ``y = h(a)·b`` over ``[..., F]``, shared/REFERENCE.md §2.

Gates: glu (σ), bilinear, reglu, geglu (erf), geglu_tanh, swiglu (order 2 of σ), atglu (order 2
by default), and the expanded gates xatglu, xgeglu, xswiglu with a trainable scalar ``alpha``
(order 1 by default). Inputs are either separate ``a`` and ``b`` of one shape, or one packed
``ab`` ``[..., 2F]`` with ``gate_half="first"`` (TransformerEngine, Megatron, MosaicBERT) or
``"second"`` (PyTorch ``F.glu``).
"""

from ._launch import F32, Launch, numel

PLAIN = ("glu", "bilinear", "reglu", "geglu", "geglu_tanh", "swiglu")
EXPANDED = ("xatglu", "xgeglu", "xswiglu")
OPS = PLAIN + ("atglu",) + EXPANDED


def _order(kind, order):
    if kind in PLAIN:
        if order is not None:
            raise TypeError(f"glu/{kind}: takes no order (only atglu and the expanded gates do)")
        return []
    o = (2 if kind == "atglu" else 1) if order is None else order
    if o not in (1, 2):
        raise ValueError(f"glu/{kind}: order must be 1 or 2, got {o!r}")
    return [int(o)]


def _alpha(kind, alpha):
    if kind in EXPANDED:
        return [float(alpha)]
    if alpha not in (None, 0, 0.0):
        raise TypeError(f"glu/{kind}: takes no alpha (only xatglu, xgeglu and xswiglu do)")
    return []


def _layout(L, kind, a, b, gate_half):
    """Checks the inputs; returns (dtype, rows, F, a pointer, b pointer, row stride, y shape)."""
    if kind not in OPS:
        raise ValueError(f"unknown GLU {kind!r}; kiln has {', '.join(OPS)}")
    if a.ndim == 0:
        raise ValueError(f"{L.op}: the input must have at least one dimension")
    if b is None:
        dt = L.check(a, "ab")
        if gate_half not in ("first", "second"):
            raise ValueError(f"{L.op}: gate_half must be 'first' or 'second', got {gate_half!r}")
        two_f = int(a.shape[-1])
        if two_f % 2:
            raise ValueError(f"{L.op}: the packed input's last dimension must be even (2F), got {two_f}")
        f = two_f // 2
        p = L.ptr(a)
        itemsize = a.element_size() if L.torch else a.itemsize
        first, second = p, p + f * itemsize
        ap, bp = (first, second) if gate_half == "first" else (second, first)
        return dt, numel(a) // max(two_f, 1), f, ap, bp, two_f, tuple(a.shape[:-1]) + (f,)
    dt = L.check(a, "a")
    L.check(b, "b", shape=tuple(a.shape), like=a)
    f = int(a.shape[-1])
    return dt, numel(a) // max(f, 1), f, L.ptr(a), L.ptr(b), f, tuple(a.shape)


def forward(kind, a, b=None, *, gate_half="first", alpha=None, order=None):
    """``y = h(a)·b``; with ``b=None``, ``a`` is the packed ``[..., 2F]`` input."""
    op = f"glu/{kind} fwd"
    scal = _alpha(kind, alpha) + _order(kind, order)
    with Launch(op, a, "a") as L:
        dt, rows, f, ap, bp, stride, yshape = _layout(L, kind, a, b, gate_half)
        if f < 1:
            raise ValueError(f"{op}: F must be at least 1")
        y, yp = L.empty(yshape, a)
        L.call(f"kiln_glu_{kind}_fwd", dt, ap, bp, stride, yp, rows, f, *scal)
        return y


def backward(kind, a, b, dy, *, gate_half="first", alpha=None, order=None, need_dalpha=True):
    """``(da, db, dalpha)`` for separate inputs, or ``(dab, None, dalpha)`` for a packed one
    (``b=None``; dab is packed like ab). dalpha is f32 [1] for the expanded gates (None
    otherwise, or when ``need_dalpha`` is false)."""
    op = f"glu/{kind} bwd"
    scal = _alpha(kind, alpha)
    order_arg = _order(kind, order)
    with Launch(op, a, "a") as L:
        dt, rows, f, ap, bp, stride, yshape = _layout(L, kind, a, b, gate_half)
        if f < 1:
            raise ValueError(f"{op}: F must be at least 1")
        L.check(dy, "dy", shape=yshape, like=a)
        dyp = L.ptr(dy)
        if b is None:
            dab, dabp = L.empty(a.shape, a)
            itemsize = a.element_size() if L.torch else a.itemsize
            first, second = dabp, dabp + f * itemsize
            dap, dbp = (first, second) if gate_half == "first" else (second, first)
            outs = (dab, None)
        else:
            da, dap = L.empty(a.shape, a)
            db, dbp = L.empty(a.shape, a)
            outs = (da, db)
        tail = []
        dalpha = None
        if kind in EXPANDED:
            if need_dalpha:
                ws = L.lib.kiln_glu_workspace_bytes(rows, f)
                dalpha, dalp = L.empty((1,), F32)
                tail = [dalp, L.workspace(ws), ws]
            else:
                tail = [None, None, 0]
        L.call(f"kiln_glu_{kind}_bwd", dt, ap, bp, stride, dyp, dap, dbp, stride, rows, f, *scal, *order_arg, *tail)
        return outs[0], outs[1], dalpha


__all__ = ["OPS", "PLAIN", "EXPANDED", "forward", "backward"]

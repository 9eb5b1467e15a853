"""Activations (kernels/activation.cu): ``y = f(x)`` elementwise, and the backward ``dx = dy·f'(x)``
with the gradient of a trainable parameter (α, slope, θ). Formulas: shared/REFERENCE.md §1.

Works on numpy arrays and torch CPU tensors (the emulated library) and torch CUDA tensors (the
CUDA library); storage f32/f16/bf16, any shape (contiguous). Parameters:

| op | forward parameters | backward extras | parameter gradient |
|---|---|---|---|
| relu gelu gelu_tanh quick_gelu silu sigmoid squared_relu atlu | | | |
| xatlu xgelu xsilu | ``alpha`` (float) | | dα, f32 [1] |
| smelu | ``beta`` | | |
| gsmelu | ``alpha beta g_neg g_pos t`` | | |
| prelu | ``slope`` f32 [1] or [C] (C = the last dimension) | | dslope, f32 like slope |
| jumprelu | ``theta`` f32 [C] or [1] | ``eps`` (bandwidth) | dθ, f32 like theta |
"""

from ._launch import F32, Launch, numel

PLAIN = ("relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "sigmoid", "squared_relu", "atlu")
EXPANDED = ("xatlu", "xgelu", "xsilu")
OPS = PLAIN + EXPANDED + ("smelu", "gsmelu", "prelu", "jumprelu")
# Scalar parameters of each op, in the C ABI's order (all floats).
SCALARS = {**{n: () for n in PLAIN}, **{n: ("alpha",) for n in EXPANDED}, "smelu": ("beta",),
           "gsmelu": ("alpha", "beta", "g_neg", "g_pos", "t"), "prelu": (), "jumprelu": ()}
# The per-channel f32 parameter of an op, and the name of its gradient.
CHANNEL_PARAM = {"prelu": "slope", "jumprelu": "theta"}
DEFAULTS = {"alpha": 0.0, "g_neg": 0.0, "g_pos": 1.0, "t": 0.0}


def _op(name):
    if name not in OPS:
        raise ValueError(f"unknown activation {name!r}; kiln has {', '.join(OPS)}")


def _scalars(name, params):
    values = []
    for p in SCALARS[name]:
        v = params.get(p, DEFAULTS.get(p))
        if v is None:
            raise TypeError(f"activation/{name}: the parameter {p} is required")
        try:
            values.append(float(v))
        except (TypeError, ValueError):
            raise TypeError(f"activation/{name}: {p} must be a number, got {type(v).__name__}") from None
    extra = set(params) - set(SCALARS[name]) - {CHANNEL_PARAM.get(name), "eps"}
    if extra:
        raise TypeError(f"activation/{name}: unexpected parameter(s) {', '.join(sorted(extra))}")
    return values


def _channels(launch, name, x, params):
    """The per-channel parameter of prelu/jumprelu: (pointer, channels)."""
    pname = CHANNEL_PARAM[name]
    p = params.get(pname)
    if p is None:
        raise TypeError(f"activation/{name}: the parameter {pname} (f32 [1] or [channels]) is required")
    launch.check(p, pname, dtypes=(F32,))
    if p.ndim != 1 or p.shape[0] < 1:
        raise ValueError(f"activation/{name}: {pname} must be 1-D f32 [1] or [channels], got shape {list(p.shape)}")
    c = int(p.shape[0])
    if c > 1 and (x.ndim == 0 or x.shape[-1] != c):
        raise ValueError(
            f"activation/{name}: {pname} has {c} channels but x's last dimension is "
            f"{x.shape[-1] if x.ndim else 'absent'} (channels run along the last dimension)"
        )
    return launch.ptr(p), c


def forward(name, x, **params):
    """``y = f(x)`` for activation ``name`` with its parameters (see the module doc)."""
    _op(name)
    op = f"activation/{name} fwd"
    scalars = _scalars(name, params)
    with Launch(op, x) as L:
        dt = L.check(x, "x")
        n = numel(x)
        args = []
        if name in CHANNEL_PARAM:
            p, c = _channels(L, name, x, params)
            args = [p, c]
        xp = L.ptr(x)
        y, yp = L.empty(x.shape, x)
        L.call(f"kiln_activation_{name}_fwd", dt, xp, yp, n, *scalars, *args)
        return y


def backward(name, x, dy, need_dparam=True, **params):
    """``(dx, dparam)`` for activation ``name``: dx = dy·f'(x); dparam is the gradient of its
    trainable parameter (dα f32 [1] for xatlu/xgelu/xsilu, dslope/dθ f32 like the parameter for
    prelu/jumprelu; jumprelu takes ``eps``), or None when the op has none or ``need_dparam`` is
    false."""
    _op(name)
    op = f"activation/{name} bwd"
    scalars = _scalars(name, params)
    with Launch(op, x) as L:
        dt = L.check(x, "x")
        L.check(dy, "dy", shape=tuple(x.shape), like=x)
        n = numel(x)
        lib = L.lib
        pre, post = [], []
        dparam = None
        if name in CHANNEL_PARAM:
            p, c = _channels(L, name, x, params)
            pre = [p, c]
            if name == "jumprelu":
                eps = params.get("eps")
                if eps is None:
                    raise TypeError("activation/jumprelu bwd: the bandwidth eps is required")
                pre.append(float(eps))
            if need_dparam:
                dparam, dpp = L.empty((c,), F32)
                ws = L.workspace(lib.kiln_activation_workspace_bytes(n, c))
                post = [dpp, ws, lib.kiln_activation_workspace_bytes(n, c)]
            else:
                post = [None, None, 0]
        elif name in EXPANDED:
            if need_dparam:
                dparam, dpp = L.empty((1,), F32)
                ws = L.workspace(lib.kiln_activation_workspace_bytes(n, 1))
                post = [dpp, ws, lib.kiln_activation_workspace_bytes(n, 1)]
            else:
                post = [None, None, 0]
        xp, dyp = L.ptr(x), L.ptr(dy)
        dx, dxp = L.empty(x.shape, x)
        L.call(f"kiln_activation_{name}_bwd", dt, xp, dyp, dxp, n, *scalars, *pre, *post)
        return dx, dparam


__all__ = ["OPS", "PLAIN", "EXPANDED", "forward", "backward"]

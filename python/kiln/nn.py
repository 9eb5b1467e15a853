"""kiln in PyTorch models: ``torch.autograd.Function`` wrappers and ``torch.nn.Module``s.

CUDA tensors run on ``libkiln.so`` (the tensor's device, the current stream); CPU tensors on the
emulated library (slow, checked: for tests). Inputs must be contiguous and f32/f16/bf16;
trainable parameters (α, slope, θ, γ, β, ALiBi slopes) are f32 ``nn.Parameter``s (cast to f32 at each
call if a model was cast to a lower precision, so their gradients flow back in the parameter's dtype).
A scalar α is read to the host at each call (``float(alpha)``: the C ABI takes it by value).

    import kiln.nn as knn
    mlp = knn.GLUMLP(4096, 11008, kind="swiglu").cuda().bfloat16()
    norm = knn.RMSNorm(4096).cuda()
    y = mlp(norm(x))

Requires torch; ``import kiln`` alone does not.
"""

import math

import torch
from torch import nn

from . import activation as _act
from . import arith as _arith
from . import attention as _attn
from . import equivariant as _eq
from . import glu as _glu
from . import norm as _norm
from . import padding as _pad

__all__ = [
    "activation", "glu", "layer_norm", "rms_norm", "unpad_input", "pad_input", "alibi_attention",
    "alibi_attention_padded",
    "Activation", "ReLU", "GELU", "QuickGELU", "SiLU", "Sigmoid", "SquaredReLU", "ATLU", "XATLU", "XGELU", "XSiLU",
    "SmeLU", "GSmeLU", "PReLU", "JumpReLU", "GLU", "GLUMLP", "LayerNorm", "RMSNorm", "ALiBiAttention",
    "spherical_harmonics", "hessian", "SphericalHarmonics",
    "nau", "nmu", "nalu", "arith_regularizers", "NAU", "NMU", "NALU",
]


def _f32(p):
    return None if p is None else (p if p.dtype == torch.float32 else p.float())


def _scalar(v):
    return float(v.detach()) if isinstance(v, torch.Tensor) else (None if v is None else float(v))


# ----------------------------------------------------------------------------- activations
class _Activation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, param, name, scalars):
        # param: the op's trainable tensor (α of the x-activations, slope, θ) or None.
        kw = dict(scalars)
        if name in _act.CHANNEL_PARAM:
            kw[_act.CHANNEL_PARAM[name]] = param.detach()
        elif name in _act.EXPANDED and param is not None:
            kw["alpha"] = _scalar(param)
        ctx.name, ctx.kw = name, kw
        ctx.param_shape = None if param is None else param.shape
        ctx.param_device = None if param is None else param.device
        ctx.save_for_backward(x)
        return _act.forward(name, x, **{k: v for k, v in kw.items() if k != "eps"})

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        need = ctx.needs_input_grad[1]
        dx, dparam = _act.backward(ctx.name, x, dy.contiguous(), need_dparam=need, **ctx.kw)
        if dparam is not None and ctx.param_shape is not None:
            # α may live on the host while x is on a GPU (the C ABI takes it by value).
            dparam = dparam.reshape(ctx.param_shape).to(ctx.param_device)
        return dx, dparam, None, None


def activation(x, name, **params):
    """``kiln.activation`` with autograd. α (x-activations) may be a float or a tensor (then it
    gets dα); prelu's ``slope`` and jumprelu's ``theta`` are f32 tensors (they get dslope, dθ);
    jumprelu needs ``eps``."""
    param = None
    scalars = {}
    for k, v in params.items():
        if k in ("slope", "theta") or (k == "alpha" and name in _act.EXPANDED and isinstance(v, torch.Tensor)):
            param = v
        else:
            scalars[k] = v
    if name in _act.CHANNEL_PARAM and param is not None:
        param = _f32(param)
    return _Activation.apply(x, param, name, tuple(sorted(scalars.items())))


class Activation(nn.Module):
    """Any kiln activation by name, with fixed scalar parameters (see ``kiln.activation``)."""

    def __init__(self, name, **params):
        super().__init__()
        if name not in _act.OPS:
            raise ValueError(f"unknown activation {name!r}; kiln has {', '.join(_act.OPS)}")
        self.name, self.params = name, params

    def forward(self, x):
        return activation(x, self.name, **self.params)

    def extra_repr(self):
        return ", ".join([repr(self.name)] + [f"{k}={v}" for k, v in self.params.items()])


def _named(name, doc):
    cls = type(name, (Activation,), {"__doc__": doc})

    def __init__(self, op=None):
        Activation.__init__(self, op or cls._op)

    cls.__init__ = __init__
    return cls


ReLU = _named("ReLU", "max(0, x).")
ReLU._op = "relu"
QuickGELU = _named("QuickGELU", "x·σ(1.702x).")
QuickGELU._op = "quick_gelu"
SiLU = _named("SiLU", "x·σ(x).")
SiLU._op = "silu"
Sigmoid = _named("Sigmoid", "σ(x).")
Sigmoid._op = "sigmoid"
SquaredReLU = _named("SquaredReLU", "max(0, x)².")
SquaredReLU._op = "squared_relu"
ATLU = _named("ATLU", "x·(atan(x)/π + ½).")
ATLU._op = "atlu"


class GELU(Activation):
    """GELU, ``approximate="none"`` (erf) or ``"tanh"``, as ``torch.nn.GELU``."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__("gelu" if approximate == "none" else "gelu_tanh")


class _Expanded(nn.Module):
    _op = None

    def __init__(self, alpha=0.0, trainable=True):
        super().__init__()
        a = torch.tensor(float(alpha), dtype=torch.float32)
        if trainable:
            self.alpha = nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)

    def forward(self, x):
        return activation(x, self._op, alpha=self.alpha)

    def extra_repr(self):
        return f"alpha={float(self.alpha.detach()):.4g}"


class XATLU(_Expanded):
    """Expanded ArcTan linear unit x·[(1+2α)(atan(x)/π+½) − α], trainable α (arXiv 2405.20768)."""

    _op = "xatlu"


class XGELU(_Expanded):
    """Expanded GELU x·[(1+2α)Φ(x) − α], trainable α."""

    _op = "xgelu"


class XSiLU(_Expanded):
    """Expanded SiLU x·[(1+2α)σ(x) − α], trainable α."""

    _op = "xsilu"


class SmeLU(Activation):
    """Smooth ReLU with half-width β (arXiv 2010.09931)."""

    def __init__(self, beta=1.0):
        super().__init__("smelu", beta=beta)


class GSmeLU(Activation):
    """Generalized SmeLU (arXiv 2010.09931 eq. 11)."""

    def __init__(self, alpha=1.0, beta=1.0, g_neg=0.0, g_pos=1.0, t=0.0):
        super().__init__("gsmelu", alpha=alpha, beta=beta, g_neg=g_neg, g_pos=g_pos, t=t)


class PReLU(nn.Module):
    """PReLU with a trainable slope shared (``num_parameters=1``) or per channel (the LAST
    dimension, unlike torch.nn.PReLU's dimension 1)."""

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init), dtype=torch.float32))

    def forward(self, x):
        return activation(x, "prelu", slope=self.weight)


class JumpReLU(nn.Module):
    """JumpReLU x·H(x − θ) with a trainable threshold per feature (last dimension) and the
    straight-through dθ of bandwidth ``eps`` (arXiv 2407.14435)."""

    def __init__(self, num_features, eps=1e-3, init=0.0):
        super().__init__()
        self.theta = nn.Parameter(torch.full((num_features,), float(init), dtype=torch.float32))
        self.eps = float(eps)

    def forward(self, x):
        return activation(x, "jumprelu", theta=self.theta, eps=self.eps)


# --------------------------------------------------------------------------------------- GLU
class _GLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ab, alpha, kind, gate_half, order):
        a = _scalar(alpha) if kind in _glu.EXPANDED else None
        ctx.kw = {"gate_half": gate_half, "alpha": a, "order": order}
        ctx.kind = kind
        ctx.alpha_shape = None if not isinstance(alpha, torch.Tensor) else alpha.shape
        ctx.alpha_device = None if not isinstance(alpha, torch.Tensor) else alpha.device
        ctx.save_for_backward(ab)
        return _glu.forward(kind, ab, **ctx.kw)

    @staticmethod
    def backward(ctx, dy):
        (ab,) = ctx.saved_tensors
        need = ctx.needs_input_grad[1] and ctx.kind in _glu.EXPANDED
        dab, _, dalpha = _glu.backward(ctx.kind, ab, None, dy.contiguous(), need_dalpha=need, **ctx.kw)
        if dalpha is not None and ctx.alpha_shape is not None:
            dalpha = dalpha.reshape(ctx.alpha_shape).to(ctx.alpha_device)
        return dab, dalpha, None, None, None


def glu(ab, kind="swiglu", gate_half="first", alpha=None, order=None):
    """``kiln.glu`` on a packed ``[..., 2F]`` input with autograd; α (expanded gates) a float or
    a tensor (then it gets dα). ``kind="glu", gate_half="second"`` is ``F.glu``."""
    if kind in _glu.EXPANDED and alpha is None:
        alpha = 0.0
    return _GLU.apply(ab, alpha, kind, gate_half, order)


class GLU(nn.Module):
    """The fused gate of a GLU MLP on a packed ``[..., 2F]`` input; the expanded gates get a
    trainable α (initialised to 0, as the paper does)."""

    def __init__(self, kind="swiglu", gate_half="first", order=None, alpha=0.0, trainable=True):
        super().__init__()
        if kind not in _glu.OPS:
            raise ValueError(f"unknown GLU {kind!r}; kiln has {', '.join(_glu.OPS)}")
        self.kind, self.gate_half, self.order = kind, gate_half, order
        if kind in _glu.EXPANDED:
            a = torch.tensor(float(alpha), dtype=torch.float32)
            if trainable:
                self.alpha = nn.Parameter(a)
            else:
                self.register_buffer("alpha", a)
        else:
            self.alpha = None

    def forward(self, ab):
        return glu(ab, self.kind, self.gate_half, self.alpha, self.order)

    def extra_repr(self):
        return f"{self.kind!r}, gate_half={self.gate_half!r}"


class GLUMLP(nn.Module):
    """The GLU MLP block ``W_down·(h(x W_gᵀ) ⊙ x W_uᵀ)``: torch's GEMMs (one packed gate/up
    projection ``[2F, d]``, gate half first) around kiln's fused gate."""

    def __init__(self, d_model, d_ff, kind="swiglu", bias=False, order=None, device=None, dtype=None):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=bias, device=device, dtype=dtype)
        self.gate = GLU(kind, "first", order)
        self.down = nn.Linear(d_ff, d_model, bias=bias, device=device, dtype=dtype)

    def forward(self, x):
        return self.down(self.gate(self.gate_up(x).contiguous()))


# ------------------------------------------------------------------------------------- norms
class _Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, residual, kind, eps):
        out = _norm.forward(kind, x, _detach(gamma), _detach(beta), residual=residual, eps=eps,
                            residual_out=residual is not None)
        ctx.kind = kind
        ctx.has_residual = residual is not None
        ctx.save_for_backward(x, residual, out.mean, out.rstd, gamma)
        if residual is not None:
            return out.y, out.residual_out
        return out.y

    @staticmethod
    def backward(ctx, dy, dresidual_out=None):
        x, residual, mean, rstd, gamma = ctx.saved_tensors
        need = ctx.needs_input_grad
        g = _norm.backward(ctx.kind, dy.contiguous(), x, mean, rstd, _detach(gamma), residual=residual,
                           dresidual_out=None if dresidual_out is None else dresidual_out.contiguous(),
                           need_dgamma=need[1], need_dbeta=need[2])
        dres = g.dx if (ctx.has_residual and need[3]) else None
        return g.dx, g.dgamma, g.dbeta, dres, None, None


def _detach(t):
    return None if t is None else t.detach()


def layer_norm(x, weight=None, bias=None, eps=1e-5, residual=None):
    """LayerNorm over the last dimension with autograd; with ``residual`` it normalises
    ``x + residual`` and returns ``(y, x + residual)`` (pre-norm transformers' fused add)."""
    return _Norm.apply(x, _f32(weight), _f32(bias), residual, "layernorm", float(eps))


def rms_norm(x, weight=None, bias=None, eps=1e-6, residual=None):
    """RMSNorm over the last dimension with autograd (``residual`` as in ``layer_norm``)."""
    return _Norm.apply(x, _f32(weight), _f32(bias), residual, "rmsnorm", float(eps))


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension (f32 γ, β); ``forward(x, residual=None)``."""

    def __init__(self, dim, eps=1e-5, elementwise_affine=True, bias=True, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(dim, device=device)) if elementwise_affine and bias else None

    def forward(self, x, residual=None):
        return layer_norm(x, self.weight, self.bias, self.eps, residual)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension (f32 γ); ``forward(x, residual=None)``."""

    def __init__(self, dim, eps=1e-6, elementwise_affine=True, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device)) if elementwise_affine else None

    def forward(self, x, residual=None):
        return rms_norm(x, self.weight, None, self.eps, residual)


# ----------------------------------------------------------------------------------- padding
class _Unpad(torch.autograd.Function):
    """(packed, indices, cu_seqlens) = unpad(hidden, mask); backward: pad into dhidden."""

    @staticmethod
    def forward(ctx, hidden, mask, max_seqlen_out):
        u = _pad.unpad(hidden, mask=mask)
        max_seqlen_out.append(u.max_seqlen)
        ctx.bs = hidden.shape[:2]
        ctx.save_for_backward(u.indices)
        ctx.mark_non_differentiable(u.indices, u.cu_seqlens)
        return u.packed, u.indices, u.cu_seqlens

    @staticmethod
    def backward(ctx, dpacked, _dindices, _dcu):
        (indices,) = ctx.saved_tensors
        return _pad.pad(dpacked.contiguous(), indices, *ctx.bs, check_data=False), None, None


class _Pad(torch.autograd.Function):
    """hidden = pad(packed); backward: gather."""

    @staticmethod
    def forward(ctx, packed, indices, batch, seqlen):
        ctx.save_for_backward(indices)
        return _pad.pad(packed, indices, batch, seqlen)

    @staticmethod
    def backward(ctx, dhidden):
        (indices,) = ctx.saved_tensors
        return _pad.gather(dhidden.contiguous(), indices, check_data=False), None, None, None


def unpad_input(hidden, mask):
    """flash-attn's ``unpad_input``: ``(packed, indices, cu_seqlens, max_seqlen)`` from hidden
    ``[batch, seqlen, ...]`` and a ``[batch, seqlen]`` mask, with autograd into hidden."""
    max_seqlen = []
    packed, indices, cu = _Unpad.apply(hidden, mask, max_seqlen)
    return packed, indices, cu, max_seqlen[0]


def pad_input(packed, indices, batch, seqlen):
    """flash-attn's ``pad_input``: ``[batch, seqlen, ...]`` zeros with the packed rows put back."""
    return _Pad.apply(packed, indices, int(batch), int(seqlen))


# --------------------------------------------------------------------------------- attention
class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, slopes, positions, causal, scale, max_seqlen_q):
        o = _attn.forward(q, k, v, cu_q, cu_k, slopes=slopes, positions=positions, causal=causal,
                          softmax_scale=scale, max_seqlen_q=max_seqlen_q)
        ctx.kw = {"causal": causal, "softmax_scale": scale, "max_seqlen_q": max_seqlen_q}
        ctx.save_for_backward(q, k, v, o.out, o.lse, cu_q, cu_k, slopes, positions)
        return o.out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu_q, cu_k, slopes, positions = ctx.saved_tensors
        need = ctx.needs_input_grad
        g = _attn.backward(q, k, v, out, lse, dout.contiguous(), cu_q, cu_k, slopes=slopes, positions=positions,
                           slope_grad=slopes is not None and need[5],
                           position_grad=positions is not None and need[6], **ctx.kw)
        return g.dq, g.dk, g.dv, None, None, g.dslopes, g.dpositions, None, None, None


def alibi_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, slopes=None, causal=False, softmax_scale=None,
                    max_seqlen_q=None, positions=None):
    """Varlen attention with ALiBi (``kiln.attention.forward``) as an autograd op. The backward
    (``kiln.attention.backward``) gives q, k, v their gradients, and the slopes (``[H]`` or
    ``[B, H]``) and geometric positions (``[total, 3]``) theirs when they require grad: trainable
    ALiBi slopes. Slopes and positions are used in f32 (cast if they are not)."""
    return _Attention.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, _f32(slopes), _f32(positions), causal,
                            softmax_scale, max_seqlen_q)


class _AttentionPadded(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, padding_mask, slopes, positions, causal, scale):
        o = _attn.forward_padded(q, k, v, padding_mask, slopes=slopes, positions=positions, causal=causal,
                                 softmax_scale=scale)
        ctx.kw = {"causal": causal, "softmax_scale": scale}
        ctx.save_for_backward(q, k, v, o.out, o.lse, padding_mask, slopes, positions)
        return o.out

    @staticmethod
    def backward(ctx, dout):
        # The packed form's backward on the tokens the mask keeps (unpadded again, as the forward
        # did), its gradients padded back: 0 for dropped tokens.
        q, k, v, out, lse, padding_mask, slopes, positions = ctx.saved_tensors
        need = ctx.needs_input_grad
        g = _attn.backward_padded(q, k, v, out, lse, dout.contiguous(), padding_mask, slopes=slopes,
                                  positions=positions, slope_grad=slopes is not None and need[4],
                                  position_grad=positions is not None and need[5], **ctx.kw)
        return g.dq, g.dk, g.dv, None, g.dslopes, g.dpositions, None, None


def alibi_attention_padded(q, k, v, padding_mask=None, slopes=None, causal=False, softmax_scale=None,
                           positions=None):
    """Attention over a padded batch ``[B, S, H, D]`` with an optional padding mask ``[B, S]``
    (``kiln.attention.forward_padded``: unpad, attend, pad back when masked) as an autograd op;
    the backward (``kiln.attention.backward_padded``) as in ``alibi_attention``, dropped tokens
    getting zero gradients (geometric positions are ``[B, S, 3]``)."""
    return _AttentionPadded.apply(q, k, v, padding_mask, _f32(slopes), _f32(positions), causal, softmax_scale)


class ALiBiAttention(nn.Module):
    """Attention over packed ``[total, H, D]`` q/k/v with ALiBi slopes of H heads, initialised to
    the standard ones: a fixed buffer, or with ``trainable=True`` an f32 ``nn.Parameter`` that
    gets its gradient from kiln's backward (trainable ALiBi slopes)."""

    def __init__(self, heads, causal=False, softmax_scale=None, trainable=False):
        super().__init__()
        self.causal, self.softmax_scale = causal, softmax_scale
        slopes = torch.from_numpy(_attn.alibi_slopes(heads))
        if trainable:
            self.slopes = nn.Parameter(slopes)
        else:
            self.register_buffer("slopes", slopes)

    def forward(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None):
        return alibi_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, self.slopes, self.causal, self.softmax_scale,
                               max_seqlen_q)

    def forward_padded(self, q, k, v, padding_mask=None):
        """The padded form: q/k/v ``[B, S, H, D]``, an optional padding mask ``[B, S]``."""
        return alibi_attention_padded(q, k, v, padding_mask, self.slopes, self.causal, self.softmax_scale)


# ----------------------------------------------------------------------------- equivariant
class _SphericalHarmonics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vec, lmax, normalization, normalize):
        ctx.args = (lmax, normalization, normalize)
        ctx.save_for_backward(vec)
        return _eq.spherical_harmonics(vec, lmax, normalization, normalize)

    @staticmethod
    def backward(ctx, dsh):
        (vec,) = ctx.saved_tensors
        dvec = _eq.spherical_harmonics_backward(vec, dsh.contiguous(), *ctx.args)
        return dvec, None, None, None


def spherical_harmonics(vec, lmax, normalization="component", normalize=True):
    """Real spherical harmonics Y⁰..Y^lmax of vec ``[N, 3]`` (e3nn basis) with autograd:
    ``[N, (lmax+1)²]`` (see kiln.equivariant)."""
    return _SphericalHarmonics.apply(vec, int(lmax), normalization, bool(normalize))


class SphericalHarmonics(nn.Module):
    """``forward(vec [N, 3]) -> [N, (lmax+1)²]``: e3nn's real spherical harmonics (0 ≤ lmax ≤ 4),
    'component', 'norm' or 'integral' normalization, the vector normalised first when asked."""

    def __init__(self, lmax, normalization="component", normalize=True):
        super().__init__()
        _eq._sh_args("SphericalHarmonics", lmax, normalization)
        self.lmax, self.normalization, self.normalize = int(lmax), normalization, bool(normalize)

    def forward(self, vec):
        return spherical_harmonics(vec, self.lmax, self.normalization, self.normalize)

    def extra_repr(self):
        return f"lmax={self.lmax}, normalization={self.normalization!r}, normalize={self.normalize}"


class _Hessian(torch.autograd.Function):
    @staticmethod
    def forward(ctx, edge_feat, node_feat, src, dst, n_atoms):
        ctx.n_atoms = n_atoms
        ctx.save_for_backward(edge_feat, node_feat, src, dst)
        return _eq.hessian(edge_feat, node_feat, src, dst, n_atoms)

    @staticmethod
    def backward(ctx, dh):
        edge_feat, node_feat, src, dst = ctx.saved_tensors
        g = _eq.hessian_backward(edge_feat, node_feat, src, dst, ctx.n_atoms, dh.contiguous())
        return g.dedge_feat, g.dnode_feat, None, None, None


def hessian(edge_feat, node_feat, src, dst, n_atoms=None):
    """The HIP Hessian assembly (kiln.equivariant.hessian) with autograd to both features."""
    if n_atoms is not None and not isinstance(n_atoms, int):
        n_atoms = tuple(int(n) for n in n_atoms)
    return _Hessian.apply(edge_feat, node_feat, src, dst, n_atoms)


# ----------------------------------------------------------------------------- arithmetic units
class _NAU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _arith.nau_forward(x, w)[0]

    @staticmethod
    def backward(ctx, dz):
        x, w = ctx.saved_tensors
        g = _arith.nau_backward(x, w, dz.contiguous())
        return g.dx, g.dw


class _NMU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, eps):
        f = _arith.nmu_forward(x, w, eps)
        ctx.eps = eps
        ctx.save_for_backward(x, w, f.prod, f.zeros)
        return f.z

    @staticmethod
    def backward(ctx, dz):
        x, w, prod, zeros = ctx.saved_tensors
        g = _arith.nmu_backward(x, w, dz.contiguous(), prod, zeros, ctx.eps)
        return g.dx, g.dw, None


class _NALU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_hat, m_hat, g, bias, eps):
        ctx.eps = eps
        ctx.save_for_backward(x, w_hat, m_hat, g, bias)
        return _arith.nalu_forward(x, w_hat, m_hat, g, bias, eps)

    @staticmethod
    def backward(ctx, dy):
        grads = _arith.nalu_backward(*ctx.saved_tensors, dy.contiguous(), ctx.eps)
        return (*grads, None)


class _ArithReg(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, unit, shape):
        r = _arith.regularizers(unit, w, shape)
        ctx.unit, ctx.shape = unit, shape
        ctx.save_for_backward(w)
        ctx.mark_non_differentiable(r.sparsity_error)
        return r.sparse, r.oob, r.sparsity_error

    @staticmethod
    def backward(ctx, dsparse, doob, _derr):
        (w,) = ctx.saved_tensors
        one = lambda t: (torch.zeros(1, device=w.device) if t is None else t.float().reshape(1).contiguous())  # noqa: E731
        return _arith.regularizers_backward(ctx.unit, w, one(dsparse), one(doob), ctx.shape), None, None


def nau(x, weight):
    """The NAU, z = x·clamp(W, −1, 1)ᵀ, with autograd (kiln's weight passes around torch's
    GEMMs: set ``torch.backends.cuda.matmul.allow_tf32 = False`` for IEEE f32)."""
    return _NAU.apply(x, weight)


def nmu(x, weight, eps=0.0):
    """The NMU, z_bo = Π_i (W_c·(x − 1) + 1), W_c = clamp(W, ε, 1), with autograd (exact with zero
    terms; no [B, I, O] buffer)."""
    return _NMU.apply(x, weight, float(eps))


def nalu(x, w_hat, m_hat, g, bias, eps=1e-7):
    """The NALU (one NAC weight for both paths) with autograd."""
    return _NALU.apply(x, w_hat, m_hat, g, bias, float(eps))


def arith_regularizers(weight, unit, shape="linear"):
    """``(R_sparse, R_oob, sparsity_error)`` of a unit's weights ("nau" or "nmu"); the first two
    differentiable, each a f32 [1] tensor."""
    return _ArithReg.apply(weight, unit, shape)


class _Unit(nn.Module):
    unit = None

    def __init__(self, in_features, out_features, regularizer_shape="linear"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.regularizer_shape = regularizer_shape
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def regularizers(self):
        """``(R_sparse, R_oob, sparsity_error)`` of this unit's weight (one pass)."""
        return arith_regularizers(self.weight, self.unit, self.regularizer_shape)

    def regularization(self, lambda_sparse, lambda_oob=1.0):
        """λ_sparse·R_sparse + λ_oob·R_oob, to add to the loss (λ from ``kiln.arith.lambda_schedule``)."""
        sparse, oob, _ = self.regularizers()
        return lambda_sparse * sparse + lambda_oob * oob


class NAU(_Unit):
    """Neural addition unit (stable-nalu's ReRegualizedLinearNAC): z = x·clamp(W, −1, 1)ᵀ,
    W initialised U[−r, r], r = min(½, √3·√(2/(in + out)))."""

    unit = "nau"

    def reset_parameters(self):
        r = min(0.5, math.sqrt(3.0) * math.sqrt(2.0 / (self.in_features + self.out_features)))
        nn.init.uniform_(self.weight, -r, r)

    def forward(self, x):
        return nau(x, self.weight)


class NMU(_Unit):
    """Neural multiplication unit (stable-nalu's ReRegualizedLinearMNAC): z_bo = Π_i (W_c·(x − 1)
    + 1), W_c = clamp(W, ε, 1), W initialised U[¼, ¾]."""

    unit = "nmu"

    def __init__(self, in_features, out_features, regularizer_shape="linear", eps=0.0):
        super().__init__(in_features, out_features, regularizer_shape)
        self.eps = eps

    def reset_parameters(self):
        nn.init.uniform_(self.weight, 0.25, 0.75)

    def forward(self, x):
        return nmu(x, self.weight, self.eps)


class NALU(nn.Module):
    """The NALU (Trask et al. 2018, as stable-nalu implements it: one NAC weight W = tanh(Ŵ)·σ(M̂)
    for both paths, a gate with a bias, ε = 1e-7); Ŵ, M̂, G Xavier-uniform, the bias 0."""

    def __init__(self, in_features, out_features, eps=1e-7):
        super().__init__()
        self.eps = eps
        self.w_hat = nn.Parameter(torch.empty(out_features, in_features))
        self.m_hat = nn.Parameter(torch.empty(out_features, in_features))
        self.g = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        for p in (self.w_hat, self.m_hat, self.g):
            nn.init.xavier_uniform_(p)

    def forward(self, x):
        return nalu(x, self.w_hat, self.m_hat, self.g, self.bias, self.eps)

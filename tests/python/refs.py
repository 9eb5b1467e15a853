"""Independent f64 numpy formulas (shared/REFERENCE.md), written from the papers' definitions and
not from kiln's kernels or Rust references. Derivatives are central differences of these formulas
(step 1e-6 in f64), except the straight-through JumpReLU dθ, which is a definition."""
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def Phi(x):
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def g_at(x):
    return np.arctan(x) / math.pi + 0.5


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def activation(name, x, alpha=0.0, beta=1.0, g_neg=0.0, g_pos=1.0, t=0.0, slope=None, theta=None):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return x * Phi(x)
    if name == "gelu_tanh":
        return gelu_tanh(x)
    if name == "quick_gelu":
        return x * sigmoid(1.702 * x)
    if name == "silu":
        return x * sigmoid(x)
    if name == "sigmoid":
        return sigmoid(x)
    if name == "squared_relu":
        return np.maximum(x, 0.0) ** 2
    if name == "atlu":
        return x * g_at(x)
    if name == "xatlu":
        return x * ((1 + 2 * alpha) * g_at(x) - alpha)
    if name == "xgelu":
        return x * ((1 + 2 * alpha) * Phi(x) - alpha)
    if name == "xsilu":
        return x * ((1 + 2 * alpha) * sigmoid(x) - alpha)
    if name == "smelu":
        return np.where(x <= -beta, 0.0, np.where(x >= beta, x, (x + beta) ** 2 / (4 * beta)))
    if name == "gsmelu":
        a, b = alpha, beta
        A = (g_pos - g_neg) / (2 * (a + b))
        B = (a * g_pos + b * g_neg) / (a + b)
        C = t + (a * a * (g_pos + g_neg) + 2 * a * b * g_neg) / (2 * (a + b))
        left = g_neg * (x + a) + t
        right = g_pos * x + t + (a + b) * g_neg / 2 + (a - b) * g_pos / 2
        return np.where(x <= -a, left, np.where(x <= b, A * x * x + B * x + C, right))
    if name == "prelu":
        return np.maximum(x, 0.0) + slope * np.minimum(x, 0.0)
    if name == "jumprelu":
        return np.where(x > theta, x, 0.0)
    raise KeyError(name)


def diff(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def glu_gate(kind, a, alpha=0.0, order=None):
    """h(a) of y = h(a)·b."""
    if kind == "glu":
        return sigmoid(a)
    if kind == "bilinear":
        return a
    if kind == "reglu":
        return np.maximum(a, 0.0)
    if kind == "geglu":
        return a * Phi(a)
    if kind == "geglu_tanh":
        return gelu_tanh(a)
    if kind == "swiglu":
        return a * sigmoid(a)
    g0 = {"atglu": g_at, "xatglu": g_at, "xgeglu": Phi, "xswiglu": sigmoid}[kind](a)
    g = g0 if kind == "atglu" else (1 + 2 * alpha) * g0 - alpha
    order = order or (2 if kind == "atglu" else 1)
    return g if order == 1 else a * g


def layernorm(s, gamma, beta, eps):
    mean = s.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((s - mean) ** 2).mean(-1, keepdims=True) + eps)
    return (s - mean) * rstd * gamma + beta, mean[..., 0], rstd[..., 0]


def rmsnorm(s, gamma, beta, eps):
    rstd = 1.0 / np.sqrt((s**2).mean(-1, keepdims=True) + eps)
    return s * rstd * gamma + beta, rstd[..., 0]


def norm_backward(kind, dy, s, gamma, eps):
    """(ds, dgamma, dbeta) by the chain rule of the normalisation."""
    d = s.shape[-1]
    if kind == "layernorm":
        mean = s.mean(-1, keepdims=True)
        rstd = 1.0 / np.sqrt(((s - mean) ** 2).mean(-1, keepdims=True) + eps)
        xhat = (s - mean) * rstd
        g = dy * gamma
        ds = rstd * (g - g.sum(-1, keepdims=True) / d - xhat * (g * xhat).sum(-1, keepdims=True) / d)
    else:
        rstd = 1.0 / np.sqrt((s**2).mean(-1, keepdims=True) + eps)
        xhat = s * rstd
        g = dy * gamma
        ds = rstd * (g - xhat * (g * xhat).sum(-1, keepdims=True) / d)
    return ds, (dy * xhat).reshape(-1, d).sum(0), dy.reshape(-1, d).sum(0)


def attention(q, k, v, cu_q, cu_k, slopes, causal, scale, dtype=np.float64, positions=None):
    """Per sequence and head, softmax(scale·q·kᵀ − slope·|i + sk − sq − j|)·v, in ``dtype``;
    with ``positions`` [total, 3] the geometric bias −slope·‖p_i − p_j‖ instead. slopes [H] or
    [B, H]."""
    total_q, heads, d = q.shape
    heads_k = k.shape[1]
    out = np.zeros(q.shape, dtype)
    lse = np.full((heads, total_q), -np.inf)
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        sq, sk = q1 - q0, k1 - k0
        i = np.arange(sq)[:, None]
        j = np.arange(sk)[None, :]
        for h in range(heads):
            hk = h // (heads // heads_k)
            s = (q[q0:q1, h] @ k[k0:k1, hk].T) * dtype(scale)
            if slopes is not None:
                slope = dtype(slopes[b, h] if np.ndim(slopes) == 2 else slopes[h])
                if positions is None:
                    dist = np.abs(i + sk - sq - j)
                else:
                    dist = np.sqrt(((positions[q0:q1, None, :] - positions[None, k0:k1, :]) ** 2).sum(-1))
                s = s - (slope * dist).astype(dtype)
            if causal:
                s = np.where(j <= i + sk - sq, s, -np.inf)
            m = s.max(-1, keepdims=True) if sk else np.zeros((sq, 1))
            m = np.where(np.isfinite(m), m, 0)
            p = np.exp(s - m)
            z = p.sum(-1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[q0:q1, h] = np.where(z > 0, (p / np.where(z > 0, z, 1)) @ v[k0:k1, hk], 0)
                lse[h, q0:q1] = (np.log(z) + m)[:, 0]
    return out, lse


def attention_backward(q, k, v, dout, cu_q, cu_k, slopes, causal, scale, positions=None, out=None, low=None,
                       spread=False):
    """(dq, dk, dv, dslopes, dpositions) of the loss Σ dout·O, O = softmax(S)·v per sequence and
    head, S = scale·q·kᵀ + bias, bias −slope·|i + sk − sq − j| (linear) or −slope·‖p_i − p_j‖
    (geometric, ``positions`` [total, 3], token q0 + i against token k0 + j), by the chain rule
    of the softmax: dV = Pᵀ·dO, dP = dO·vᵀ, dS = P∘(dP − rowsum(dP∘P)), dQ = scale·dS·k,
    dK = scale·dSᵀ·q (GQA: summed over the query heads of a kv head), dslope = Σ dS∘∂bias/∂slope,
    ∂bias/∂p_i = −slope·(p_i − p_j)/‖p_i − p_j‖ = −∂bias/∂p_j. slopes [H] or [B, H]. In f64; with
    ``low`` (a storage dtype) the naive low-precision computation instead (DESIGN.md's yardstick):
    f32 arithmetic with the scores, P, dP, dS and dq/dk/dv rounded to ``low``, rowsum(dout∘out)
    from the given (rounded) ``out``. With ``spread`` (f64 only) it returns, second, the root sum
    of squares of each gradient's terms (the size of independently rounded terms' sum error)."""
    heads, heads_k = q.shape[1], k.shape[1]
    if low is None:
        f = np.float64

        def r(x):
            return x
    else:
        f = np.float32

        def r(x):
            return np.asarray(x).astype(low).astype(np.float32)
    q, k, v, dout = (np.asarray(t, np.float64).astype(f) for t in (q, k, v, dout))
    dq, dk, dv = np.zeros(q.shape, f), np.zeros(k.shape, f), np.zeros(v.shape, f)
    dslopes = None if slopes is None else np.zeros(np.shape(slopes), f)
    dpos = None if positions is None else np.zeros(np.shape(positions), f)
    # Sums of the squared terms of each gradient (spread).
    sq_terms = [np.zeros(np.shape(t)) if t is not None else None for t in (dq, dk, dv, dslopes, dpos)]
    pos = None if positions is None else np.asarray(positions, np.float64).astype(f)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        sq, sk = q1 - q0, k1 - k0
        if sq == 0 or sk == 0:
            continue
        i = np.arange(sq)[:, None]
        j = np.arange(sk)[None, :]
        if pos is None:
            dist = np.abs(i + sk - sq - j).astype(f)
            unit = None
        else:
            diff = pos[q0:q1, None, :] - pos[None, k0:k1, :]  # [sq, sk, 3]
            dist = np.sqrt((diff ** 2).sum(-1))
            unit = diff / np.where(dist > 0, dist, 1)[..., None]
        visible = (j <= i + sk - sq) if causal else np.ones((sq, sk), bool)
        for h in range(heads):
            hk = h // (heads // heads_k)
            slope = None
            if slopes is not None:
                at = (b, h) if np.ndim(slopes) == 2 else (h,)
                slope = f(np.asarray(slopes, np.float64)[at])
            qh, kh, vh, doh = q[q0:q1, h], k[k0:k1, hk], v[k0:k1, hk], dout[q0:q1, h]
            s = r(qh @ kh.T) * f(scale)
            if slope is not None:
                s = s - slope * dist
            s = np.where(visible, s, -np.inf)
            m = s.max(-1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0)
            e = np.where(visible, np.exp(s - m), 0)
            z = e.sum(-1, keepdims=True)
            p = r(e / np.where(z > 0, z, 1))
            dp = r(doh @ vh.T)
            if low is None:
                delta = (dp * p).sum(-1, keepdims=True)
            else:
                delta = (doh * np.asarray(out, np.float64)[q0:q1, h].astype(f)).sum(-1, keepdims=True)
            ds = r(p * (dp - delta))
            dv[k0:k1, hk] += p.T @ doh
            dq[q0:q1, h] = f(scale) * (ds @ kh)
            dk[k0:k1, hk] += f(scale) * (ds.T @ qh)
            if spread:
                sq_terms[0][q0:q1, h] += scale ** 2 * (ds ** 2 @ kh ** 2)
                sq_terms[1][k0:k1, hk] += scale ** 2 * (ds.T ** 2 @ qh ** 2)
                sq_terms[2][k0:k1, hk] += p.T ** 2 @ doh ** 2
            if slope is not None:
                dslopes[at] -= (ds * dist).sum()
                if spread:
                    sq_terms[3][at] += ((ds * dist) ** 2).sum()
                if unit is not None:
                    g = ds[..., None] * slope * unit  # dS_ij · slope · (p_i − p_j)/‖p_i − p_j‖
                    dpos[q0:q1] -= g.sum(1)
                    dpos[k0:k1] += g.sum(0)
                    if spread:
                        sq_terms[4][q0:q1] += (g ** 2).sum(1)
                        sq_terms[4][k0:k1] += (g ** 2).sum(0)
    if low is not None:
        dq, dk, dv = r(dq), r(dk), r(dv)
    as64 = tuple(None if t is None else np.asarray(t, np.float64) for t in (dq, dk, dv, dslopes, dpos))
    if spread:
        return as64, tuple(None if t is None else np.sqrt(t) for t in sq_terms)
    return as64

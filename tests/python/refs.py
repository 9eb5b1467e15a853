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


def attention(q, k, v, cu_q, cu_k, slopes, causal, scale, dtype=np.float64):
    """Per sequence and head, softmax(scale·q·kᵀ − slope·|i + sk − sq − j|)·v, in ``dtype``."""
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
                s = s - (dtype(slopes[h]) * np.abs(i + sk - sq - j)).astype(dtype)
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

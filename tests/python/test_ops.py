"""Every Python op, forward and backward, against independent f64 numpy formulas (refs.py), on
the emulated library in checked mode (inputs staged into emulated memory, outputs unwritten until
the kernel writes them). Tolerances: shared/DESIGN.md (elementwise against the f64 reference of
the rounded inputs; reductions within a bound of f32 summation over the terms' magnitudes)."""
import math
import os

import numpy as np
import pytest

import kiln
import refs

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # bf16 through numpy needs ml_dtypes; torch tests cover it otherwise
    BF16 = None

DTYPES = [np.dtype(np.float32), np.dtype(np.float16)] + ([BF16] if BF16 is not None else [])
RTOL = {"float32": 1.3e-6, "float16": 1e-3, "bfloat16": 1.6e-2}
ATOL = 1e-5
SEED = int(os.environ.get("KILN_SEED", "20261130"))


def rng(*salt):
    return np.random.default_rng([SEED, *[abs(hash(s)) % 2**32 for s in salt]])


def rounded(a, dtype):
    """a in the storage dtype, and the f64 values it holds."""
    s = np.asarray(a).astype(dtype)
    return s, s.astype(np.float64)


def assert_close(got, want, rtol, atol=ATOL, what=""):
    got = np.asarray(got).astype(np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert not np.isnan(got).any(), f"{what}: NaN in the output"
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        i = np.unravel_index(np.argmax(err - atol - rtol * np.abs(want)), got.shape)
        pytest.fail(f"{what}: {bad.sum()} of {got.size} elements off; worst at {i}: got {got[i]!r}, want {want[i]!r}")


def assert_sum_close(got, want, magnitude, what=""):
    """A reduction: |got − want| ≤ 4e-6·Σ|terms| + 1e-6 (f32 partial sums, a few ulps per term)."""
    got = np.asarray(got, dtype=np.float64)
    bound = 4e-6 * magnitude + 1e-6
    assert np.all(np.abs(got - want) <= bound), f"{what}: got {got}, want {want}, bound {bound}"


def test_emulator_runs_checked():
    assert kiln.emu_checked() is True


# ------------------------------------------------------------------------------ activations
ACT_PARAMS = {
    "xatlu": {"alpha": 0.3},
    "xgelu": {"alpha": -0.2},
    "xsilu": {"alpha": 0.7},
    "smelu": {"beta": 0.8},
    "gsmelu": {"alpha": 0.6, "beta": 1.1, "g_neg": 0.1, "g_pos": 1.2, "t": 0.05},
}
KINKS = {"relu": [0.0], "squared_relu": [0.0], "smelu": [-0.8, 0.8], "gsmelu": [-0.6, 1.1], "prelu": [0.0]}


def act_input(name, shape, dtype, theta=None, eps=None):
    x = rng(name, str(dtype)).normal(0.0, 1.5, size=shape)
    # No element within 1e-3 of a kink (central differences need a smooth neighbourhood).
    for k in KINKS.get(name, []):
        x = np.where(np.abs(x - k) < 1e-3, x + 3e-3, x)
    if theta is not None:
        x = np.where(np.abs(x - theta) < 1e-3, x + 3e-3, x)
        # and no element near the edge of the straight-through window |x − θ| = ε/2
        u = np.abs((x - theta) / eps)
        x = np.where(np.abs(u - 0.5) < 1e-3, x + 3e-2 * eps, x)
    return rounded(x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", kiln.activation.PLAIN + kiln.activation.EXPANDED + ("smelu", "gsmelu"))
def test_activation(name, dtype):
    params = ACT_PARAMS.get(name, {})
    x, x64 = act_input(name, (7, 149), dtype)
    dy, dy64 = rounded(rng("dy", name).normal(size=x.shape), dtype)
    rt = RTOL[dtype.name]
    y = kiln.activation.forward(name, x, **params)
    assert y.dtype == dtype
    assert_close(y, refs.activation(name, x64, **params), rt, what=f"{name} y")
    dx, dparam = kiln.activation.backward(name, x, dy, **params)
    want_dx = dy64 * refs.diff(lambda t: refs.activation(name, t, **params), x64)
    assert_close(dx, want_dx, rt, what=f"{name} dx")
    if name in kiln.activation.EXPANDED:
        a = params["alpha"]
        terms = dy64 * refs.diff(lambda al: refs.activation(name, x64, alpha=al), a)
        assert dparam.shape == (1,) and dparam.dtype == np.float32
        assert_sum_close(dparam[0], terms.sum(), np.abs(terms).sum(), f"{name} dalpha")
        _, none = kiln.activation.backward(name, x, dy, need_dparam=False, **params)
        assert none is None
    else:
        assert dparam is None


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("channels", [1, 37])
def test_prelu(dtype, channels):
    x, x64 = act_input("prelu", (5, 37), dtype)
    dy, dy64 = rounded(rng("dy prelu").normal(size=x.shape), dtype)
    slope = rng("slope").uniform(0.05, 0.5, size=channels).astype(np.float32)
    s64 = slope.astype(np.float64)
    rt = RTOL[dtype.name]
    assert_close(kiln.activation.forward("prelu", x, slope=slope), refs.activation("prelu", x64, slope=s64), rt,
                 what="prelu y")
    dx, dslope = kiln.activation.backward("prelu", x, dy, slope=slope)
    f = lambda t: refs.activation("prelu", t, slope=s64)  # noqa: E731
    assert_close(dx, dy64 * refs.diff(f, x64), rt, what="prelu dx")
    terms = dy64 * refs.diff(lambda s: refs.activation("prelu", x64, slope=s), s64)
    want = terms.reshape(-1, channels).sum(0) if channels > 1 else np.array([terms.sum()])
    mag = np.abs(terms).reshape(-1, channels).sum(0) if channels > 1 else np.abs(terms).sum()
    assert dslope.shape == (channels,)
    assert_sum_close(dslope, want, mag, "prelu dslope")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_jumprelu(dtype):
    c, eps = 29, 0.4
    theta = rng("theta").uniform(-0.5, 0.8, size=c).astype(np.float32)
    t64 = theta.astype(np.float64)
    x, x64 = act_input("jumprelu", (6, c), dtype, theta=t64, eps=eps)
    dy, dy64 = rounded(rng("dy jumprelu").normal(size=x.shape), dtype)
    rt = RTOL[dtype.name]
    assert_close(kiln.activation.forward("jumprelu", x, theta=theta), refs.activation("jumprelu", x64, theta=t64),
                 rt, what="jumprelu y")
    dx, dtheta = kiln.activation.backward("jumprelu", x, dy, theta=theta, eps=eps)
    assert_close(dx, dy64 * (x64 > t64), rt, what="jumprelu dx")
    # Straight-through (arXiv 2407.14435): dθ = Σ dy·(−θ/ε)·K((x − θ)/ε), K = 1 on |u| < ½.
    e32 = float(np.float32(eps))
    terms = dy64 * (-t64 / e32) * (np.abs((x64 - t64) / e32) < 0.5)
    assert (terms != 0).any()
    assert_sum_close(dtheta, terms.sum(0), np.abs(terms).sum(0), "jumprelu dtheta")


# ------------------------------------------------------------------------------------- GLU
GLU_CASES = [(k, None, None) for k in kiln.glu.PLAIN] + [("atglu", None, 1), ("atglu", None, None)] + [
    (k, a, o) for k, a, o in (("xatglu", 0.3, None), ("xgeglu", -0.25, 2), ("xswiglu", 0.6, 1), ("xswiglu", 0.1, 2))
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("kind,alpha,order", GLU_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("layout", ["separate", "first", "second"])
def test_glu(kind, alpha, order, layout, dtype):
    rows, f = 5, 43
    r = rng("glu", kind, layout)
    a, a64 = rounded(r.normal(size=(rows, f)), dtype)
    b, b64 = rounded(r.normal(size=(rows, f)), dtype)
    a64 = np.where(np.abs(a64) < 1e-3, a64 + 3e-3, a64) if kind == "reglu" else a64
    a = a64.astype(dtype)
    dy, dy64 = rounded(r.normal(size=(rows, f)), dtype)
    kw = {"alpha": alpha, "order": order}
    rt = RTOL[dtype.name]
    h = lambda t, al=alpha or 0.0: refs.glu_gate(kind, t, al, order)  # noqa: E731
    if layout == "separate":
        y = kiln.glu.forward(kind, a, b, **kw)
        da, db, dalpha = kiln.glu.backward(kind, a, b, dy, **kw)
    else:
        ab = np.concatenate([a, b] if layout == "first" else [b, a], axis=-1)
        y = kiln.glu.forward(kind, ab, gate_half=layout, **kw)
        dab, none, dalpha = kiln.glu.backward(kind, ab, None, dy, gate_half=layout, **kw)
        assert none is None and dab.shape == ab.shape
        da, db = (dab[:, :f], dab[:, f:]) if layout == "first" else (dab[:, f:], dab[:, :f])
    assert_close(y, h(a64) * b64, rt, what=f"{kind} y")
    assert_close(da, dy64 * b64 * refs.diff(h, a64), rt, what=f"{kind} da")
    assert_close(db, dy64 * h(a64), rt, what=f"{kind} db")
    if kind in kiln.glu.EXPANDED:
        terms = dy64 * b64 * refs.diff(lambda al: refs.glu_gate(kind, a64, al, order), alpha)
        assert_sum_close(dalpha[0], terms.sum(), np.abs(terms).sum(), f"{kind} dalpha")
    else:
        assert dalpha is None


# ------------------------------------------------------------------------------------ norms
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("residual", [False, True])
def test_norm(kind, residual, dtype):
    r = rng("norm", kind, residual)
    shape, d, eps = (2, 3, 100), 100, 1e-5
    x, x64 = rounded(r.normal(0.3, 1.2, size=shape), dtype)
    res, res64 = rounded(r.normal(size=shape), dtype) if residual else (None, 0.0)
    gamma = r.uniform(0.5, 1.5, size=d).astype(np.float32)
    beta = r.normal(0, 0.1, size=d).astype(np.float32)
    dy, dy64 = rounded(r.normal(size=shape), dtype)
    rt = RTOL[dtype.name]
    out = kiln.norm.forward(kind, x, gamma, beta, residual=res, eps=eps, residual_out=residual)
    s64 = x64 + res64
    if residual:
        assert_close(out.residual_out, s64.astype(dtype).astype(np.float64), 0.0, 0.0, what="residual_out")
    eps32 = float(np.float32(eps))
    if kind == "layernorm":
        want, mean, rstd = refs.layernorm(s64, gamma.astype(np.float64), beta.astype(np.float64), eps32)
        assert_close(out.mean, mean, 1e-5, what="mean")
    else:
        want, rstd = refs.rmsnorm(s64, gamma.astype(np.float64), beta.astype(np.float64), eps32)
        assert out.mean is None
    assert out.rstd.dtype == np.float32 and out.rstd.shape == shape[:-1]
    assert_close(out.rstd, rstd, 1e-5, what="rstd")
    assert_close(out.y, want, max(rt, 1e-5), what=f"{kind} y")
    g = kiln.norm.backward(kind, dy, x, out.mean, out.rstd, gamma, residual=res, need_dresidual=residual,
                           need_dgamma=True, need_dbeta=True)
    ds, dgamma, dbeta = refs.norm_backward(kind, dy64, s64, gamma.astype(np.float64), eps32)
    assert_close(g.dx, ds, max(rt, 1e-5), 1e-4, what=f"{kind} dx")
    if residual:
        assert_close(g.dresidual, ds, max(rt, 1e-5), 1e-4, what=f"{kind} dresidual")
    else:
        assert g.dresidual is None
    assert_sum_close(g.dgamma, dgamma, np.abs(dy64).reshape(-1, d).sum(0) * 4, f"{kind} dgamma")
    assert_sum_close(g.dbeta, dbeta, np.abs(dy64).reshape(-1, d).sum(0), f"{kind} dbeta")


# ---------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("keep", ["mask_bool", "mask_i32", "seqlens"])
def test_unpad_pad_gather(keep, dtype):
    r = rng("pad", keep)
    batch, seqlen, feat = 3, 11, (2, 5)
    hidden = r.normal(size=(batch, seqlen) + feat).astype(dtype)
    lens = np.array([4, 0, 11], dtype=np.int32)
    if keep == "seqlens":
        mask = np.arange(seqlen)[None, :] < lens[:, None]
        out = kiln.padding.unpad(hidden, seqlens=lens)
    else:
        mask = r.random((batch, seqlen)) < 0.6  # holes allowed
        out = kiln.padding.unpad(hidden, mask=mask if keep == "mask_bool" else mask.astype(np.int32))
    flat = np.flatnonzero(mask.reshape(-1)).astype(np.int32)
    np.testing.assert_array_equal(out.indices, flat)
    np.testing.assert_array_equal(out.packed, hidden.reshape(batch * seqlen, *feat)[flat])
    counts = mask.sum(1)
    np.testing.assert_array_equal(out.cu_seqlens, np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    assert out.max_seqlen == counts.max()
    back = kiln.padding.pad(out.packed, out.indices, batch, seqlen)
    np.testing.assert_array_equal(back, np.where(mask[:, :, None, None], hidden, 0))
    np.testing.assert_array_equal(kiln.padding.gather(back, out.indices), out.packed)


def test_pad_rejects_bad_indices():
    packed = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="INDEX_OUT_OF_RANGE"):
        kiln.padding.pad(packed, np.array([0, 99], np.int32), 2, 4)
    with pytest.raises(ValueError, match="DUPLICATE_INDEX"):
        kiln.padding.pad(packed, np.array([1, 1], np.int32), 2, 4)


# -------------------------------------------------------------------------------- attention
def attention_ref(q, k, v, lens_q, lens_k, slopes, causal, scale, dtype):
    """The batch sequence by sequence (per-batch slopes pick their row), in ``dtype``."""
    heads = q.shape[1]
    out, lse = np.zeros(q.shape), np.zeros((heads, q.shape[0]))
    q0 = k0 = 0
    for b, (sq, sk) in enumerate(zip(lens_q, lens_k)):
        s_b = None if slopes is None else (slopes[b] if slopes.ndim == 2 else slopes)
        o_b, l_b = refs.attention(q[q0:q0 + sq], k[k0:k0 + sk], v[k0:k0 + sk], [0, sq], [0, sk], s_b, causal, scale,
                                  dtype=dtype)
        out[q0:q0 + sq], lse[:, q0:q0 + sq] = o_b, l_b
        q0, k0 = q0 + sq, k0 + sk
    return out, lse


@pytest.mark.parametrize("dtype", [np.dtype(np.float16)] + ([BF16] if BF16 is not None else []), ids=lambda d: d.name)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d,heads,heads_k,bias", [(32, 4, 2, "alibi"), (64, 2, 1, "per_batch"), (32, 3, 3, "none")])
def test_attention(dtype, causal, d, heads, heads_k, bias):
    """Error ≤ 2× the error of the same math done naively in f16, plus a floor (DESIGN.md)."""
    r = rng("attn", causal, d, bias)
    lens_q, lens_k = [5, 0, 17, 4], [9, 3, 17, 0]
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q, q64 = rounded(r.normal(size=(cu_q[-1], heads, d)), dtype)
    k, k64 = rounded(r.normal(size=(cu_k[-1], heads_k, d)), dtype)
    v, v64 = rounded(r.normal(size=(cu_k[-1], heads_k, d)), dtype)
    slopes = {"alibi": kiln.attention.alibi_slopes(heads), "none": None,
              "per_batch": r.uniform(0, 0.3, size=(len(lens_q), heads)).astype(np.float32)}[bias]
    out = kiln.attention.forward(q, k, v, cu_q, cu_k, slopes=slopes, causal=causal)
    assert out.out.dtype == dtype and out.lse.shape == (heads, cu_q[-1])
    scale = float(np.float32(1 / math.sqrt(d)))
    ref, lse = attention_ref(q64, k64, v64, lens_q, lens_k, slopes, causal, scale, np.float64)
    naive, _ = attention_ref(q64, k64, v64, lens_q, lens_k, slopes, causal, scale, dtype.type)
    got = out.out.astype(np.float64)
    assert not np.isnan(got).any()
    err, naive_err = np.abs(got - ref).max(), np.abs(naive - ref).max()
    assert err <= 2 * naive_err + 1e-3, (err, naive_err)
    # Rows that see no key (an empty key sequence; the causal corner): output 0, lse −inf.
    finite = np.isfinite(lse)
    assert not finite.all()
    np.testing.assert_array_equal(np.isfinite(out.lse), finite)
    np.testing.assert_array_equal(got[~finite.T], 0.0)
    assert np.abs(out.lse[finite] - lse[finite]).max() <= 1e-4 * (1 + np.abs(lse[finite]).max())


def test_alibi_slopes_standard_rule():
    np.testing.assert_allclose(kiln.attention.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    s12 = kiln.attention.alibi_slopes(12)
    np.testing.assert_allclose(s12[:8], [2.0 ** -(i + 1) for i in range(8)])
    np.testing.assert_allclose(s12[8:], [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5], rtol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_padded(masked, causal):
    """The padded form: without a mask every sequence has the full length; with one the kept
    tokens of each sequence, numbered 0, 1, … in order, attend to each other and dropped rows
    get out 0 and lse −inf."""
    dtype = np.dtype(np.float16)
    r = rng("padded", masked, causal)
    batch, s, heads, heads_k, d = 3, 9, 4, 2, 32
    q, q64 = rounded(r.normal(size=(batch, s, heads, d)), dtype)
    k, k64 = rounded(r.normal(size=(batch, s, heads_k, d)), dtype)
    v, v64 = rounded(r.normal(size=(batch, s, heads_k, d)), dtype)
    slopes = kiln.attention.alibi_slopes(heads)
    mask = (r.random((batch, s)) < 0.6) if masked else np.ones((batch, s), bool)
    mask[1] = False if masked else mask[1]  # a sequence with no kept token
    out = kiln.attention.forward_padded(q, k, v, mask if masked else None, slopes=slopes, causal=causal)
    assert out.out.shape == q.shape and out.lse.shape == (heads, batch, s)
    scale = float(np.float32(1 / math.sqrt(d)))
    got = out.out.astype(np.float64)
    for b in range(batch):
        keep = np.flatnonzero(mask[b])
        n = len(keep)
        if n:
            ref, lse = refs.attention(q64[b, keep], k64[b, keep], v64[b, keep], [0, n], [0, n], slopes, causal, scale)
            naive, _ = refs.attention(q64[b, keep], k64[b, keep], v64[b, keep], [0, n], [0, n], slopes, causal, scale,
                                      dtype=np.float16)
            err, naive_err = np.abs(got[b, keep] - ref).max(), np.abs(naive - ref).max()
            assert err <= 2 * naive_err + 1e-3, (b, err, naive_err)
            np.testing.assert_allclose(out.lse[:, b, keep], lse, rtol=1e-4, atol=1e-4)
        dropped = np.flatnonzero(~mask[b])
        np.testing.assert_array_equal(got[b, dropped], 0.0)
        assert np.all(out.lse[:, b, dropped] == -np.inf)


# ----------------------------------------------------------------------- attention backward
def cumsum0(lens):
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


def f64(t):
    return None if t is None else np.asarray(t).astype(np.float64)


UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def attention_grads_check(g, q, k, v, dout, out, cu_q, cu_k, slopes, positions, causal, dtype):
    """Each gradient within 3× the error of the naive low-precision backward (refs, ``low``) of
    the f64 formula, plus a floor (DESIGN.md; as kiln's check.rs: 1e-3, and four roundings in
    the dtype of the root sum of squares of each element's terms, since on small problems the
    naive error alone can cancel by chance); no NaN."""
    scale = float(np.float32(1 / math.sqrt(q.shape[2])))
    args = (f64(q), f64(k), f64(v), f64(dout), cu_q, cu_k, f64(slopes), causal, scale)
    ref, rss = refs.attention_backward(*args, positions=f64(positions), spread=True)
    naive = refs.attention_backward(*args, positions=f64(positions), out=f64(out), low=dtype)
    for name, got, want, low, spread in zip(("dq", "dk", "dv", "dslopes", "dpositions"), g, ref, naive, rss):
        if want is None:
            assert got is None, f"{name}: not asked for, got an array"
            continue
        assert got.dtype == (q.dtype if name in ("dq", "dk", "dv") else np.float32), name
        got = got.astype(np.float64)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert not np.isnan(got).any(), f"{name}: NaN"
        err, naive_err = np.abs(got - want), np.abs(low - want).max(initial=0)
        bound = 3 * naive_err + 1e-3 + 4 * UNIT_ROUNDOFF[np.dtype(dtype).name] * spread
        worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
        assert np.all(err <= bound), (name, worst, err[worst], bound[worst], naive_err)
    return ref


ATTN_BWD = {  # (head_dim, heads, heads_k, bias)
    "alibi-gqa": (32, 4, 2, "alibi"),
    "per_batch-mqa": (64, 2, 1, "per_batch"),
    "none": (32, 2, 2, "none"),
    "geometric-gqa": (32, 4, 2, "geometric"),
}


@pytest.mark.parametrize("dtype", [np.dtype(np.float16)] + ([BF16] if BF16 is not None else []), ids=lambda d: d.name)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", list(ATTN_BWD))
def test_attention_backward(dtype, causal, case):
    """Varlen backward against the f64 chain rule of explicit softmax attention with the ALiBi
    bias matrix: dq, dk, dv, dslopes (linear [H], linear [B, H], geometric) and dpositions, with
    empty query and key sequences (rows that see no key: dq = 0; keys no query sees: dk = dv = 0)."""
    d, heads, heads_k, bias = ATTN_BWD[case]
    r = rng("attn bwd", causal, case)
    if bias == "geometric":  # self-attention: q and k are the same tokens
        lens_q = lens_k = [6, 0, 11]
    else:
        lens_q, lens_k = [5, 0, 11, 4], [9, 3, 11, 0]
    cu_q, cu_k = cumsum0(lens_q), cumsum0(lens_k)
    q, _ = rounded(r.normal(size=(cu_q[-1], heads, d)), dtype)
    k, _ = rounded(r.normal(size=(cu_k[-1], heads_k, d)), dtype)
    v, _ = rounded(r.normal(size=(cu_k[-1], heads_k, d)), dtype)
    dout, _ = rounded(r.normal(size=q.shape), dtype)
    slopes = {"alibi": kiln.attention.alibi_slopes(heads), "none": None,
              "per_batch": r.uniform(0, 0.3, size=(len(lens_q), heads)).astype(np.float32),
              "geometric": r.uniform(0.1, 1.0, size=heads).astype(np.float32)}[bias]
    positions = r.normal(size=(cu_q[-1], 3)).astype(np.float32) if bias == "geometric" else None
    o = kiln.attention.forward(q, k, v, cu_q, cu_k, slopes=slopes, positions=positions, causal=causal)
    g = kiln.attention.backward(q, k, v, o.out, o.lse, dout, cu_q, cu_k, slopes=slopes, positions=positions,
                                causal=causal, slope_grad=slopes is not None, position_grad=positions is not None)
    assert isinstance(g, kiln.attention.Grads)
    attention_grads_check(g, q, k, v, dout, o.out, cu_q, cu_k, slopes, positions, causal, dtype)
    sees_no_key = ~np.isfinite(o.lse).T  # [total_q, H]
    assert sees_no_key.any() == (bias != "geometric")
    np.testing.assert_array_equal(g.dq[sees_no_key], 0.0)
    seen = np.repeat(np.asarray(lens_q) > 0, lens_k)
    assert not seen.all() or bias == "geometric"
    np.testing.assert_array_equal(g.dk[~seen], 0.0)
    np.testing.assert_array_equal(g.dv[~seen], 0.0)
    # Deterministic: the same bits again; the optional gradients change nothing else.
    again = kiln.attention.backward(q, k, v, o.out, o.lse, dout, cu_q, cu_k, slopes=slopes, positions=positions,
                                    causal=causal)
    assert again.dslopes is None and again.dpositions is None
    for a, b in zip(g[:3], again[:3]):
        np.testing.assert_array_equal(a, b)


def test_attention_backward_reference_is_the_gradient():
    """refs.attention_backward against central differences of refs.attention (f64): the formula
    the kernels are checked against is itself right, for linear [B, H] and geometric slopes."""
    r = rng("attn bwd fd")
    lens = [4, 0, 5]
    cu = cumsum0(lens)
    heads, heads_k, d, scale = 4, 2, 3, 0.7
    q, k, v = (r.normal(size=(cu[-1], h, d)) for h in (heads, heads_k, heads_k))
    dout = r.normal(size=q.shape)
    for causal, slopes, positions in ((True, r.uniform(0.1, 0.5, size=(3, heads)), None),
                                      (False, r.uniform(0.1, 0.5, size=heads), r.normal(size=(cu[-1], 3)))):
        x = {"q": q, "k": k, "v": v, "slopes": slopes}
        if positions is not None:
            x["positions"] = positions

        def loss(x, causal=causal):
            out, _ = refs.attention(x["q"], x["k"], x["v"], cu, cu, x["slopes"], causal, scale,
                                    positions=x.get("positions"))
            return (out * dout).sum()

        grads = dict(zip(("q", "k", "v", "slopes", "positions"),
                         refs.attention_backward(q, k, v, dout, cu, cu, slopes, causal, scale, positions=positions)))
        for name, a in x.items():
            for idx in list(np.ndindex(a.shape))[:: max(1, a.size // 12)]:
                def at(h, x=x, a=a, idx=idx, name=name, loss=loss):
                    b = a.copy()
                    b[idx] += h
                    return loss({**x, name: b})

                fd = (at(1e-6) - at(-1e-6)) / 2e-6
                assert abs(grads[name][idx] - fd) <= 1e-6 * (1 + abs(fd)), (causal, name, idx, grads[name][idx], fd)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", ["alibi", "geometric"])
def test_attention_backward_padded(causal, bias):
    """The padded form's backward with a holey mask (one sequence with no kept token) equals the
    varlen backward of the packed kept tokens on those tokens, bit for bit, and is 0 on the
    dropped ones; without a mask it is the varlen backward of the flattened batch."""
    dtype = np.dtype(np.float16)
    r = rng("padded bwd", causal, bias)
    batch, s, heads, heads_k, d = 3, 9, 4, 2, 32
    q, _ = rounded(r.normal(size=(batch, s, heads, d)), dtype)
    k, _ = rounded(r.normal(size=(batch, s, heads_k, d)), dtype)
    v, _ = rounded(r.normal(size=(batch, s, heads_k, d)), dtype)
    dout, _ = rounded(r.normal(size=q.shape), dtype)
    slopes = kiln.attention.alibi_slopes(heads)
    positions = r.normal(size=(batch, s, 3)).astype(np.float32) if bias == "geometric" else None
    mask = r.random((batch, s)) < 0.6
    mask[0, [0, 3]] = [True, False]  # holes inside the first sequence
    mask[1] = False
    kw = dict(slopes=slopes, positions=positions, causal=causal)
    want = dict(slope_grad=True, position_grad=positions is not None)
    o = kiln.attention.forward_padded(q, k, v, mask, **kw)
    g = kiln.attention.backward_padded(q, k, v, o.out, o.lse, dout, mask, **kw, **want)
    assert g.dq.shape == q.shape and g.dk.shape == k.shape and g.dslopes.shape == (heads,)
    cu = cumsum0(mask.sum(1))
    packed = {"positions": None if positions is None else positions[mask]}
    p = kiln.attention.forward(q[mask], k[mask], v[mask], cu, cu, slopes=slopes, positions=packed["positions"],
                               causal=causal)
    gp = kiln.attention.backward(q[mask], k[mask], v[mask], p.out, p.lse, dout[mask], cu, cu, slopes=slopes,
                                 positions=packed["positions"], causal=causal, **want)
    np.testing.assert_array_equal(o.out[mask], p.out)
    for name, padded, varlen in zip(g._fields, g, gp):
        if varlen is None:
            assert padded is None, name
            continue
        if name == "dslopes":
            np.testing.assert_array_equal(padded, varlen)
            continue
        np.testing.assert_array_equal(padded[mask], varlen, err_msg=name)
        np.testing.assert_array_equal(padded[~mask], 0.0, err_msg=name)
    attention_grads_check(gp, q[mask], k[mask], v[mask], dout[mask], p.out, cu, cu, slopes, packed["positions"],
                          causal, dtype)
    # No mask: the flattened batch with uniform cu_seqlens (here with seqlen_k != seqlen_q).
    if bias == "alibi":
        k2, _ = rounded(r.normal(size=(batch, s + 2, heads_k, d)), dtype)
        v2, _ = rounded(r.normal(size=(batch, s + 2, heads_k, d)), dtype)
        o = kiln.attention.forward_padded(q, k2, v2, None, slopes=slopes, causal=causal)
        g = kiln.attention.backward_padded(q, k2, v2, o.out, o.lse, dout, None, slopes=slopes, causal=causal,
                                           slope_grad=True)
        cu_q, cu_k = cumsum0([s] * batch), cumsum0([s + 2] * batch)
        flat = [t.reshape(-1, *t.shape[2:]) for t in (q, k2, v2, o.out, dout)]
        gf = kiln.attention.backward(flat[0], flat[1], flat[2], flat[3], o.lse.reshape(heads, -1), flat[4], cu_q,
                                     cu_k, slopes=slopes, causal=causal, slope_grad=True)
        for padded, varlen in zip(g[:4], gf[:4]):
            np.testing.assert_array_equal(padded.reshape(varlen.shape), varlen)
        attention_grads_check(gf, *flat[:3], flat[4], flat[3], cu_q, cu_k, slopes, None, causal, dtype)

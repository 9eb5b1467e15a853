"""kiln.arith on the emulated library against independent f64 numpy formulas: the NMU with
planted zero terms, the NAU's weight passes around numpy's GEMMs, the regularisers, and bad
input. Tolerances: reductions within a bound of f32 sums over the terms' magnitudes."""
import numpy as np
import pytest

import kiln
from test_ops import DTYPES, RTOL, assert_close, rng, rounded


def nmu_ref(x, w, dz, eps=0.0):
    """z and (dx, dw) in f64, the products of the other terms by prefix and suffix (exact with
    zero terms)."""
    wc = np.clip(w, eps, 1.0)
    t = wc[None, :, :] * (x[:, None, :] - 1.0) + 1.0  # [B, O, I]
    z = t.prod(axis=2)
    prefix = np.cumprod(np.concatenate([np.ones_like(t[..., :1]), t[..., :-1]], axis=2), axis=2)
    suffix = np.cumprod(np.concatenate([np.ones_like(t[..., :1]), t[..., :0:-1]], axis=2), axis=2)[..., ::-1]
    q = dz[:, :, None] * prefix * suffix
    dx = (q * wc[None]).sum(axis=1)
    mask = (w >= eps) & (w <= 1.0)
    dw = np.where(mask, (q * (x[:, None, :] - 1.0)).sum(axis=0), 0.0)
    return z, dx, dw


def reg_ref(unit, w, shape):
    """(R_sparse, R_oob, sparsity error) and the gradients of R_sparse and R_oob (torch's
    conventions at the kinks: sign(0) = 0, relu'(0) = 0, a tie of min halves)."""
    n = w.size
    s = np.sign
    if shape == "linear":
        u, du = np.abs(w), s(w)
        if unit == "nau":
            q, dq = np.abs(1 - np.abs(w)), -s(1 - np.abs(w)) * s(w)
        else:
            q, dq = np.abs(1 - w), -s(1 - w)
        sparse = np.minimum(u, q)
        dsparse = np.where(u < q, du, np.where(q < u, dq, 0.5 * (du + dq)))
    else:
        inner = 1 - np.abs(w) if unit == "nau" else 1 - w
        sparse = w * w * inner * inner
        dsparse = 2 * w * inner * inner - 2 * w * w * inner * (s(w) if unit == "nau" else 1.0)
    r = np.abs(w) - 1 if unit == "nau" else np.abs(w - 0.5) - 0.5
    dr = s(w) if unit == "nau" else s(w - 0.5)
    k = 1 if shape == "linear" else 2
    oob = np.where(r > 0, r**k, 0.0)
    doob = np.where(r > 0, k * r ** (k - 1) * dr, 0.0)
    err = np.minimum(np.abs(w), np.abs(1 - np.abs(w))).max()
    return (sparse.mean(), oob.mean(), err), dsparse / n, doob / n


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_nmu_matches_reference_with_zero_terms(dtype):
    g = rng("nmu", dtype.name)
    b, i, o = 6, 19, 5
    x, xv = rounded(g.uniform(0.5, 1.5, (b, i)), dtype)
    w, wv = rounded(g.uniform(-0.2, 1.2, (o, i)), dtype)
    # W = 1 and x = 0 make a term exactly 0: output (0, 0) one zero, (1, 0) two.
    w[0, :3] = 1
    x[0, 0] = 0
    x[1, :2] = 0
    xv, wv = x.astype(np.float64), w.astype(np.float64)
    dz, dzv = rounded(g.uniform(-1, 1, (b, o)), dtype)
    f = kiln.arith.nmu_forward(x, w)
    z, dx, dw = nmu_ref(xv, wv, dzv)
    assert_close(f.z, z, RTOL[dtype.name] + 2e-5 * i, what="z")
    assert f.zeros[0, 0] == 1 and f.zeros[1, 0] == 2 and f.z[0, 0] == 0
    gr = kiln.arith.nmu_backward(x, w, dz, f.prod, f.zeros)
    scale = np.abs(dz).sum() * 4
    assert_close(gr.dx, dx, RTOL[dtype.name] + 1e-4, atol=1e-5 * scale, what="dx")
    assert_close(gr.dw, dw, RTOL[dtype.name] + 1e-4, atol=1e-5 * scale, what="dw")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", ["linear", "squared"])
def test_nau_fuses_the_regularizers(dtype, shape):
    g = rng("nau", dtype.name, shape)
    b, i, o = 7, 33, 4
    x, xv = rounded(g.uniform(-1, 1, (b, i)), dtype)
    w, wv = rounded(g.uniform(-1.5, 1.5, (o, i)), dtype)
    w[0, :2] = (1, -1)  # the bounds: inside the gradient's mask
    wv = w.astype(np.float64)
    dz, dzv = rounded(g.uniform(-1, 1, (b, o)), dtype)
    z, regs = kiln.arith.nau_forward(x, w, shape)
    wc = np.clip(wv, -1, 1)
    assert_close(z, xv @ wc.T, RTOL[dtype.name] * 4 + 1e-5, what="z")
    (sparse, oob, err), dsparse, doob = reg_ref("nau", wv, shape)
    assert_close(regs.sparse, np.array([sparse]), 1e-5, what="sparse")
    assert_close(regs.oob, np.array([oob]), 1e-5, what="oob")
    assert_close(regs.sparsity_error, np.array([err]), 1e-6, what="sparsity error")
    alone = kiln.arith.regularizers("nau", w, shape)
    assert np.array_equal(alone.sparse, regs.sparse) and np.array_equal(alone.oob, regs.oob)
    ds, db = np.array([0.75], np.float32), np.array([1.25], np.float32)
    gr = kiln.arith.nau_backward(x, w, dz, ds, db, shape)
    mask = (wv >= -1) & (wv <= 1)
    want_dw = np.where(mask, dzv.T @ xv, 0.0) + 0.75 * dsparse + 1.25 * doob
    assert_close(gr.dx, dzv @ wc, RTOL[dtype.name] * 4 + 1e-5, what="dx")
    assert_close(gr.dw, want_dw, RTOL[dtype.name] * 4 + 1e-5, what="dw")
    plain = kiln.arith.nau_backward(x, w, dz)
    assert_close(plain.dw, np.where(mask, dzv.T @ xv, 0.0), RTOL[dtype.name] * 4 + 1e-5, what="dw, no regularisers")


@pytest.mark.parametrize("unit", ["nau", "nmu"])
@pytest.mark.parametrize("shape", ["linear", "squared"])
def test_regularizers_follow_torch_at_the_kinks(unit, shape):
    w = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 0.25, 2.0], np.float32)
    r = kiln.arith.regularizers(unit, w, shape)
    (sparse, oob, err), dsparse, doob = reg_ref(unit, w.astype(np.float64), shape)
    assert_close(r.sparse, np.array([sparse]), 1e-6, what="sparse")
    assert_close(r.oob, np.array([oob]), 1e-6, what="oob")
    assert_close(r.sparsity_error, np.array([err]), 1e-6, what="sparsity error")
    dw = kiln.arith.regularizers_backward(unit, w, np.array([0.75], np.float32), np.array([1.25], np.float32), shape)
    assert_close(dw, 0.75 * dsparse + 1.25 * doob, 1e-6, what="dw")


def test_arith_rejects_bad_input():
    x = np.ones((2, 3), np.float32)
    w = np.full((4, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match="w has shape"):
        kiln.arith.nmu_forward(x, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="eps"):
        kiln.arith.nmu_forward(x, w, eps=-0.5)
    with pytest.raises(TypeError, match="dtype"):
        kiln.arith.nmu_forward(x, w.astype(np.float16))
    f = kiln.arith.nmu_forward(x, w)
    with pytest.raises(ValueError, match="dz has shape"):
        kiln.arith.nmu_backward(x, w, np.ones((2, 3), np.float32), f.prod, f.zeros)
    with pytest.raises(TypeError, match="zeros"):
        kiln.arith.nmu_backward(x, w, np.ones((2, 4), np.float32), f.prod, f.prod)
    with pytest.raises(ValueError, match="unknown unit"):
        kiln.arith.regularizers("nalu", w)
    with pytest.raises(ValueError, match="unknown regulariser shape"):
        kiln.arith.regularizers("nau", w, "cubic")
    with pytest.raises(ValueError, match="no entries"):
        kiln.arith.regularizers("nau", np.ones((0, 3), np.float32))
    with pytest.raises(TypeError, match="both dsparse and doob"):
        kiln.arith.nau_dw(w, w, np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="dsparse has shape"):
        kiln.arith.nau_dw(w, w, np.ones(2, np.float32), np.ones(1, np.float32))


def test_lambda_schedule():
    assert kiln.arith.lambda_schedule(10.0, 100, 200, 50) == 0.0
    assert kiln.arith.lambda_schedule(10.0, 100, 200, 150) == 5.0
    assert kiln.arith.lambda_schedule(10.0, 100, 200, 1e9) == 10.0
    assert kiln.arith.lambda_schedule(2.0, 100, 100, 100) == 2.0


def nalu_ref(x, wh, mh, g, b, dy, eps):
    """y and every gradient in f64, written out from the definition."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    w = np.tanh(wh) * sig(mh)
    lx = np.log(np.abs(x) + eps)
    a, m, gate = x @ w.T, np.exp(lx @ w.T), sig(x @ g.T + b)
    y = gate * a + (1 - gate) * m
    da, dlm, dgl = gate * dy, (1 - gate) * m * dy, (a - m) * gate * (1 - gate) * dy
    dx = da @ w + dgl @ g + (dlm @ w) * np.sign(x) / (np.abs(x) + eps)
    dw = da.T @ x + dlm.T @ lx
    return y, dx, dw * sig(mh) * (1 - np.tanh(wh) ** 2), dw * np.tanh(wh) * sig(mh) * (1 - sig(mh)), dgl.T @ x, dgl.sum(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_nalu_matches_reference(dtype):
    gen = rng("nalu", dtype.name)
    b, i, o = 9, 21, 5
    x, xv = rounded(gen.uniform(0.5, 2, (b, i)) * gen.choice([-1, 1], (b, i)), dtype)
    (wh, whv), (mh, mhv), (g, gv) = (rounded(gen.uniform(-1, 1, (o, i)), dtype) for _ in range(3))
    bias, bv = rounded(gen.uniform(-1, 1, o), dtype)
    dy, dyv = rounded(gen.uniform(-1, 1, (b, o)), dtype)
    want = nalu_ref(xv, whv, mhv, gv, bv, dyv, 1e-7)
    y = kiln.arith.nalu_forward(x, wh, mh, g, bias)
    assert y.dtype == dtype
    tol = RTOL[dtype.name] * 2 + 1e-5
    assert_close(y, want[0], tol, atol=1e-5 * np.abs(want[0]).max(), what="y")
    grads = kiln.arith.nalu_backward(x, wh, mh, g, bias, dy)
    for name, got, w in zip(grads._fields, grads, want[1:]):
        assert got.dtype == dtype, name
        assert_close(got, w, tol, atol=1e-4 * np.abs(w).max() + 1e-6, what=name)


def test_nalu_rejects_bad_input():
    x = np.ones((2, 3), np.float32)
    w = np.full((4, 3), 0.5, np.float32)
    bias = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="eps"):
        kiln.arith.nalu_forward(x, w, w, w, bias, eps=0.0)
    with pytest.raises(ValueError, match="m_hat has shape"):
        kiln.arith.nalu_forward(x, w, np.ones((4, 2), np.float32), w, bias)
    with pytest.raises(ValueError, match="bias has shape"):
        kiln.arith.nalu_forward(x, w, w, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="dy has shape"):
        kiln.arith.nalu_backward(x, w, w, w, bias, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="expected \\[batch, in\\] and \\[out, in\\]"):
        kiln.arith.nalu_forward(np.ones((2, 5), np.float32), w, w, w, bias)

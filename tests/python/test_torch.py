"""kiln.nn against torch's own ops (F.silu, F.gelu, F.prelu, F.glu, F.layer_norm, RMSNorm, SDPA
with a materialised ALiBi bias), forward and backward through autograd, on torch CPU tensors (the
emulated library). Skipped where torch is not installed (CI: PyPI has no CUDA-free torch).
kiln's kernels take f32/f16/bf16 only, so torch.autograd.gradcheck (f64) applies to none of them;
gradients are compared with torch's autograd of the same math in f64 instead."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import kiln  # noqa: E402
import kiln.nn as knn  # noqa: E402

RTOL = {torch.float32: 1.3e-6, torch.float16: 1e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def close(got, want, dtype, atol=1e-5, rtol=None):
    rtol = RTOL[dtype] if rtol is None else rtol
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, equal_nan=False)


def grads(fn, *inputs, dy):
    """Output and input gradients of fn in f64 autograd (inputs cast to f64 leaves)."""
    leaves = [t.detach().double().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    y.backward(dy.double())
    return y.detach(), [t.grad for t in leaves]


def rand(*shape, dtype=torch.float32, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


TORCH_ACTS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(TORCH_ACTS))
def test_activation_matches_torch(name, dtype):
    x = rand(6, 33, dtype=dtype, seed=1).requires_grad_(True)
    dy = rand(6, 33, dtype=dtype, seed=2)
    y = knn.activation(x, name)
    y.backward(dy)
    want, (dx,) = grads(TORCH_ACTS[name], x, dy=dy)
    assert y.dtype == dtype
    close(y, want, dtype)
    close(x.grad, dx, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["xgelu", "xsilu", "xatlu"])
def test_expanded_activation_alpha_gets_its_gradient(op, dtype):
    m = {"xgelu": knn.XGELU, "xsilu": knn.XSiLU, "xatlu": knn.XATLU}[op](alpha=0.3)
    x = rand(4, 50, dtype=dtype, seed=3).requires_grad_(True)
    dy = rand(4, 50, dtype=dtype, seed=4)
    m(x).backward(dy)
    g0 = {"xgelu": lambda t: 0.5 * (1 + torch.erf(t / math.sqrt(2))), "xsilu": torch.sigmoid,
          "xatlu": lambda t: torch.atan(t) / math.pi + 0.5}[op]
    want, (dx, dalpha) = grads(lambda t, a: t * ((1 + 2 * a) * g0(t) - a), x, torch.tensor(0.3), dy=dy)
    close(x.grad, dx, dtype)
    assert m.alpha.grad.shape == m.alpha.shape == ()
    torch.testing.assert_close(m.alpha.grad.double(), dalpha, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 17])
def test_prelu_matches_torch(channels):
    m = knn.PReLU(channels, init=0.2)
    x = rand(3, 17, seed=5).requires_grad_(True)
    dy = rand(3, 17, seed=6)
    m(x).backward(dy)
    w = torch.full((channels,), 0.2)
    _, (dx, dw) = grads(lambda t, a: torch.where(t > 0, t, a * t), x, w, dy=dy)
    close(x.grad, dx, torch.float32)
    torch.testing.assert_close(m.weight.grad.double(), dw, rtol=1e-5, atol=1e-5)
    if channels == 1:  # torch's own PReLU with one slope
        close(m(x), F.prelu(x.double(), w.double()), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind,gate_half,ref", [
    ("glu", "second", lambda ab: F.glu(ab, dim=-1)),  # F.glu gates with the second half
    ("swiglu", "first", lambda ab: F.silu(ab.chunk(2, -1)[0]) * ab.chunk(2, -1)[1]),
    ("geglu", "first", lambda ab: F.gelu(ab.chunk(2, -1)[0]) * ab.chunk(2, -1)[1]),
    ("reglu", "second", lambda ab: F.relu(ab.chunk(2, -1)[1]) * ab.chunk(2, -1)[0]),
])
def test_glu_matches_torch(kind, gate_half, ref, dtype):
    ab = rand(2, 3, 2 * 21, dtype=dtype, seed=7).requires_grad_(True)
    dy = rand(2, 3, 21, dtype=dtype, seed=8)
    y = knn.glu(ab, kind, gate_half)
    y.backward(dy)
    want, (dab,) = grads(ref, ab, dy=dy)
    close(y, want, dtype)
    close(ab.grad, dab, dtype)


def test_glu_mlp_block_matches_torch():
    torch.manual_seed(0)
    m = knn.GLUMLP(16, 24, kind="swiglu", bias=True)
    x = rand(5, 16, seed=9).requires_grad_(True)
    dy = rand(5, 16, seed=10)
    m(x).backward(dy)

    def ref(t, wgu, bgu, wd, bd):
        a, b = F.linear(t, wgu, bgu).chunk(2, -1)
        return F.linear(F.silu(a) * b, wd, bd)

    p = [m.gate_up.weight, m.gate_up.bias, m.down.weight, m.down.bias]
    want, g = grads(ref, x, *p, dy=dy)
    close(m(x), want, torch.float32, atol=1e-5, rtol=1e-5)
    for got, w in zip([x.grad] + [q.grad for q in p], g):
        close(got, w, torch.float32, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("residual", [False, True])
def test_norm_matches_torch(kind, residual, dtype):
    d = 40
    m = knn.LayerNorm(d) if kind == "layernorm" else knn.RMSNorm(d)
    with torch.no_grad():
        m.weight.copy_(rand(d, seed=11, scale=0.3) + 1)
        if kind == "layernorm":
            m.bias.copy_(rand(d, seed=12, scale=0.1))
    x = rand(3, 5, d, dtype=dtype, seed=13).requires_grad_(True)
    r = rand(3, 5, d, dtype=dtype, seed=14).requires_grad_(True) if residual else None
    dy = rand(3, 5, d, dtype=dtype, seed=15)
    out = m(x, r) if residual else m(x)
    y = out[0] if residual else out
    y.backward(dy)

    def ref(t, *rest):
        s = t + rest[0] if residual else t
        w = rest[-2] if kind == "layernorm" else rest[-1]
        if kind == "layernorm":
            return F.layer_norm(s, (d,), w, rest[-1], 1e-5)
        return s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    params = [m.weight, m.bias] if kind == "layernorm" else [m.weight]
    inputs = [x] + ([r] if residual else []) + params
    want, g = grads(ref, *inputs, dy=dy)
    rt = max(RTOL[dtype], 1e-5)
    close(y, want, dtype, rtol=rt)
    close(x.grad, g[0], dtype, atol=1e-4, rtol=rt)
    if residual:
        close(r.grad, g[1], dtype, atol=1e-4, rtol=rt)
        close(out[1], (x.double() + r.double()).to(dtype), dtype)
    for p, w in zip(params, g[-len(params):]):
        torch.testing.assert_close(p.grad.double(), w, rtol=1e-4, atol=1e-4)


def test_unpad_pad_autograd():
    hidden = rand(2, 6, 4, seed=16).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    packed, indices, cu, max_seqlen = knn.unpad_input(hidden, mask)
    assert packed.shape == (8, 4) and max_seqlen == 5 and cu.tolist() == [0, 3, 8]
    torch.testing.assert_close(packed, hidden.reshape(12, 4)[mask.reshape(-1)])
    back = knn.pad_input(packed * 2, indices, 2, 6)
    back.sum().backward()
    torch.testing.assert_close(hidden.grad, 2 * mask[..., None].float().expand(2, 6, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_alibi_attention_matches_sdpa_with_a_materialised_bias(dtype, causal):
    heads, d, s = 4, 32, 13
    q, k, v = (rand(s, heads, d, dtype=dtype, seed=20 + i, scale=1.0) for i in range(3))
    cu = torch.tensor([0, s], dtype=torch.int32)
    attn = knn.ALiBiAttention(heads, causal=causal)
    out = attn(q, k, v, cu, cu)
    i = torch.arange(s)[:, None]
    j = torch.arange(s)[None, :]
    bias = -attn.slopes.double()[:, None, None] * (i - j).abs()
    if causal:
        bias = bias.masked_fill(j > i, -math.inf)
    ref = F.scaled_dot_product_attention(q.double().transpose(0, 1), k.double().transpose(0, 1),
                                         v.double().transpose(0, 1), attn_mask=bias).transpose(0, 1)
    naive = F.scaled_dot_product_attention(q.transpose(0, 1).float(), k.transpose(0, 1).float(),
                                           v.transpose(0, 1).float(), attn_mask=bias.float()).to(dtype)
    err = (out.double() - ref).abs().max()
    naive_err = (naive.transpose(0, 1).double() - ref).abs().max()
    assert err <= 2 * naive_err + 1e-3, (err, naive_err)


def test_padded_attention_with_a_mask_matches_sdpa_per_sequence():
    heads, d, batch, s = 2, 32, 2, 7
    q, k, v = (rand(batch, s, heads, d, dtype=torch.float16, seed=50 + i, scale=1.0) for i in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    attn = knn.ALiBiAttention(heads)
    out = attn.forward_padded(q, k, v, mask)
    assert out.shape == q.shape
    for b in range(batch):
        n = int(mask[b].sum())
        i = torch.arange(n)
        bias = -attn.slopes.double()[:, None, None] * (i[:, None] - i[None, :]).abs()
        ref = F.scaled_dot_product_attention(*(t[b, :n].double().transpose(0, 1) for t in (q, k, v)),
                                             attn_mask=bias).transpose(0, 1)
        torch.testing.assert_close(out[b, :n].double(), ref, rtol=0, atol=4e-3)
        assert (out[b, n:] == 0).all()


def test_attention_backward_says_it_is_missing():
    if kiln.attention.has_backward():
        pytest.skip("the C ABI has the attention backward")
    q = rand(4, 2, 32, dtype=torch.float16, seed=30).requires_grad_(True)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    out = knn.alibi_attention(q, q, q, cu, cu)
    with pytest.raises(NotImplementedError, match="kiln_attention_alibi_bwd"):
        out.sum().backward()


def test_argument_errors():
    x = rand(4, 6)
    with pytest.raises(TypeError, match="dy must be a torch tensor like the other arguments, got a numpy array"):
        kiln.activation.backward("relu", x, np.ones((4, 6), np.float32))
    with pytest.raises(ValueError, match=r"must be contiguous .*\.contiguous\(\)"):
        knn.activation(x.t(), "silu")
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        knn.activation(x.double(), "silu")
    with pytest.raises(TypeError, match=r"x has dtype torch.int64"):
        kiln.norm.forward("rmsnorm", torch.ones(2, 3, dtype=torch.long))


def test_a_model_trains():
    torch.manual_seed(1)
    model = torch.nn.Sequential(knn.RMSNorm(8), knn.GLUMLP(8, 16, kind="xswiglu"), knn.XGELU(alpha=0.0))
    # The x-gate's α is a parameter of the GLU (initialised to 0) and gets a gradient too.
    params = list(model.parameters())
    assert any(p.dim() == 0 for p in params)
    opt = torch.optim.Adam(params, lr=0.02)
    x, target = rand(32, 8, seed=40, scale=1.0), rand(32, 8, seed=41, scale=0.5)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert model[2].alpha.grad is not None and model[1].gate.alpha.grad is not None


def test_the_cuda_pointer_path_without_a_gpu():
    """Launch.direct_host hands torch CPU tensors' own pointers to the emulated library, as the
    CUDA path hands data_ptr() to libkiln.so (no staging; outputs, workspaces and the data-status
    word are torch tensors; packed halves are pointer offsets). Every op must give exactly what the
    staged path gives."""
    from kiln._launch import Launch

    x = rand(3, 24, seed=60).requires_grad_(True)
    ab = rand(3, 48, dtype=torch.bfloat16, seed=61).requires_grad_(True)
    hidden = rand(2, 5, 24, seed=62).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    q = rand(2, 5, 2, 32, dtype=torch.float16, seed=63, scale=1.0)

    def run():
        torch.manual_seed(3)
        x.grad = ab.grad = hidden.grad = None
        out = []
        xg, ws = knn.XGELU(0.2), knn.PReLU(24)
        y = xg(x) + ws(x) + knn.activation(x, "jumprelu", theta=torch.full((24,), 0.1), eps=0.5)
        y.backward(torch.ones_like(y))
        out += [y, x.grad, xg.alpha.grad, ws.weight.grad]
        g = knn.glu(ab, "xswiglu", "second", alpha=torch.tensor(0.3, requires_grad=True))
        g.float().sum().backward()
        out += [g, ab.grad]
        n = knn.LayerNorm(24)
        yn, s = n(x.detach(), residual=x.detach() * 2)
        out += [yn, s]
        packed, idx, cu, _ = knn.unpad_input(hidden, mask)
        back = knn.pad_input(packed * 3, idx, 2, 5)
        back.sum().backward()
        out += [packed, idx, cu, back, hidden.grad]
        out.append(knn.ALiBiAttention(2, causal=True).forward_padded(q, q, q, mask))
        return out

    staged = run()

    def no_staging(self, nbytes):
        raise AssertionError(f"{self.op}: staged {nbytes} bytes on the direct path")

    Launch.direct_host = True
    saved, Launch._emu_alloc = Launch._emu_alloc, no_staging
    try:
        direct = run()
    finally:
        Launch.direct_host = False
        Launch._emu_alloc = saved
    for a, b in zip(staged, direct):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

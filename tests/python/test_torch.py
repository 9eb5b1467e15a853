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


def attention_f64(q, k, v, cu_q, cu_k, slopes, causal, scale, positions=None):
    """Explicit softmax attention with the ALiBi bias matrix in torch (f64 inputs: autograd gives
    the reference gradients), sequence by sequence; a row that sees no key gives 0."""
    heads, group = q.shape[1], q.shape[1] // k.shape[1]
    outs = []
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = (int(c) for c in (cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]))
        sq, sk = q1 - q0, k1 - k0
        qb = q[q0:q1].transpose(0, 1)
        kb, vb = (t[k0:k1].repeat_interleave(group, dim=1).transpose(0, 1) for t in (k, v))
        s = scale * qb @ kb.transpose(1, 2)
        i, j = torch.arange(sq)[:, None], torch.arange(sk)[None, :]
        if slopes is not None:
            slope = (slopes[b] if slopes.dim() == 2 else slopes).reshape(heads, 1, 1)
            if positions is None:
                dist = (i + sk - sq - j).abs().double()
            else:
                d2 = ((positions[q0:q1, None, :] - positions[None, k0:k1, :]) ** 2).sum(-1)
                dist = torch.where(d2 > 0, torch.where(d2 > 0, d2, 1.0).sqrt(), 0.0)  # no NaN gradient at 0
            s = s - slope * dist
        visible = (j <= i + sk - sq) if causal else torch.ones(sq, sk, dtype=torch.bool)
        sees = visible.any(-1)[:, None]
        s = torch.where(sees, s.masked_fill(~visible, -math.inf), 0.0)
        outs.append(((torch.softmax(s, -1) * sees) @ vb).transpose(0, 1))
    return torch.cat(outs)


def check_grads(got, want, naive, naive_ref, spread, u, what):
    """err ≤ 3× the naive low-precision backward's error + a floor (shared/DESIGN.md; as in
    test_ops.attention_grads_check); the naive error is measured against the f64 formula it
    rounds (refs.attention_backward), so that a wrong torch reference cannot widen its bound."""
    assert got is not None, f"{what}: no gradient"
    got = got.double()
    assert not got.isnan().any(), f"{what}: NaN"
    err = (got - want).abs().numpy()
    bound = 3 * np.abs(naive - naive_ref).max() + 1e-3 + 4 * u * spread
    assert np.all(err <= bound), (what, err.max(), np.abs(naive - naive_ref).max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", ["alibi", "per_batch", "geometric"])
def test_alibi_attention_backward_matches_f64_autograd(dtype, causal, bias):
    """kiln.nn.alibi_attention's gradients for q, k, v, trainable slopes ([H] or [B, H]) and
    geometric positions against torch's f64 autograd of the explicit formula (GQA, an empty
    sequence); inputs that need no gradient get none."""
    import refs

    heads, heads_k, d = 4, 2, 32
    lens_q, lens_k = ([6, 0, 9], [6, 0, 9]) if bias == "geometric" else ([5, 0, 9], [7, 3, 9])
    cu_q = torch.tensor(np.concatenate([[0], np.cumsum(lens_q)]), dtype=torch.int32)
    cu_k = torch.tensor(np.concatenate([[0], np.cumsum(lens_k)]), dtype=torch.int32)
    q = rand(int(cu_q[-1]), heads, d, dtype=dtype, seed=70, scale=1.0).requires_grad_(True)
    k = rand(int(cu_k[-1]), heads_k, d, dtype=dtype, seed=71, scale=1.0).requires_grad_(True)
    v = rand(int(cu_k[-1]), heads_k, d, dtype=dtype, seed=72, scale=1.0).requires_grad_(True)
    dout = rand(*q.shape, dtype=dtype, seed=73, scale=1.0)
    slopes = torch.nn.Parameter(torch.from_numpy(kiln.attention.alibi_slopes(heads)))
    if bias == "per_batch":
        slopes = torch.nn.Parameter(torch.rand(3, heads, generator=torch.Generator().manual_seed(74)) * 0.3)
    positions = rand(int(cu_q[-1]), 3, seed=75).requires_grad_(True) if bias == "geometric" else None
    out = knn.alibi_attention(q, k, v, cu_q, cu_k, slopes, causal, positions=positions)
    out.backward(dout)
    scale = float(np.float32(1 / math.sqrt(d)))
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v, slopes)]
    pos64 = None if positions is None else positions.detach().double().requires_grad_(True)
    attention_f64(*leaves[:3], cu_q, cu_k, leaves[3], causal, scale, positions=pos64).backward(dout.double())
    low = np.float16 if dtype == torch.float16 else pytest.importorskip("ml_dtypes").bfloat16
    args = [t.detach().double().numpy() for t in (q, k, v, dout)] + [cu_q.numpy(), cu_k.numpy(),
                                                                     slopes.detach().double().numpy(), causal, scale]
    pos = None if positions is None else positions.detach().double().numpy()
    f64_ref, spread = refs.attention_backward(*args, positions=pos, spread=True)
    naive = refs.attention_backward(*args, positions=pos, out=out.detach().double().numpy(), low=low)
    u = 2.0 ** -11 if dtype == torch.float16 else 2.0 ** -8
    for i, (name, t, ref) in enumerate(zip(("q", "k", "v", "slopes"), (q, k, v, slopes), leaves)):
        assert t.grad.dtype == t.dtype and t.grad.shape == t.shape, name
        check_grads(t.grad, ref.grad, naive[i], f64_ref[i], spread[i], u, name)
    if positions is not None:
        check_grads(positions.grad, pos64.grad, naive[4], f64_ref[4], spread[4], u, "positions")
    # The same op without trainable parameters: no gradient for them, the rest unchanged.
    q2 = q.detach().requires_grad_(True)
    knn.alibi_attention(q2, k.detach(), v.detach(), cu_q, cu_k, slopes.detach(), causal,
                        positions=None if positions is None else positions.detach()).backward(dout)
    torch.testing.assert_close(q2.grad, q.grad, rtol=0, atol=0)


def test_trainable_alibi_slopes_learn():
    """ALiBiAttention(trainable=True): the slopes are an nn.Parameter that gets a gradient and
    moves towards slopes that produced the target (a few Adam steps lower the loss)."""
    torch.manual_seed(2)
    heads, d, s = 2, 32, 12
    q, k, v = (rand(s, heads, d, dtype=torch.float16, seed=80 + i, scale=1.0) for i in range(3))
    cu = torch.tensor([0, 5, s], dtype=torch.int32)
    target = knn.alibi_attention(q, k, v, cu, cu, torch.tensor([0.9, 0.05]), causal=True)
    attn = knn.ALiBiAttention(heads, causal=True, trainable=True)
    assert isinstance(attn.slopes, torch.nn.Parameter) and attn.slopes.dtype == torch.float32
    assert not isinstance(knn.ALiBiAttention(heads).slopes, torch.nn.Parameter)
    opt = torch.optim.Adam(attn.parameters(), lr=0.05)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = (attn(q, k, v, cu, cu).float() - target.float()).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert attn.slopes.grad is not None and attn.slopes.grad.shape == (heads,)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("causal", [False, True])
def test_padded_attention_backward_equals_the_packed_one(causal):
    """alibi_attention_padded with a holey mask: the gradients of q, k, v, the slopes and the
    geometric positions are those of alibi_attention on the packed kept tokens, bit for bit, and 0
    for dropped tokens."""
    heads, heads_k, d, batch, s = 4, 2, 32, 3, 7
    q = rand(batch, s, heads, d, dtype=torch.float16, seed=90, scale=1.0).requires_grad_(True)
    k, v = (rand(batch, s, heads_k, d, dtype=torch.float16, seed=91 + i, scale=1.0).requires_grad_(True)
            for i in range(2))
    positions = rand(batch, s, 3, seed=93).requires_grad_(True)
    dout = rand(batch, s, heads, d, dtype=torch.float16, seed=94, scale=1.0)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 0], [0] * 7, [1, 1, 1, 1, 1, 0, 1]], dtype=torch.bool)
    slopes = torch.nn.Parameter(torch.from_numpy(kiln.attention.alibi_slopes(heads)))
    out = knn.alibi_attention_padded(q, k, v, mask, slopes, causal, positions=positions)
    out.backward(dout)
    leaves = [t.detach()[mask].requires_grad_(True) for t in (q, k, v, positions)]
    sl = slopes.detach().clone().requires_grad_(True)
    cu = torch.tensor([0, 4, 4, 10], dtype=torch.int32)
    packed = knn.alibi_attention(*leaves[:3], cu, cu, sl, causal, positions=leaves[3])
    packed.backward(dout[mask])
    torch.testing.assert_close(out[mask], packed, rtol=0, atol=0)
    for name, t, p in zip(("q", "k", "v", "positions"), (q, k, v, positions), leaves):
        torch.testing.assert_close(t.grad[mask], p.grad, rtol=0, atol=0, msg=name)
        assert (t.grad[~mask] == 0).all(), name
    torch.testing.assert_close(slopes.grad, sl.grad, rtol=0, atol=0)
    # Without a mask: the backward of the flattened batch.
    q.grad = None
    knn.alibi_attention_padded(q, k.detach(), v.detach(), None, slopes.detach(), causal).backward(dout)
    qf = q.detach().reshape(batch * s, heads, d).requires_grad_(True)
    cu = torch.arange(0, batch * s + 1, s, dtype=torch.int32)
    knn.alibi_attention(qf, k.detach().reshape(-1, heads_k, d), v.detach().reshape(-1, heads_k, d), cu, cu,
                        slopes.detach(), causal).backward(dout.reshape(qf.shape))
    torch.testing.assert_close(q.grad.reshape(qf.shape), qf.grad, rtol=0, atol=0)


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
    staged path gives, the attention backward (a workspace; dslopes, dpositions) included."""
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
        qa, pos = q.detach().clone().requires_grad_(True), torch.ones(2, 5, 3).cumsum(1).requires_grad_(True)
        attn = knn.ALiBiAttention(2, causal=True, trainable=True)
        oa = attn.forward_padded(qa, qa, qa, mask)
        ob = knn.alibi_attention_padded(qa, qa, qa, mask, attn.slopes, positions=pos)
        (oa.float().sum() + ob.float().pow(2).sum()).backward()
        out += [oa, ob, qa.grad, attn.slopes.grad, pos.grad]
        vec = rand(7, 3, seed=64).requires_grad_(True)
        ysh = knn.SphericalHarmonics(4, "integral")(vec)
        ysh.pow(2).sum().backward()
        ef, nf = rand(4, 9, seed=65).requires_grad_(True), rand(3, 9, seed=66).requires_grad_(True)
        e = torch.tensor([0, 1, 2, 2], dtype=torch.int32)
        hh = knn.hessian(ef, nf, e, e.flip(0).contiguous())
        hh.pow(2).sum().backward()
        out += [ysh, vec.grad, hh, ef.grad, nf.grad]
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


# ----------------------------------------------------------------------------- equivariant
def sh2_torch(v):
    """e3nn's Y⁰..Y² (component, normalised vector; REFERENCE.md §5) in torch, for autograd."""
    u = v / v.norm(dim=1, keepdim=True)
    x, y, z = u.unbind(1)
    s3, s5, s15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
    return torch.stack([torch.ones_like(x), s3 * x, s3 * y, s3 * z, s15 * x * z, s15 * x * y,
                        s5 * (y * y - (x * x + z * z) / 2), s15 * y * z, s15 / 2 * (z * z - x * x)], 1)


def test_spherical_harmonics_module():
    v = rand(13, 3, seed=7)
    dsh = rand(13, 9, seed=8)
    m = knn.SphericalHarmonics(2)
    assert "lmax=2" in repr(m)
    leaf = v.clone().requires_grad_(True)
    y = m(leaf)
    y.backward(dsh)
    want, (dv,) = grads(sh2_torch, v, dy=dsh)
    close(y.detach(), want, torch.float32, atol=2e-6, rtol=2e-6)
    close(leaf.grad, dv, torch.float32, atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="lmax must be in 0..4"):
        knn.SphericalHarmonics(5)
    y4 = knn.spherical_harmonics(v, 4, "norm")
    assert y4.shape == (13, 25)
    torch.testing.assert_close(y4, torch.from_numpy(kiln.equivariant.spherical_harmonics(v.numpy(), 4, "norm")))


def test_hessian_autograd():
    src = torch.tensor([0, 1, 2, 3, 4, 4], dtype=torch.int32)
    dst = torch.tensor([1, 2, 0, 4, 3, 4], dtype=torch.int32)
    ef, nf = rand(6, 9, seed=9).requires_grad_(True), rand(5, 9, seed=10).requires_grad_(True)
    h = knn.hessian(ef, nf, src, dst, [3, 2])
    assert h.shape == (9 * 9 + 9 * 4,)
    dh = rand(*h.shape, seed=11)
    h.backward(dh)
    g = kiln.equivariant.hessian_backward(ef.detach(), nf.detach(), src, dst, [3, 2], dh)
    assert torch.equal(ef.grad, g.dedge_feat) and torch.equal(nf.grad, g.dnode_feat)
    # linearity: <dh, H(ef, nf)> = <d ef, ef> + <d nf, nf>
    lhs = (dh.double() * h.detach().double()).sum()
    rhs = (ef.grad.double() * ef.detach().double()).sum() + (nf.grad.double() * nf.detach().double()).sum()
    assert abs(float(lhs - rhs)) < 1e-4 * (1 + abs(float(lhs)))


# ----------------------------------------------------------------------------- arithmetic units
def nmu_torch(x, w, eps=0.0):
    wc = torch.clamp(w, eps, 1.0)
    return torch.prod(x.unsqueeze(2) * wc.t().unsqueeze(0) + 1 - wc.t().unsqueeze(0), dim=1)


def nau_torch(x, w):
    return x @ torch.clamp(w, -1.0, 1.0).t()


def nalu_torch(x, w_hat, m_hat, g, bias, eps=1e-7):
    w = torch.tanh(w_hat) * torch.sigmoid(m_hat)
    gate = torch.sigmoid(x @ g.t() + bias)
    return gate * (x @ w.t()) + (1 - gate) * torch.exp(torch.log(torch.abs(x) + eps) @ w.t())


def test_arith_units_match_torch():
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(7, 12, generator=g) + 0.5).requires_grad_(True)
    dz = torch.rand(7, 4, generator=g) - 0.5
    for fn, ref, w in (
        (knn.nmu, nmu_torch, torch.rand(4, 12, generator=g) * 1.4 - 0.2),
        (knn.nau, nau_torch, torch.rand(4, 12, generator=g) * 3 - 1.5),
    ):
        x.grad = None
        w = w.requires_grad_(True)
        z = fn(x, w)
        z.backward(dz)
        want, (dx, dw) = grads(ref, x, w, dy=dz)
        close(z, want, torch.float32, rtol=1e-5)
        close(x.grad, dx, torch.float32, rtol=1e-5)
        close(w.grad, dw, torch.float32, rtol=1e-5)
    params = [torch.rand(4, 12, generator=g) * 2 - 1 for _ in range(3)] + [torch.rand(4, generator=g) - 0.5]
    params = [p.requires_grad_(True) for p in params]
    x.grad = None
    y = knn.nalu(x, *params)
    y.backward(dz)
    want, gs = grads(nalu_torch, x, *params, dy=dz)
    close(y, want, torch.float32, rtol=1e-5)
    for got, w in zip([x.grad] + [p.grad for p in params], gs):
        close(got, w, torch.float32, rtol=1e-4, atol=1e-4)


def test_arith_modules_and_regularizers():
    torch.manual_seed(0)
    nau, nmu, nalu = knn.NAU(12, 2), knn.NMU(2, 1), knn.NALU(12, 3)
    assert nau.weight.abs().max() <= 0.5 and 0.25 <= nmu.weight.min() and nmu.weight.max() <= 0.75
    x = torch.rand(5, 12) + 1
    y = nmu(nau(x)) + nalu(x).sum(1, keepdim=True)
    loss = y.pow(2).mean() + nau.regularization(0.5) + nmu.regularization(2.0, 0.5)
    loss.backward()
    for p in [nau.weight, nmu.weight, *nalu.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # The regularisers' gradient is kiln.arith.regularizers_backward's, scaled by λ.
    w = nau.weight.detach().clone().requires_grad_(True)
    sparse, oob, err = knn.arith_regularizers(w, "nau", "squared")
    (0.5 * sparse + 2.0 * oob).backward()
    want = kiln.arith.regularizers_backward("nau", w.detach(), torch.tensor([0.5]), torch.tensor([2.0]), "squared")
    close(w.grad, want, torch.float32)
    assert not err.requires_grad

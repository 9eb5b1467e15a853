"""kiln against torch eager and torch.compile on the memory-bound ops: activations, GLU gates,
LayerNorm/RMSNorm (with the fused residual add), unpad/pad. Forward, and forward + backward
through autograd (``torch.autograd.grad``, so nothing accumulates between runs).

usage: python3 benches/peers/elementwise.py [--quick]   (run.py runs it with attention.py)
"""
import math
import sys

from common import Results, compiled, import_kiln, random, torch

F = torch.nn.functional if torch is not None else None


def fwd_bwd(fn, inputs, dy):
    """A closure running fn forward and its backward into every input."""
    def run():
        return torch.autograd.grad(fn(*inputs), inputs, dy)

    return run


def activations(res, kiln, dtype, tag, n):
    knn = kiln.nn
    x = random((n // 4096, 4096), dtype, 1.5, seed=1)
    dy = random(x.shape, dtype, 1.0, seed=2)
    alpha = torch.tensor(0.1, device="cuda", requires_grad=True)

    def xgelu(t, a):
        return t * ((1 + 2 * a) * (0.5 * (1 + torch.erf(t * (1 / math.sqrt(2))))) - a)

    cases = {
        "silu": (lambda t: knn.activation(t, "silu"), F.silu, True),
        "gelu": (lambda t: knn.activation(t, "gelu"), F.gelu, True),
        "gelu_tanh": (lambda t: knn.activation(t, "gelu_tanh"), lambda t: F.gelu(t, approximate="tanh"), False),
        "relu": (lambda t: knn.activation(t, "relu"), F.relu, False),
    }
    for name, (k, peer, compile_it) in cases.items():
        res.add(f"activation/{name}", "fwd", tag, x.shape, lambda k=k: k(x),
                {"eager": lambda p=peer: p(x), "compile": (lambda c=compiled(peer): c(x)) if compile_it else None})
        xr = x.detach().requires_grad_(True)
        pc = compiled(peer) if compile_it else None
        res.add(f"activation/{name}", "fwd+bwd", tag, x.shape, fwd_bwd(k, [xr], dy),
                {"eager": fwd_bwd(peer, [xr], dy), "compile": fwd_bwd(pc, [xr], dy) if pc else None})
    # The expanded GELU with a trainable alpha: kiln's fused dalpha reduction against autograd's.
    # kiln takes alpha by value, so an alpha on the GPU is read back at each call (a sync): timed
    # as a model would see it.
    res.notes.append("activation/xgelu: kiln reads the CUDA alpha to the host at each call (the C ABI takes it by value)")
    xr = x.detach().requires_grad_(True)
    cx = compiled(xgelu)
    res.add("activation/xgelu", "fwd", tag, x.shape, lambda: knn.activation(x, "xgelu", alpha=alpha),
            {"eager": lambda: xgelu(x, alpha), "compile": lambda: cx(x, alpha)})
    res.add("activation/xgelu", "fwd+bwd", tag, x.shape,
            fwd_bwd(lambda t, a: knn.activation(t, "xgelu", alpha=a), [xr, alpha], dy),
            {"eager": fwd_bwd(xgelu, [xr, alpha], dy), "compile": fwd_bwd(cx, [xr, alpha], dy)})


def glus(res, kiln, dtype, tag, tokens, ff):
    knn = kiln.nn
    ab = random((tokens, 2 * ff), dtype, 1.0, seed=3)
    dy = random((tokens, ff), dtype, 1.0, seed=4)

    def swiglu(t):
        a, b = t.chunk(2, -1)
        return F.silu(a) * b

    def geglu(t):
        a, b = t.chunk(2, -1)
        return F.gelu(a) * b

    for name, peer, kw in (("swiglu", swiglu, {}), ("geglu", geglu, {}),
                           ("glu", lambda t: F.glu(t, -1), {"gate_half": "second"})):
        c = compiled(peer) if name != "glu" else None
        res.add(f"glu/{name}", "fwd", tag, ab.shape, lambda n=name, kw=kw: knn.glu(ab, n, **kw),
                {"eager": lambda p=peer: p(ab), "compile": (lambda c=c: c(ab)) if c else None})
        abr = ab.detach().requires_grad_(True)
        res.add(f"glu/{name}", "fwd+bwd", tag, ab.shape, fwd_bwd(lambda t, n=name, kw=kw: knn.glu(t, n, **kw), [abr], dy),
                {"eager": fwd_bwd(peer, [abr], dy), "compile": fwd_bwd(c, [abr], dy) if c else None})


def norms(res, kiln, dtype, tag, rows, dim):
    knn = kiln.nn
    x = random((rows, dim), dtype, 1.0, seed=5)
    r = random((rows, dim), dtype, 1.0, seed=6)
    dy = random((rows, dim), dtype, 1.0, seed=7)
    w32 = (random((dim,), torch.float32, 0.1, seed=8) + 1).requires_grad_(True)
    b32 = random((dim,), torch.float32, 0.1, seed=9).requires_grad_(True)
    w, b = w32.detach().to(dtype).requires_grad_(True), b32.detach().to(dtype).requires_grad_(True)

    def ln(t, w, b):
        return F.layer_norm(t, (dim,), w, b, 1e-5)

    def rms(t, w):
        return F.rms_norm(t, (dim,), w, 1e-6) if hasattr(F, "rms_norm") else \
            t * torch.rsqrt(t.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(t.dtype) * w

    def add_rms(t, res_, w):
        return rms(t + res_, w)

    cln, crms, cadd = compiled(ln), compiled(rms), compiled(add_rms)
    res.add("norm/layernorm", "fwd", tag, x.shape, lambda: knn.layer_norm(x, w32, b32),
            {"eager": lambda: ln(x, w, b), "compile": lambda: cln(x, w, b)})
    xr = x.detach().requires_grad_(True)
    res.add("norm/layernorm", "fwd+bwd", tag, x.shape, fwd_bwd(lambda t, w_, b_: knn.layer_norm(t, w_, b_), [xr, w32, b32], dy),
            {"eager": fwd_bwd(ln, [xr, w, b], dy), "compile": fwd_bwd(cln, [xr, w, b], dy)})
    res.add("norm/rmsnorm", "fwd", tag, x.shape, lambda: knn.rms_norm(x, w32),
            {"eager": lambda: rms(x, w), "compile": lambda: crms(x, w)})
    res.add("norm/rmsnorm", "fwd+bwd", tag, x.shape, fwd_bwd(lambda t, w_: knn.rms_norm(t, w_), [xr, w32], dy),
            {"eager": fwd_bwd(rms, [xr, w], dy), "compile": fwd_bwd(crms, [xr, w], dy)})
    # Pre-norm transformers' residual add fused into the norm (kiln returns the sum as well).
    res.add("norm/rmsnorm+residual", "fwd", tag, x.shape, lambda: knn.rms_norm(x, w32, residual=r),
            {"eager": lambda: add_rms(x, r, w), "compile": lambda: cadd(x, r, w)})


def padding(res, kiln, dtype, tag, batch, seqlen, dim):
    hidden = random((batch, seqlen, dim), dtype, 1.0, seed=10)
    g = torch.Generator(device="cuda").manual_seed(11)
    lens = torch.randint(seqlen // 4, seqlen + 1, (batch,), generator=g, device="cuda")
    mask = torch.arange(seqlen, device="cuda")[None, :] < lens[:, None]

    def unpad_eager():  # flash-attn's bert_padding.unpad_input
        seqlens = mask.sum(-1, dtype=torch.int32)
        indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
        max_seqlen = int(seqlens.max().item())
        cu = F.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
        return hidden.reshape(-1, dim).index_select(0, indices), indices, cu, max_seqlen

    packed, indices, _, _ = kiln.padding.unpad(hidden, mask=mask)
    indices64 = indices.long()

    def pad_eager(p):
        out = torch.zeros(batch * seqlen, dim, device="cuda", dtype=dtype)
        out[indices64] = p
        return out.view(batch, seqlen, dim)

    cpad = compiled(pad_eager)
    res.add("padding/unpad", "fwd", tag, hidden.shape, lambda: kiln.padding.unpad(hidden, mask=mask),
            {"eager": unpad_eager}, runs=20, inner=2)
    # check_data=False: no host read of the data-status word (torch's indexing validates nothing either).
    res.add("padding/pad", "fwd", tag, packed.shape,
            lambda: kiln.padding.pad(packed, indices, batch, seqlen, check_data=False),
            {"eager": lambda: pad_eager(packed), "compile": lambda: cpad(packed)})


def main(res=None, quick=False):
    if torch is None or not torch.cuda.is_available():
        print("elementwise peers: needs torch with a CUDA device; skipped")
        return None
    kiln = import_kiln()
    own = res is None
    res = res or Results(budget_s=300)
    n = 1 << (24 if quick else 27)
    for dtype, tag in ((torch.bfloat16, "bf16"),):
        activations(res, kiln, dtype, tag, n)
        glus(res, kiln, dtype, tag, 2048 if quick else 8192, 11008)
        norms(res, kiln, dtype, tag, 4096 if quick else 16384, 4096)
        padding(res, kiln, dtype, tag, 32, 512, 1024 if quick else 4096)
    if own:
        for note in res.notes:
            print("note:", note)
    return res


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])

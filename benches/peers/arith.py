"""kiln against stable-nalu's eager PyTorch (and torch.compile) on the arithmetic units, the same
tensors for all, f32 with IEEE GEMMs (TF32 off: the units must learn exact arithmetic).

- NMU: stable-nalu's forward materialises W_c·x + 1 − W_c as [B, I, O] and takes its product
  over I; at the bench shape (4096³) that tensor is 275 GB, so both run at [1024, 1024, 1024]
  (4.3 GB a tensor), kiln through its Python binding. Forward and forward + backward.
- NAU and NALU: peer-only rows at `kiln bench`'s shapes (kiln's time is the bench's Rust path,
  its cuBLASLt GEMMs and fused passes; scripts/perf-record.py divides).

usage: python3 benches/peers/arith.py [--quick]   (run.py runs it with the others)
"""
import sys

from common import Results, compiled, import_kiln, random, torch


def nmu_eager(x, w):
    """stable-nalu's ReRegualizedLinearMNACLayer forward (ε = 0)."""
    wc = torch.clamp(w, 0.0, 1.0)
    return torch.prod(x.unsqueeze(2) * wc.t().unsqueeze(0) + 1 - wc.t().unsqueeze(0), dim=1)


def nau_eager(x, w):
    return x @ torch.clamp(w, -1.0, 1.0).t()


def nalu_eager(x, w_hat, m_hat, g, bias, eps=1e-7):
    """stable-nalu's NALU with one shared NAC weight."""
    w = torch.tanh(w_hat) * torch.sigmoid(m_hat)
    a = x @ w.t()
    m = torch.exp(torch.log(torch.abs(x) + eps) @ w.t())
    gate = torch.sigmoid(x @ g.t() + bias)
    return gate * a + (1 - gate) * m


def grads(fn, inputs, dy):
    def run():
        return torch.autograd.grad(fn(*inputs), inputs, dy)

    return run


def nmu(res, kiln, n):
    x = (random((n, n), torch.float32, 0.05, seed=11) + 1.0).contiguous()  # terms near 1: no under/overflow
    w = random((n, n), torch.float32, 0.3, seed=12).add_(0.5).contiguous()
    dy = random((n, n), torch.float32, 1.0, seed=13)
    ka = kiln.arith
    shape = (n, n)
    flops = 2 * n**3
    res.add("arith/nmu", "fwd", "f32", shape, lambda: ka.nmu_forward(x, w, save=False).z,
            {"stable_nalu_eager": lambda: nmu_eager(x, w)}, flops=flops)

    def kiln_both():
        f = ka.nmu_forward(x, w)
        return ka.nmu_backward(x, w, dy, f.prod, f.zeros)

    xr, wr = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    res.add("arith/nmu", "fwd+bwd", "f32", shape, kiln_both, {"stable_nalu_eager": grads(nmu_eager, [xr, wr], dy)},
            flops=6 * flops)


def nau(res, n):
    x = random((n, n), torch.float32, 1.0, seed=21)
    w = random((n, n), torch.float32, 0.8, seed=22)
    dy = random((n, n), torch.float32, 1.0, seed=23)
    c = compiled(nau_eager)
    res.add_peers_only("arith/nau", "fwd", "f32", (n, n), {"eager": lambda: nau_eager(x, w), "compile": lambda: c(x, w)})
    xr, wr = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    res.add_peers_only("arith/nau", "fwd+bwd", "f32", (n, n),
                       {"eager": grads(nau_eager, [xr, wr], dy), "compile": grads(c, [xr, wr], dy)})


def nalu(res, b, i, o):
    x = random((b, i), torch.float32, 1.0, seed=31)
    w_hat, m_hat, g = (random((o, i), torch.float32, 0.5, seed=s) for s in (32, 33, 34))
    bias = random((o,), torch.float32, 0.5, seed=35)
    dy = random((b, o), torch.float32, 1.0, seed=36)
    c = compiled(nalu_eager)
    args = [x, w_hat, m_hat, g, bias]
    res.add_peers_only("arith/nalu", "fwd", "f32", (b, i),
                       {"eager": lambda: nalu_eager(*args), "compile": lambda: c(*args)})
    leaves = [t.detach().requires_grad_(True) for t in args]
    res.add_peers_only("arith/nalu", "fwd+bwd", "f32", (b, i),
                       {"eager": grads(nalu_eager, leaves, dy), "compile": grads(c, leaves, dy)})


def main(res=None, quick=False):
    if torch is None or not torch.cuda.is_available():
        print("arith peers: needs torch with a CUDA device; skipped")
        return None
    kiln = import_kiln()
    own = res is None
    res = res or Results(budget_s=200)
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        nmu(res, kiln, 256 if quick else 1024)
        nau(res, 1024 if quick else 4096)
        nalu(res, 4096, 1024, 1024)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = True
    if own:
        for note in res.notes:
            print("note:", note)
    return res


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])

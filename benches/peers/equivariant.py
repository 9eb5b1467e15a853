"""e3nn's tensor-product convolution, timed for comparison with kiln's fused one (issue 14's
target: MACE-large, fp32, 100k edges; kiln >= 10x e3nn with torch.compile).

kiln's side is `kiln bench equivariant/conv` (the registry's MACE-large problem, f32): the same
irreps, instruction list, normalization and graph shape, timed by the bench step of the GPU run.
These rows carry only the peers' times; scripts/perf-record.py divides kiln's bench medians by
them (fwd: the forward; fwd+bwd: kiln's forward plus backward medians; fwd+bwd+bwd2: plus the
double backward's, against autograd's create_graph=True backward and its backward, as force
training runs it). e3nn materialises the per-edge messages ([edges, dim_out]) and scatters them
with index_add_, as NequIP/MACE do.
"""
from common import Results, compiled, random, torch

# REFERENCE.md §5's MACE-large, as src/ops/equivariant/tp.rs configures it.
IRREPS_IN1 = "128x0e+128x1o+128x2e"
IRREPS_SH = "1x0e+1x1o+1x2e+1x3o"
IRREPS_OUT = "128x0e+128x1o+128x2e+128x3o"


def uvu_instructions(in1, in2, out):
    """Every (i1, i2, i_out) the selection rules allow with mul_out = mul1, in e3nn's order."""
    found = []
    for i1, (mul1, ir1) in enumerate(in1):
        for i2, (_, ir2) in enumerate(in2):
            for i_out, (mul_out, ir_out) in enumerate(out):
                if ir_out in ir1 * ir2 and mul_out == mul1:
                    found.append((i1, i2, i_out, "uvu", True))
    return found


def main(res=None, quick=False):
    if torch is None or not torch.cuda.is_available():
        print("equivariant peers: needs torch with a CUDA device; skipped")
        return None
    res = res or Results(budget_s=300)
    try:
        from e3nn import o3
    except ImportError:
        res.notes.append("equivariant: e3nn is not installed")
        return None
    edges = 10_000 if quick else 100_000
    nodes = edges // 8 + 1
    in1, in2, out = o3.Irreps(IRREPS_IN1), o3.Irreps(IRREPS_SH), o3.Irreps(IRREPS_OUT)
    tp = o3.TensorProduct(in1, in2, out, uvu_instructions(in1, in2, out), shared_weights=False,
                          internal_weights=False, irrep_normalization="component",
                          path_normalization="element").cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    # Receivers sorted, node 0 receiving nothing, senders anywhere: the registry's random graph.
    dst = torch.sort(torch.randint(1, nodes, (edges,), generator=g, device="cuda")).values
    src = torch.randint(0, nodes, (edges,), generator=g, device="cuda")
    x = random((nodes, in1.dim), torch.float32, seed=1).requires_grad_()
    y = random((edges, in2.dim), torch.float32, seed=2).requires_grad_()
    w = random((edges, tp.weight_numel), torch.float32, seed=3).requires_grad_()
    dout = random((nodes, out.dim), torch.float32, seed=4)

    def conv(x, y, w):
        messages = tp(x[src], y, w)
        return torch.zeros(nodes, out.dim, device="cuda", dtype=messages.dtype).index_add_(0, dst, messages)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(x, y, w)
        return run

    def forward_backward(fn):
        def run():
            x.grad = y.grad = w.grad = None
            fn(x, y, w).backward(dout)
        return run

    # The double backward: the gradients of <gdx, dx> + <gdy, dy> + <gdw, dw> in x, y, w and
    # dout (kiln's equivariant/conv bwd2 with the same upstream gradients).
    gdx = random((nodes, in1.dim), torch.float32, seed=5)
    gdy = random((edges, in2.dim), torch.float32, seed=6)
    gdw = random((edges, tp.weight_numel), torch.float32, seed=7)
    dout_leaf = dout.clone().requires_grad_()

    def double_backward(fn):
        def run():
            grads = torch.autograd.grad(fn(x, y, w), (x, y, w), dout_leaf, create_graph=True)
            torch.autograd.grad(grads, (x, y, w, dout_leaf), (gdx, gdy, gdw))
        return run

    compiled_conv = compiled(conv)
    shape = [edges, in1.dim]
    for direction, wrap in (("fwd", forward), ("fwd+bwd", forward_backward), ("fwd+bwd+bwd2", double_backward)):
        peers = {"e3nn_eager": wrap(conv)}
        if compiled_conv is not None:
            peers["e3nn_compile"] = wrap(compiled_conv)
        res.add_peers_only("equivariant/conv", direction, "f32", shape, peers, runs=10, inner=2)

"""kiln's ALiBi attention forward against PyTorch's: F.scaled_dot_product_attention with the
flash backend (no bias: kiln without slopes), with the memory-efficient backend and a
materialised ALiBi bias, and FlexAttention with an ALiBi score_mod (compiled). Shape: the issue's
B·S = 16k tokens, H·D = 2048 (H = 16, D = 128), bf16, causal and not. TFLOP/s from
4·B·S²·H·D (halved for causal).

usage: python3 benches/peers/attention.py [--quick]
"""
import sys

from common import Results, import_kiln, random, torch

F = torch.nn.functional if torch is not None else None


def peers_for(q4, k4, v4, slopes, causal, seqlen, with_bias):
    """The peers on [B, H, S, D] views of the same tensors kiln reads packed."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    if not with_bias:
        def flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q4, k4, v4, is_causal=causal)

        out["sdpa_flash"] = flash
        return out
    i = torch.arange(seqlen, device="cuda")
    rel = (i[:, None] - i[None, :]).abs().float()
    bias = (-slopes[:, None, None] * rel).to(q4.dtype)[None]  # [1, H, S, S]
    if causal:
        bias = bias.masked_fill((i[None, :] > i[:, None])[None, None], float("-inf"))

    def efficient():
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            return F.scaled_dot_product_attention(q4, k4, v4, attn_mask=bias)

    out["sdpa_efficient_bias"] = efficient
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def alibi(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx).abs()

        block_mask = None
        if causal:
            block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, seqlen, seqlen,
                                           device="cuda")
        flex = torch.compile(flex_attention, dynamic=False)
        out["flex_alibi"] = lambda: flex(q4, k4, v4, score_mod=alibi, block_mask=block_mask)
    except Exception as e:  # noqa: BLE001 - an older torch without FlexAttention
        print(f"flex_attention unavailable: {e}")
    return out


def main(res=None, quick=False):
    if torch is None or not torch.cuda.is_available():
        print("attention peers: needs torch with a CUDA device; skipped")
        return None
    kiln = import_kiln()
    own = res is None
    res = res or Results(budget_s=240)
    batch, seqlen, heads, d = (2, 1024, 16, 128) if quick else (8, 2048, 16, 128)
    dtype = torch.bfloat16
    total = batch * seqlen
    q, k, v = (random((total, heads, d), dtype, 1.0, seed=20 + i) for i in range(3))
    cu = torch.arange(0, total + 1, seqlen, device="cuda", dtype=torch.int32)
    slopes = torch.from_numpy(kiln.attention.alibi_slopes(heads)).cuda()
    # [B, H, S, D] views of the same memory for the peers.
    q4, k4, v4 = (t.view(batch, seqlen, heads, d).transpose(1, 2) for t in (q, k, v))
    for causal in (False, True):
        flops = 4 * batch * seqlen * seqlen * heads * d / (2 if causal else 1)
        tag = "causal" if causal else "full"
        for with_bias in (False, True):
            s = slopes if with_bias else None
            name = "attention/alibi" if with_bias else "attention/nobias"
            res.add(f"{name}[{tag}]", "fwd", "bf16", q.shape,
                    lambda s=s, c=causal: kiln.attention.forward(q, k, v, cu, cu, slopes=s, causal=c,
                                                                 max_seqlen_q=seqlen),
                    peers_for(q4, k4, v4, slopes, causal, seqlen, with_bias), flops=flops, runs=15, inner=3)
    res.notes.append("equivariant tensor products vs e3nn: no tensor-product op in kiln's C ABI yet")
    if own:
        for note in res.notes:
            print("note:", note)
    return res


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])

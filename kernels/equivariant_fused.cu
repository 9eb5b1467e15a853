// The equivariant family's fused backward (docs/equivariant.md "Fused backward"): for
// channelwise products (every path uvu, MACE's and NequIP's) with per-edge weights in f32, one
// walk in sender order (a warp per sender) writes dx and each of the sender's edges' dy and dw.
// A uvu path's lanes own the same channel of x1 and of the output, so one read of the edge's
// dout row, weights and x2 row serves all three gradients, where tp_channel.cuh's dx and edge
// kernels read dout and the weights twice. dy is added to the edge's row by the one warp that
// owns the edge, in a fixed order (no atomics).
//
// A translation unit of its own, and one instantiation only (f32, 4 channels a lane: vector-ready
// plans; fused_backward_applies), for build time: the fused body is twice the dx kernel's code,
// and in equivariant.cu, at f32 and f64 and both channel widths, it added ~35 s per architecture
// to the longest nvcc job of the build (perf/predictions.md). Here the two cores compile it
// beside equivariant.cu.

#include <cuda_runtime.h>

#include <cstdint>

#include "common/compute.cuh"
#include "common/launch.cuh"
#include "equivariant/tp_channel.cuh"
#include "equivariant/tp_fused.cuh"
#include "equivariant/tp_plan.cuh"
#include "kiln.h"

namespace kiln::equivariant {
namespace {

// The fused backward's share of uvu path P and one edge for the lane's channels c..c+V (active
// lanes: c < mul1), with gk = dout[c], a = x1[c] and t = Cᵀ(a, gk) (Σ_ik C_ijk a_i g_k); per x2
// channel v (b = x2[v], weight W[c, v]): dw[c, v] = coef·⟨t, b⟩ (stored once, or added with
// `add_dw`), dy[v] += Σ_c coef·W[c, v]·t (a fixed butterfly over the lanes; lane j adds
// component j, so each dy element has one writer) and bw += coef·W[c, v]·b; last
// dx[c] += Cᵀ(bw, gk) into acc. One read of the edge's dout row, weights and x2 row serves all
// three gradients. dw, dy may be NULL and `want_dx` false (a double backward pass that does not
// want them). Every lane calls it.
//
// Registers: the sender's x1 channels are read again for each path and edge (L1 hits: the row
// is the sender's) and die once t is made, rather than held over the walk: held, they were a
// fifth [V][9] array and ptxas spilled at V = 4 (perf/predictions.md). This order keeps gk, t,
// bw and acc: about 250 registers in f32 on sm_80 and sm_90a, no stack.
template <int V, typename T, typename C>
__device__ __forceinline__ void path_fused_uvu(const kiln_tp_path& P, int code, C coef, int c, bool active, int lane,
                                               const T* x1, const T* x2, const T* we, const T* go, T* dw,
                                               bool add_dw, T* dy, bool want_dx, C (&acc)[V][kMaxDim]) {
    C gk[V][kMaxDim] = {};
    if (active) load_channels<V>(go + P.off_out + c * P.dim_out, P.dim_out, gk);
    C t[V][kMaxDim] = {};
    if (active && (dw != nullptr || dy != nullptr)) {
        C a[V][kMaxDim] = {};
        load_channels<V>(x1 + P.off1 + c * P.dim1, P.dim1, a);
        with_cg(code, [&](auto cg) KILN_INLINE_LAMBDA {
#pragma unroll
            for (int q = 0; q < V; ++q) decltype(cg)::adjoint_b(a[q], gk[q], t[q]);
        });
    }
    C bw[V][kMaxDim] = {};
    for (int v = 0; v < P.mul2; ++v) {
        C b[kMaxDim];
        broadcast_row(x2 + P.off2 + v * P.dim2, P.dim2, lane, b);
        C dacc[kMaxDim] = {};
        if (active) {
            const int i0 = weight_index(P, true, c, v, 0);
            C wv[V];
            load_weights<V>(we, i0, P.mul2, wv);
            C grad[V];
#pragma unroll
            for (int q = 0; q < V; ++q) {
                C dot = C(0);
#pragma unroll
                for (int j = 0; j < kMaxDim; ++j) {
                    dot += t[q][j] * b[j];
                    dacc[j] += coef * wv[q] * t[q][j];
                    bw[q][j] += coef * wv[q] * b[j];
                }
                grad[q] = coef * dot;
            }
            if (dw != nullptr) store_weights<V>(dw, i0, P.mul2, add_dw, grad);
        }
        if (dy == nullptr) continue;
        const C mine = warp_sum_to_lane(dacc, P.dim2, lane);
        if (lane < P.dim2) {
            T* out = dy + P.off2 + int64_t(v) * P.dim2 + lane;
            *out = from_compute<T>(to_compute(*out) + mine);
        }
    }
    if (!active || !want_dx) return;
    with_cg(code, [&](auto cg) KILN_INLINE_LAMBDA {
#pragma unroll
        for (int q = 0; q < V; ++q) decltype(cg)::adjoint_a(bw[q], gk[q], acc[q]);
    });
}

// The kernel: per-edge weights in f32 (the launcher's choice) on plans it applies to
// (fused_backward_applies, checked here: the plan is on the device; otherwise it returns at
// once and the two kernels run, their `fused` flag telling them to do the work): one walk in
// sender order, a warp per sender as tp_bwd_dx_channel_kernel, writes dx[n] and, for each edge
// of the sender's segment, the edge's dy and dw (path_fused_uvu). Against the two kernels it
// reads each edge's weights and dout row once instead of twice (MACE-large: 8.7 KB of weights
// and an 8.2 KB dout row an edge). dy rows sum over paths and block passes, so the warp that
// owns the edge zeroes them first unless `accumulate_edge` (it adds, as it does to dw);
// `accumulate_dx` adds to dx. dx, dy, dw may each be NULL (not wanted).
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_fused_uvu_kernel(kiln_tp_plan plan, const float* __restrict__ x, const float* __restrict__ y,
                            const float* __restrict__ w, Graph g, int vector_rows, int accumulate_dx,
                            int accumulate_edge, const float* __restrict__ dout, int64_t nodes,
                            float* __restrict__ dx, float* __restrict__ dy, float* __restrict__ dw) {
    using T = float;
    using C = float;
    constexpr int V = kVecChannels;
    const int lane = threadIdx.x % 32;
    if (!fused_backward_applies(plan, vector_rows, lane)) return;
    const PathField off = &kiln_tp_path::off1;
    const PathField mul = &kiln_tp_path::mul1;
    const PathField dim = &kiln_tp_path::dim1;
    const bool full = covers(plan, off, mul, dim, plan.dim1, lane);
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t n = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; n < nodes; n += warps) {
        const int64_t t0 = g.src_ptr != nullptr ? g.src_ptr[n] : n;
        const int64_t t1 = g.src_ptr != nullptr ? g.src_ptr[n + 1] : n + 1;
        T* row = dx != nullptr ? dx + n * plan.dim1 : nullptr;
        if (row != nullptr && !full && accumulate_dx == 0) zero_uncovered(plan, off, mul, dim, plan.dim1, row, lane);
        if (dy != nullptr && accumulate_edge == 0) {
            for_each_segment_edge(g.src_perm, nullptr, t0, t1, lane, [&](int64_t e, int64_t) KILN_INLINE_LAMBDA {
                for (int64_t j = lane; j < plan.dim2; j += 32) dy[e * plan.dim2 + j] = C(0);
            });
            __syncwarp();
        }
        for_each_block(plan, off, lane, [&](int b) KILN_INLINE_LAMBDA {
            const kiln_tp_path B = load_path(plan, b, lane);
            for (int c0 = 0; c0 < B.mul1; c0 += 32 * V) {
                const int c = c0 + lane * V;
                const bool active = c < B.mul1;
                C acc[V][kMaxDim] = {};
                for_each_member(plan, off, B.off1, b, lane, [&](int p) KILN_INLINE_LAMBDA {
                    const kiln_tp_path P = p == b ? B : load_path(plan, p, lane);  // B is the first
                    const C coef = path_coef_of<C>(plan, P, p);
                    const int code = triple_code(P.dim1, P.dim2, P.dim_out);
                    const auto edge = [&](int64_t e, int64_t d) KILN_INLINE_LAMBDA {
                        T* dwe = dw != nullptr ? dw + e * plan.weight_numel : nullptr;
                        T* dye = dy != nullptr ? dy + e * plan.dim2 : nullptr;
                        path_fused_uvu<V>(P, code, coef, c, active, lane, x + n * plan.dim1, y + e * plan.dim2,
                                          w + e * plan.weight_numel, dout + d * plan.dim_out, dwe,
                                          accumulate_edge != 0, dye, row != nullptr, acc);
                    };
                    for_each_segment_edge(g.src_perm, g.dst, t0, t1, lane, edge);
                });
                if (active && row != nullptr) {
                    store_channels<V>(row + B.off1 + int64_t(c) * B.dim1, B.dim1, accumulate_dx != 0, acc);
                }
            }
        });
    }
}

}  // namespace

kiln_status launch_tp_bwd_fused_uvu(const FusedBackward& f) {
    KILN_LAUNCH(f.blocks, kTpThreads, 0, f.stream, tp_bwd_fused_uvu_kernel)(
        *f.plan, f.x, f.y, f.w, f.g, f.vector_rows, f.accumulate_dx, f.accumulate_edge, f.dout, f.nodes, f.dx, f.dy,
        f.dw);
    return launch_status();
}

}  // namespace kiln::equivariant

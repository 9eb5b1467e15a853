// Channel-parallel tensor products and graph convolution, for plans whose CG tables are
// wigner_3j (kiln_tp_plan.wigner_cg: every plan kiln::equivariant builds).
//
// A warp owns one row (a receiver for the forward, a sender for dx, an edge for dy and dw) and
// its lanes own channels: lane c works on channel c (c + 32, … when a block has more). The warp
// walks the plan's blocks in a warp-uniform loop; for each block it holds that block's 2l + 1
// values of its channel in registers over the whole CSR segment and writes them once. Each
// path's contraction is Cg<l1, l2, l3> (equivariant/cg_poly.cuh): straight-line FMAs with the
// CG values as literals, no table reads and no filtering. The weights fold into one operand
// first (bw = coef·Σ_v W·x2[v], or its analogue), so a (path, channel) pair costs one
// contraction and 2l + 1 loads of each operand.
//
// Per receiver, edges are summed in CSR order by one lane per channel, and the dy sums over
// channels use a fixed butterfly: results are deterministic, with no atomics.
//
// The generic kernels of kernels/equivariant.cu stay for plans with any other tables.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/compute.cuh"
#include "common/reduce.cuh"
#include "equivariant/cg_poly.cuh"
#include "equivariant/tp_plan.cuh"
#include "kiln.h"

namespace kiln::equivariant {

template <int L>
using Degree = std::integral_constant<int, L>;

// |l1 − l2| ≤ l3 ≤ l1 + l2: the triples Cg has.
__host__ __device__ constexpr bool in_triangle(int l1, int l2, int l3) {
    return (l1 > l2 ? l1 - l2 : l2 - l1) <= l3 && l3 <= l1 + l2;
}

// f(Degree<l>{}) for a block of width 2l + 1 ≤ 9 (a wigner plan has no other widths).
template <typename F>
__device__ __forceinline__ void with_degree(int dim, F&& f) {
    switch (dim) {
        case 1: f(Degree<0>{}); break;
        case 3: f(Degree<1>{}); break;
        case 5: f(Degree<2>{}); break;
        case 7: f(Degree<3>{}); break;
        case 9: f(Degree<4>{}); break;
        default: break;
    }
}

// f(Degree<la>{}, Degree<lb>{}) for two widths.
template <typename F>
__device__ __forceinline__ void with_degree_pair(int dim_a, int dim_b, F&& f) {
    with_degree(dim_a, [&](auto la) { with_degree(dim_b, [&](auto lb) { f(la, lb); }); });
}

// A path's block on one side: x1 (off1, mul1, dim1), x2 (off2, …) or the output (off_out, …).
using PathField = int32_t kiln_tp_path::*;

static_assert(sizeof(kiln_tp_path) == 14 * sizeof(int32_t), "kiln_tp_path: 13 int32 fields and a float");

// Path p's descriptor, read by the whole warp in one load (lane f reads word f) and handed to
// every lane by shuffles: a per-field load would cost 14 warp instructions.
__device__ __forceinline__ kiln_tp_path load_path(const kiln_tp_plan& plan, int p, int lane) {
    const int32_t* words = reinterpret_cast<const int32_t*>(plan.paths + p);
    const int32_t mine = lane < 14 ? words[lane] : 0;
    kiln_tp_path P;
    P.off1 = __shfl_sync(kFullWarp, mine, 0);
    P.mul1 = __shfl_sync(kFullWarp, mine, 1);
    P.dim1 = __shfl_sync(kFullWarp, mine, 2);
    P.off2 = __shfl_sync(kFullWarp, mine, 3);
    P.mul2 = __shfl_sync(kFullWarp, mine, 4);
    P.dim2 = __shfl_sync(kFullWarp, mine, 5);
    P.off_out = __shfl_sync(kFullWarp, mine, 6);
    P.mul_out = __shfl_sync(kFullWarp, mine, 7);
    P.dim_out = __shfl_sync(kFullWarp, mine, 8);
    P.mode = __shfl_sync(kFullWarp, mine, 9);
    P.weight_offset = __shfl_sync(kFullWarp, mine, 10);
    P.cg_start = __shfl_sync(kFullWarp, mine, 11);
    P.cg_count = __shfl_sync(kFullWarp, mine, 12);
    P.coef = __int_as_float(__shfl_sync(kFullWarp, mine, 13));
    return P;
}

// Path p's coefficient in compute type C: P.coef, or the f64 table's for f64 storage.
template <typename C>
__device__ __forceinline__ C path_coef_of(const kiln_tp_plan& plan, const kiln_tp_path& P, int p) {
    if constexpr (std::is_same_v<C, double>) {
        return plan.coef_f64[p];
    } else {
        (void)plan;
        (void)p;
        return P.coef;
    }
}

// The block offsets of paths base..base+31 on one side, lane q holding path base + q's (−1 past
// the last path).
__device__ __forceinline__ int32_t window_offsets(const kiln_tp_plan& plan, PathField off, int base, int lane) {
    const int p = base + lane;
    return p < plan.n_paths ? plan.paths[p].*off : -1;
}

// Calls f(b) for each path b that is the first with its block on this side, in path order: the
// walk over the blocks. One load and 32 shuffles per window of 32 paths and each earlier one.
template <typename F>
__device__ __forceinline__ void for_each_block(const kiln_tp_plan& plan, PathField off, int lane, F&& f) {
    for (int base = 0; base < plan.n_paths; base += 32) {
        const int32_t mine = window_offsets(plan, off, base, lane);
        bool first = mine >= 0;
        for (int earlier = 0; earlier <= base; earlier += 32) {
            const int32_t theirs = earlier == base ? mine : window_offsets(plan, off, earlier, lane);
            for (int r = 0; r < 32; ++r) {
                const int32_t o = __shfl_sync(kFullWarp, theirs, r);
                if (o == mine && earlier + r < base + lane) first = false;
            }
        }
        unsigned leaders = __ballot_sync(kFullWarp, first);
        while (leaders != 0) {
            const int q = __ffs(leaders) - 1;
            leaders &= leaders - 1;
            f(base + q);
        }
    }
}

// Calls f(p) for every path p ≥ b whose block on this side starts at `key`, in path order.
template <typename F>
__device__ __forceinline__ void for_each_member(const kiln_tp_plan& plan, PathField off, int32_t key, int b, int lane,
                                                F&& f) {
    for (int base = b; base < plan.n_paths; base += 32) {
        unsigned members = __ballot_sync(kFullWarp, window_offsets(plan, off, base, lane) == key);
        while (members != 0) {
            const int q = __ffs(members) - 1;
            members &= members - 1;
            f(base + q);
        }
    }
}

// Whether the blocks of the paths cover a row of `width` on this side (blocks are disjoint).
__device__ __forceinline__ bool covers(const kiln_tp_plan& plan, PathField off, PathField mul, PathField dim,
                                       int64_t width, int lane) {
    int64_t covered = 0;
    for_each_block(plan, off, lane, [&](int b) {
        const kiln_tp_path B = load_path(plan, b, lane);
        covered += int64_t(B.*mul) * (B.*dim);
    });
    return covered == width;
}

// Zeros the elements of `row` no path's block covers (a block no path reaches sums nothing).
template <typename T>
__device__ __forceinline__ void zero_uncovered(const kiln_tp_plan& plan, PathField off, PathField mul, PathField dim,
                                               int64_t width, T* row, int lane) {
    for (int64_t o = lane; o < width; o += 32) {
        bool hit = false;
        for (int p = 0; p < plan.n_paths && !hit; ++p) {
            const kiln_tp_path& P = plan.paths[p];
            hit = o >= P.*off && o < P.*off + int64_t(P.*mul) * (P.*dim);
        }
        if (!hit) row[o] = from_compute<T>(compute_t<T>(0));
    }
}

// row[0..kD) in every lane: one load (lane j reads element j) and kD shuffles, for the operands
// every lane shares (an x2 channel, an x1 channel of a uvw path).
template <int kD, typename T, typename C>
__device__ __forceinline__ void broadcast_row(const T* row, int lane, C* out) {
    const C mine = lane < kD ? to_compute(row[lane]) : C(0);
#pragma unroll
    for (int j = 0; j < kD; ++j) out[j] = __shfl_sync(kFullWarp, mine, j);
}

// Lane `lane`'s entries of a per-edge index list idx[first .. first + 32) (e0 + lane itself
// where idx is NULL; 0 past `last`): each edge's index is then one shuffle away.
__device__ __forceinline__ int32_t lane_index(const int32_t* idx, int64_t first, int64_t last, int lane) {
    const int64_t t = first + lane;
    if (t >= last) return 0;
    return idx != nullptr ? idx[t] : static_cast<int32_t>(t);
}

// The index of weight (u, v, wo) of path P in a weight row: (u, v) for uvu, (u, v, wo) for uvw.
__device__ __forceinline__ int weight_index(const kiln_tp_path& P, bool uvu, int u, int v, int wo) {
    return P.weight_offset + (uvu ? u * P.mul2 + v : (u * P.mul2 + v) * P.mul_out + wo);
}

// Path P's contribution to output channel c: uvu coef·Σ_v W[c, v]·C(x1[c], x2[v]); uvw
// coef·Σ_uv W[u, v, c]·C(x1[u], x2[v]), as acc[k] += Σ_ij C_ijk a_i bw_j with
// bw = coef·Σ_v W·x2[v]. Every lane calls it (the shared rows are shuffled); `active` lanes
// (c < mul_out) load their own operands and accumulate.
template <typename T, typename C, int L1, int L2, int LO>
__device__ __forceinline__ void path_forward(const kiln_tp_path& P, C coef, int c, bool active, int lane, const T* x1,
                                             const T* x2, const T* we, C* acc) {
    constexpr int kD1 = 2 * L1 + 1;
    constexpr int kD2 = 2 * L2 + 1;
    const bool uvu = P.mode == KILN_TP_UVU;
    const int us = uvu ? 1 : P.mul1;
    for (int t = 0; t < us; ++t) {
        const int u = uvu ? c : t;
        C a[kD1] = {};
        if (!uvu) {
            broadcast_row<kD1>(x1 + P.off1 + u * kD1, lane, a);
        } else if (active) {
#pragma unroll
            for (int i = 0; i < kD1; ++i) a[i] = to_compute(x1[P.off1 + u * kD1 + i]);
        }
        C bw[kD2] = {};
        for (int v = 0; v < P.mul2; ++v) {
            C b[kD2];
            broadcast_row<kD2>(x2 + P.off2 + v * kD2, lane, b);
            if (!active) continue;
            const C wv = coef * to_compute(we[weight_index(P, uvu, u, v, c)]);
#pragma unroll
            for (int j = 0; j < kD2; ++j) bw[j] += wv * b[j];
        }
        if (active) Cg<L1, L2, LO>::forward(a, bw, acc);
    }
}

// out[n] = Σ_{e ∈ segment(n)} TP(x[src_e], y[e]; w_e): x [nodes, dim1], y [edges, dim2],
// w [weight_numel] or [edges, weight_numel], out [nodes, dim_out]. Per receiver, block and
// 32 channels: path by path, edge by edge, into registers; one write.
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_fwd_channel_kernel(kiln_tp_plan plan, const T* __restrict__ x, const T* __restrict__ y,
                          const T* __restrict__ w, int shared_weights, Graph g, int64_t nodes, T* __restrict__ out) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const PathField off = &kiln_tp_path::off_out;
    const PathField mul = &kiln_tp_path::mul_out;
    const PathField dim = &kiln_tp_path::dim_out;
    const bool full = covers(plan, off, mul, dim, plan.dim_out, lane);
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t n = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; n < nodes; n += warps) {
        const int64_t e0 = g.dst_ptr != nullptr ? g.dst_ptr[n] : n;
        const int64_t e1 = g.dst_ptr != nullptr ? g.dst_ptr[n + 1] : n + 1;
        T* row = out + n * plan.dim_out;
        if (!full) zero_uncovered(plan, off, mul, dim, plan.dim_out, row, lane);
        for_each_block(plan, off, lane, [&](int b) {
            const kiln_tp_path B = load_path(plan, b, lane);
            with_degree(B.dim_out, [&](auto lo) {
                constexpr int LO = decltype(lo)::value;
                constexpr int kDo = 2 * LO + 1;
                for (int c0 = 0; c0 < B.mul_out; c0 += 32) {
                    const int c = c0 + lane;
                    const bool active = c < B.mul_out;
                    C acc[kDo] = {};
                    for_each_member(plan, off, B.off_out, b, lane, [&](int p) {
                        const kiln_tp_path P = load_path(plan, p, lane);
                        const C coef = path_coef_of<C>(plan, P, p);
                        with_degree_pair(P.dim1, P.dim2, [&](auto l1, auto l2) {
                            constexpr int L1 = decltype(l1)::value;
                            constexpr int L2 = decltype(l2)::value;
                            if constexpr (in_triangle(L1, L2, LO)) {
                                for (int64_t first = e0; first < e1; first += 32) {
                                    const int32_t my_src = lane_index(g.src, first, e1, lane);
                                    const int count = static_cast<int>(e1 - first < 32 ? e1 - first : 32);
                                    for (int k = 0; k < count; ++k) {
                                        const int64_t e = first + k;
                                        const int64_t s = __shfl_sync(kFullWarp, my_src, k);
                                        const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
                                        path_forward<T, C, L1, L2, LO>(P, coef, c, active, lane, x + s * plan.dim1,
                                                                       y + e * plan.dim2, we, acc);
                                    }
                                }
                            }
                        });
                    });
                    if (active) {
#pragma unroll
                        for (int k = 0; k < kDo; ++k) row[B.off_out + int64_t(c) * kDo + k] = from_compute<T>(acc[k]);
                    }
                }
            });
        });
    }
}

// Path P's contribution to dx1 of x1's channel c given dout row go: uvu
// coef·Σ_v W[c, v]·Cᵀ(x2[v], go[c]); uvw coef·Σ_{v, wo} W[c, v, wo]·Cᵀ(x2[v], go[wo]).
// Every lane calls it; `active` lanes accumulate.
template <typename T, typename C, int L1, int L2, int LO>
__device__ __forceinline__ void path_dx(const kiln_tp_path& P, C coef, int c, bool active, int lane, const T* x2,
                                        const T* we, const T* go, C* acc) {
    constexpr int kD2 = 2 * L2 + 1;
    constexpr int kDo = 2 * LO + 1;
    const bool uvu = P.mode == KILN_TP_UVU;
    const int outs = uvu ? 1 : P.mul_out;
    for (int t = 0; t < outs; ++t) {
        const int wo = uvu ? c : t;
        C gk[kDo] = {};
        if (!uvu) {
            broadcast_row<kDo>(go + P.off_out + wo * kDo, lane, gk);
        } else if (active) {
#pragma unroll
            for (int k = 0; k < kDo; ++k) gk[k] = to_compute(go[P.off_out + wo * kDo + k]);
        }
        C bw[kD2] = {};
        for (int v = 0; v < P.mul2; ++v) {
            C b[kD2];
            broadcast_row<kD2>(x2 + P.off2 + v * kD2, lane, b);
            if (!active) continue;
            const C wv = coef * to_compute(we[weight_index(P, uvu, c, v, wo)]);
#pragma unroll
            for (int j = 0; j < kD2; ++j) bw[j] += wv * b[j];
        }
        if (active) Cg<L1, L2, LO>::adjoint_a(bw, gk, acc);
    }
}

// dx[n] = Σ over the edges e with src_e = n of ∂⟨dout[dst_e], TP(x[n], y[e])⟩/∂x[n]
// (dx: [nodes, dim1]).
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_dx_channel_kernel(kiln_tp_plan plan, const T* __restrict__ y, const T* __restrict__ w, int shared_weights,
                             Graph g, const T* __restrict__ dout, int64_t nodes, T* __restrict__ dx) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const PathField off = &kiln_tp_path::off1;
    const PathField mul = &kiln_tp_path::mul1;
    const PathField dim = &kiln_tp_path::dim1;
    const bool full = covers(plan, off, mul, dim, plan.dim1, lane);
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t n = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; n < nodes; n += warps) {
        const int64_t t0 = g.src_ptr != nullptr ? g.src_ptr[n] : n;
        const int64_t t1 = g.src_ptr != nullptr ? g.src_ptr[n + 1] : n + 1;
        T* row = dx + n * plan.dim1;
        if (!full) zero_uncovered(plan, off, mul, dim, plan.dim1, row, lane);
        for_each_block(plan, off, lane, [&](int b) {
            const kiln_tp_path B = load_path(plan, b, lane);
            with_degree(B.dim1, [&](auto l1) {
                constexpr int L1 = decltype(l1)::value;
                constexpr int kD1 = 2 * L1 + 1;
                for (int c0 = 0; c0 < B.mul1; c0 += 32) {
                    const int c = c0 + lane;
                    const bool active = c < B.mul1;
                    C acc[kD1] = {};
                    for_each_member(plan, off, B.off1, b, lane, [&](int p) {
                        const kiln_tp_path P = load_path(plan, p, lane);
                        const C coef = path_coef_of<C>(plan, P, p);
                        with_degree_pair(P.dim2, P.dim_out, [&](auto l2, auto lo) {
                            constexpr int L2 = decltype(l2)::value;
                            constexpr int LO = decltype(lo)::value;
                            if constexpr (in_triangle(L1, L2, LO)) {
                                for (int64_t first = t0; first < t1; first += 32) {
                                    const int32_t my_e = lane_index(g.src_perm, first, t1, lane);
                                    const int32_t my_d = first + lane < t1 && g.dst != nullptr ? g.dst[my_e] : my_e;
                                    const int count = static_cast<int>(t1 - first < 32 ? t1 - first : 32);
                                    for (int k = 0; k < count; ++k) {
                                        const int64_t e = __shfl_sync(kFullWarp, my_e, k);
                                        const int64_t d = __shfl_sync(kFullWarp, my_d, k);
                                        const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
                                        path_dx<T, C, L1, L2, LO>(P, coef, c, active, lane, y + e * plan.dim2, we,
                                                                  dout + d * plan.dim_out, acc);
                                    }
                                }
                            }
                        });
                    });
                    if (active) {
#pragma unroll
                        for (int i = 0; i < kD1; ++i) row[B.off1 + int64_t(c) * kD1 + i] = from_compute<T>(acc[i]);
                    }
                }
            });
        });
    }
}

// Path P's share of one edge's dy[v] and its weight gradients at x2 channel v (b = x2[v]): per
// lane's channels, t = Cᵀ(x1[u], go[wo]) (Σ_ik C_ijk a_i g_k), dw[u, v(, wo)] = coef·⟨t, b⟩ and
// dacc += coef·W[u, v(, wo)]·t. Lanes own u (uvu) or wo (uvw); every lane calls it.
template <typename T, typename C, typename W, int L1, int L2, int LO>
__device__ __forceinline__ void path_dy_dw(const kiln_tp_path& P, C coef, int v, const C* b, int lane, const T* x1,
                                           const T* we, const T* go, W* dw, C* dacc) {
    constexpr int kD1 = 2 * L1 + 1;
    constexpr int kD2 = 2 * L2 + 1;
    constexpr int kDo = 2 * LO + 1;
    const bool uvu = P.mode == KILN_TP_UVU;
    for (int c0 = 0; c0 < P.mul_out; c0 += 32) {
        const int c = c0 + lane;
        const bool active = c < P.mul_out;
        C gk[kDo] = {};
        if (active) {
#pragma unroll
            for (int k = 0; k < kDo; ++k) gk[k] = to_compute(go[P.off_out + c * kDo + k]);
        }
        const int us = uvu ? 1 : P.mul1;
        for (int s = 0; s < us; ++s) {
            const int u = uvu ? c : s;
            C a[kD1] = {};
            if (!uvu) {
                broadcast_row<kD1>(x1 + P.off1 + u * kD1, lane, a);
            } else if (active) {
#pragma unroll
                for (int i = 0; i < kD1; ++i) a[i] = to_compute(x1[P.off1 + u * kD1 + i]);
            }
            if (!active) continue;
            C t[kD2] = {};
            Cg<L1, L2, LO>::adjoint_b(a, gk, t);
            const int wi = weight_index(P, uvu, u, v, c);
            const C wv = coef * to_compute(we[wi]);
            C dot = C(0);
#pragma unroll
            for (int j = 0; j < kD2; ++j) {
                dot += t[j] * b[j];
                dacc[j] += wv * t[j];
            }
            dw[wi] = from_compute<W>(coef * dot);
        }
    }
}

// Per edge e (a warp each): dy[e] and the edge's weight gradients dw_edge[e] (dy: [edges, dim2];
// dw_edge: [edges, weight_numel], the caller's dw or, with shared weights, the workspace in the
// compute type).
template <typename T, typename W>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_edge_channel_kernel(kiln_tp_plan plan, const T* __restrict__ x, const T* __restrict__ y,
                               const T* __restrict__ w, int shared_weights, Graph g, const T* __restrict__ dout,
                               int64_t edges, T* __restrict__ dy, W* __restrict__ dw_edge) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const PathField off = &kiln_tp_path::off2;
    const PathField mul = &kiln_tp_path::mul2;
    const PathField dim = &kiln_tp_path::dim2;
    const bool full = covers(plan, off, mul, dim, plan.dim2, lane);
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t e = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; e < edges; e += warps) {
        const int64_t s = g.src != nullptr ? g.src[e] : e;
        const int64_t d = g.dst != nullptr ? g.dst[e] : e;
        const T* x1 = x + s * plan.dim1;
        const T* x2 = y + e * plan.dim2;
        const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
        const T* go = dout + d * plan.dim_out;
        W* dw = dw_edge + e * plan.weight_numel;
        T* row = dy + e * plan.dim2;
        if (!full) zero_uncovered(plan, off, mul, dim, plan.dim2, row, lane);
        for_each_block(plan, off, lane, [&](int b) {
            const kiln_tp_path B = load_path(plan, b, lane);
            with_degree(B.dim2, [&](auto l2) {
                constexpr int L2 = decltype(l2)::value;
                constexpr int kD2 = 2 * L2 + 1;
                for (int v = 0; v < B.mul2; ++v) {
                    C xv[kD2];
                    broadcast_row<kD2>(x2 + B.off2 + v * kD2, lane, xv);
                    C dacc[kD2] = {};
                    for_each_member(plan, off, B.off2, b, lane, [&](int p) {
                        const kiln_tp_path P = load_path(plan, p, lane);
                        const C coef = path_coef_of<C>(plan, P, p);
                        with_degree_pair(P.dim1, P.dim_out, [&](auto l1, auto lo) {
                            constexpr int L1 = decltype(l1)::value;
                            constexpr int LO = decltype(lo)::value;
                            if constexpr (in_triangle(L1, L2, LO)) {
                                path_dy_dw<T, C, W, L1, L2, LO>(P, coef, v, xv, lane, x1, we, go, dw, dacc);
                            }
                        });
                    });
                    // Σ over the lanes' channels, in a fixed butterfly; lane j writes component j.
                    C mine = C(0);
#pragma unroll
                    for (int j = 0; j < kD2; ++j) {
                        C total = dacc[j];
#pragma unroll
                        for (int m = 16; m > 0; m >>= 1) total += __shfl_xor_sync(kFullWarp, total, m);
                        if (lane == j) mine = total;
                    }
                    if (lane < kD2) row[B.off2 + int64_t(v) * kD2 + lane] = from_compute<T>(mine);
                }
            });
        });
    }
}

}  // namespace kiln::equivariant

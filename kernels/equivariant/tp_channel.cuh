// Channel-parallel tensor products and graph convolution, for plans whose CG tables are
// wigner_3j (kiln_tp_plan.wigner_cg: every plan kiln::equivariant builds).
//
// A warp owns one row (a receiver for the forward, a sender for dx, an edge for dy and dw) and
// its lanes own channels: V consecutive channels a lane (V = 4 on vector-ready blocks, else 1),
// 32·V channels a pass. The warp walks the plan's blocks in a warp-uniform loop; for each block
// it holds that block's 2l + 1 values of its channels in registers over the whole CSR segment,
// path by path and edge by edge, and writes them once. Each path's contraction is
// Cg<l1, l2, l3> (equivariant/cg_poly.cuh): straight-line FMAs with the CG values as literals,
// no table reads and no filtering. The weights fold into one operand first
// (bw = coef·Σ_v W·x2[v], or its analogue), so a (path, channel) pair costs one contraction.
//
// Code size: the loops exist once per kernel, dtype and V; operands live in arrays of the
// largest width (9) indexed by constants only, and a warp-uniform switch on the path's triple
// (with_cg) picks the contraction. Templating the loops on the triple instead (65 copies of
// each loop nest) took cicc minutes per architecture and ten times that with V = 4.
//
// Per receiver, edges are summed in CSR order by one lane per channel, and the dy sums over
// channels use a fixed butterfly: results are deterministic, with no atomics.
//
// The generic kernels of kernels/equivariant.cu stay for plans with any other tables.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/compute.cuh"
#include "common/reduce.cuh"
#include "equivariant/cg_poly.cuh"
#include "equivariant/tp_plan.cuh"
#include "kiln.h"

namespace kiln::equivariant {

// Lambdas here are inlined whatever their size: they capture register arrays (accumulators,
// operands) by reference, and a lambda left out of line would put them in local memory.
#define KILN_INLINE_LAMBDA __attribute__((always_inline))

template <int L>
using Degree = std::integral_constant<int, L>;

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

// The widest block (l = 4): operand arrays have this many entries, those past a block's width
// stay 0.
constexpr int kMaxDim = 9;

// The dispatch code of a path's widths (2l1 + 1, 2l2 + 1, 2l3 + 1).
__device__ __forceinline__ int triple_code(int d1, int d2, int d3) { return (d1 / 2) * 25 + (d2 / 2) * 5 + d3 / 2; }

// f(Cg<l1, l2, l3>{}) for the triple of `code` (warp-uniform: one indexed branch).
template <typename F>
__device__ __forceinline__ void with_cg(int code, F&& f) {
    switch (code) {
#define KILN_CG_CASE(l1, l2, l3)    \
    case (l1) * 25 + (l2) * 5 + (l3): \
        f(Cg<l1, l2, l3>{});         \
        return;
        KILN_CG_TRIPLES(KILN_CG_CASE)
#undef KILN_CG_CASE
        default: return;
    }
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

// The block offsets of paths base..base+31 on one side, lane q holding path base + q's (−1 past
// the last path).
__device__ __forceinline__ int32_t window_offsets(const kiln_tp_plan& plan, PathField off, int base, int lane) {
    const int p = base + lane;
    return p < plan.n_paths ? plan.paths[p].*off : -1;
}

// Whether this lane's path (base + lane, block offset `mine`, −1 past the end) is the first
// with its block on this side. One load and 32 shuffles per earlier window of 32 paths.
__device__ __forceinline__ bool first_of_block(const kiln_tp_plan& plan, PathField off, int base, int32_t mine,
                                               int lane) {
    bool first = mine >= 0;
    for (int earlier = 0; earlier <= base; earlier += 32) {
        const int32_t theirs = earlier == base ? mine : window_offsets(plan, off, earlier, lane);
        for (int r = 0; r < 32; ++r) {
            const int32_t o = __shfl_sync(kFullWarp, theirs, r);
            if (o == mine && earlier + r < base + lane) first = false;
        }
    }
    return first;
}

// Calls f(b) for each path b that is the first with its block on this side, in path order: the
// walk over the blocks.
template <typename F>
__device__ __forceinline__ void for_each_block(const kiln_tp_plan& plan, PathField off, int lane, F&& f) {
    for (int base = 0; base < plan.n_paths; base += 32) {
        const int32_t mine = window_offsets(plan, off, base, lane);
        unsigned leaders = __ballot_sync(kFullWarp, first_of_block(plan, off, base, mine, lane));
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
    // Each window's leaders read their own block's size (3 loads a window), then a warp sum.
    int64_t covered = 0;
    for (int base = 0; base < plan.n_paths; base += 32) {
        const int32_t mine = window_offsets(plan, off, base, lane);
        const bool first = first_of_block(plan, off, base, mine, lane);
        const kiln_tp_path* P = plan.paths + base + lane;
        int64_t size = first ? int64_t(P->*mul) * (P->*dim) : 0;
        for (int m = 16; m > 0; m >>= 1) size += __shfl_xor_sync(kFullWarp, size, m);
        covered += size;
    }
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

// row[0..dim) in every lane (dim ≤ kMaxDim, warp-uniform): one load (lane j reads element j)
// and dim shuffles, for the operands every lane shares (an x2 channel, a uvw path's x1 or dout
// channel).
template <typename T, typename C>
__device__ __forceinline__ void broadcast_row(const T* row, int dim, int lane, C (&out)[kMaxDim]) {
    const C mine = lane < dim ? to_compute(row[lane]) : C(0);
#pragma unroll
    for (int j = 0; j < kMaxDim; ++j) out[j] = j < dim ? __shfl_sync(kFullWarp, mine, j) : C(0);
}

// Lane `lane`'s entries of a per-edge index list idx[first .. first + 32) (e0 + lane itself
// where idx is NULL; 0 past `last`): each edge's index is then one shuffle away.
__device__ __forceinline__ int32_t lane_index(const int32_t* idx, int64_t first, int64_t last, int lane) {
    const int64_t t = first + lane;
    if (t >= last) return 0;
    return idx != nullptr ? idx[t] : static_cast<int32_t>(t);
}

// Calls f(e, o) for each edge e of the segment [first, last) of an order (`perm`: the segment's
// edge ids, NULL for edge order), o = other[e] being the edge's node on the far side (e itself
// where other is NULL), in segment order. The ids are read 32 at a time, one lane each, and
// handed to the whole warp by shuffles.
template <typename F>
__device__ __forceinline__ void for_each_segment_edge(const int32_t* perm, const int32_t* other, int64_t first,
                                                      int64_t last, int lane, F&& f) {
    for (int64_t base = first; base < last; base += 32) {
        const int32_t my_e = lane_index(perm, base, last, lane);
        const int32_t my_o = base + lane < last && other != nullptr ? other[my_e] : my_e;
        const int count = static_cast<int>(last - base < 32 ? last - base : 32);
        for (int k = 0; k < count; ++k) {
            f(int64_t(__shfl_sync(kFullWarp, my_e, k)), int64_t(__shfl_sync(kFullWarp, my_o, k)));
        }
    }
}

// N consecutive elements at p into out, in the widest accesses N·sizeof(T) bytes allow (16, 8,
// or one element each): 4 channels of an l = 1 block in f32 are 3 LDG.128 instead of 12 LDG.32.
// p must be aligned to that access (the callers' vector-ready blocks guarantee it).
template <typename T>
__device__ __forceinline__ constexpr int run_access_bytes(int n) {
    return (n * int(sizeof(T))) % 16 == 0 ? 16 : (n * int(sizeof(T))) % 8 == 0 ? 8 : int(sizeof(T));
}

// (The memcpy goes through void*: __half and __nv_bfloat16 have protected members, and the host
// compiler's -Wclass-memaccess would flag a typed copy into them.)
template <typename T, int N, typename C>
__device__ __forceinline__ void load_run(const T* p, C* out) {
    constexpr int kBytes = run_access_bytes<T>(N);
    constexpr int kPer = kBytes / int(sizeof(T));
#pragma unroll
    for (int a = 0; a < N / kPer; ++a) {
        T tmp[kPer];
        if constexpr (kBytes == 16) {
            const uint4 raw = reinterpret_cast<const uint4*>(p)[a];
            memcpy(static_cast<void*>(tmp), &raw, 16);
        } else if constexpr (kBytes == 8 && sizeof(T) < 8) {
            const uint2 raw = reinterpret_cast<const uint2*>(p)[a];
            memcpy(static_cast<void*>(tmp), &raw, 8);
        } else {
            tmp[0] = p[a];
        }
#pragma unroll
        for (int k = 0; k < kPer; ++k) out[a * kPer + k] = to_compute(tmp[k]);
    }
}

template <typename T, int N, typename C>
__device__ __forceinline__ void store_run(T* p, const C* in) {
    constexpr int kBytes = run_access_bytes<T>(N);
    constexpr int kPer = kBytes / int(sizeof(T));
#pragma unroll
    for (int a = 0; a < N / kPer; ++a) {
        T tmp[kPer];
#pragma unroll
        for (int k = 0; k < kPer; ++k) tmp[k] = from_compute<T>(in[a * kPer + k]);
        if constexpr (kBytes == 16) {
            uint4 raw;
            memcpy(&raw, static_cast<const void*>(tmp), 16);
            reinterpret_cast<uint4*>(p)[a] = raw;
        } else if constexpr (kBytes == 8 && sizeof(T) < 8) {
            uint2 raw;
            memcpy(&raw, static_cast<const void*>(tmp), 8);
            reinterpret_cast<uint2*>(p)[a] = raw;
        } else {
            p[a] = tmp[0];
        }
    }
}

// Channels per lane: kVecChannels where a block is vector-ready, else 1. A lane's channels are
// consecutive, so their elements are one contiguous run of each operand row.
constexpr int kVecChannels = 4;

// Whether path P's rows can be read kVecChannels channels at a time: offsets, channel counts
// and its weight offset multiples of 4 (with rows whose widths are, and 16-byte aligned
// tensors: the launch's `vector_rows`), so every run starts on its access size.
__device__ __forceinline__ bool vector_ready(const kiln_tp_path& P) {
    return (P.off1 | P.mul1 | P.off_out | P.mul_out | P.weight_offset) % kVecChannels == 0;
}

// Whether every path of the block whose first path is B (path b) on this side is vector-ready.
__device__ __forceinline__ bool block_vector_ready(const kiln_tp_plan& plan, PathField off, const kiln_tp_path& B,
                                                   int b, int lane, int vector_rows) {
    bool ready = vector_rows != 0 && vector_ready(B);
    if (ready) {
        for_each_member(plan, off, B.*off, b + 1, lane, [&](int p) KILN_INLINE_LAMBDA {
            ready = ready && vector_ready(load_path(plan, p, lane));
        });
    }
    return ready;
}

// Calls f(std::integral_constant<int, V>{}) with V = kVecChannels or 1. f64 storage keeps one
// channel a lane: 4 channels' operands and accumulators in f64 take more than 255 registers
// (ptxas spilled ~0.5 KB a thread).
template <typename T, typename F>
__device__ __forceinline__ void with_channels(bool vector, F&& f) {
    if (sizeof(T) < 8 && vector) {
        f(std::integral_constant<int, sizeof(T) < 8 ? kVecChannels : 1>{});
    } else {
        f(std::integral_constant<int, 1>{});
    }
}

// V channels' rows of width dim (≤ kMaxDim, warp-uniform) starting at p, one contiguous run of
// V·dim elements, into out[q][i] (entries past dim untouched): the run is read in the widest
// accesses its length allows (load_run).
template <int V, typename T, typename C>
__device__ __forceinline__ void load_channels(const T* p, int dim, C (&out)[V][kMaxDim]) {
    with_degree(dim, [&](auto l) KILN_INLINE_LAMBDA {
        constexpr int kD = 2 * decltype(l)::value + 1;
        C flat[V * kD];
        load_run<T, V * kD>(p, flat);
#pragma unroll
        for (int q = 0; q < V; ++q) {
#pragma unroll
            for (int i = 0; i < kD; ++i) out[q][i] = flat[q * kD + i];
        }
    });
}

// Stores V channels' rows as load_channels reads them, or with `add` adds them to what is there
// (the double backward sums its passes into one output).
template <int V, typename T, typename C>
__device__ __forceinline__ void store_channels(T* p, int dim, bool add, const C (&in)[V][kMaxDim]) {
    with_degree(dim, [&](auto l) KILN_INLINE_LAMBDA {
        constexpr int kD = 2 * decltype(l)::value + 1;
        C flat[V * kD];
        if (add) {
            load_run<T, V * kD>(p, flat);
        } else {
#pragma unroll
            for (int i = 0; i < V * kD; ++i) flat[i] = C(0);
        }
#pragma unroll
        for (int q = 0; q < V; ++q) {
#pragma unroll
            for (int i = 0; i < kD; ++i) flat[q * kD + i] += in[q][i];
        }
        store_run<T, V * kD>(p, flat);
    });
}

// The index of weight (u, v, wo) of path P in a weight row: (u, v) for uvu, (u, v, wo) for uvw.
__device__ __forceinline__ int weight_index(const kiln_tp_path& P, bool uvu, int u, int v, int wo) {
    return P.weight_offset + (uvu ? u * P.mul2 + v : (u * P.mul2 + v) * P.mul_out + wo);
}

// V weights of one lane's channels: index i0 + q·stride for q < V (one vector access when they
// are consecutive: stride 1, i0 a multiple of V).
template <int V, typename T, typename C>
__device__ __forceinline__ void load_weights(const T* we, int i0, int stride, C* out) {
    if (V > 1 && stride == 1) {
        load_run<T, V>(we + i0, out);
    } else {
#pragma unroll
        for (int q = 0; q < V; ++q) out[q] = to_compute(we[i0 + q * stride]);
    }
}

// Stores V weight gradients like load_weights reads them, or with `accumulate` adds them to
// what is there (a partition's row of the shared-weight partials: the same lane wrote it for
// the partition's previous edge, so the sum runs in edge order without atomics).
template <int V, typename W, typename C>
__device__ __forceinline__ void store_weights(W* dw, int i0, int stride, bool accumulate, const C* in) {
    C sum[V];
    if (accumulate) {
        load_weights<V>(dw, i0, stride, sum);
#pragma unroll
        for (int q = 0; q < V; ++q) sum[q] += in[q];
    } else {
#pragma unroll
        for (int q = 0; q < V; ++q) sum[q] = in[q];
    }
    if (V > 1 && stride == 1) {
        store_run<W, V>(dw + i0, sum);
    } else {
#pragma unroll
        for (int q = 0; q < V; ++q) dw[i0 + q * stride] = from_compute<W>(sum[q]);
    }
}

// An operand of a path for the lane's V channels: its own channels' rows (a uvu path's x1, dout)
// or one row every lane shares (uvw), copied to each channel.
template <int V, typename T, typename C>
__device__ __forceinline__ void load_operand(bool shared_row, bool active, const T* own, const T* shared, int dim,
                                             int lane, C (&out)[V][kMaxDim]) {
    if (shared_row) {
        broadcast_row(shared, dim, lane, out[0]);
#pragma unroll
        for (int q = 1; q < V; ++q) {
#pragma unroll
            for (int i = 0; i < kMaxDim; ++i) out[q][i] = out[0][i];
        }
    } else if (active) {
        load_channels<V>(own, dim, out);
    }
}

// bw[q] += coef·W_q·x2[v] for v < mul2, the weights of channel q at i0(v) + q·stride: the x2
// side of a forward or dx contraction with the weights folded in. Every lane calls it.
template <int V, typename T, typename C, typename Index>
__device__ __forceinline__ void fold_weights(const kiln_tp_path& P, C coef, bool active, int lane, const T* x2,
                                             const T* we, Index i0, int stride, C (&bw)[V][kMaxDim]) {
    for (int v = 0; v < P.mul2; ++v) {
        C b[kMaxDim];
        broadcast_row(x2 + P.off2 + v * P.dim2, P.dim2, lane, b);
        if (!active) continue;
        C wv[V];
        load_weights<V>(we, i0(v), stride, wv);
#pragma unroll
        for (int q = 0; q < V; ++q) {
#pragma unroll
            for (int j = 0; j < kMaxDim; ++j) bw[q][j] += coef * wv[q] * b[j];
        }
    }
}

// Path P's contribution to output channels c..c+V: uvu coef·Σ_v W[c, v]·C(x1[c], x2[v]); uvw
// coef·Σ_uv W[u, v, c]·C(x1[u], x2[v]), as acc[q][k] += Σ_ij C_ijk a_i bw_j with
// bw = coef·Σ_v W·x2[v]. Every lane calls it (the shared rows are shuffled); `active` lanes
// (c < mul_out) load their own operands and accumulate.
template <int V, typename T, typename C>
__device__ __forceinline__ void path_forward(const kiln_tp_path& P, int code, C coef, int c, bool active, int lane,
                                             const T* x1, const T* x2, const T* we, C (&acc)[V][kMaxDim]) {
    const bool uvu = P.mode == KILN_TP_UVU;
    const int us = uvu ? 1 : P.mul1;
    for (int t = 0; t < us; ++t) {
        C a[V][kMaxDim] = {};
        load_operand<V>(!uvu, active, x1 + P.off1 + c * P.dim1, x1 + P.off1 + t * P.dim1, P.dim1, lane, a);
        C bw[V][kMaxDim] = {};
        // Channel q's weight at x2 channel v: (c + q, v) for uvu, (t, v, c + q) for uvw.
        const auto index = [&](int v) KILN_INLINE_LAMBDA {
            return uvu ? weight_index(P, true, c, v, 0) : weight_index(P, false, t, v, c);
        };
        fold_weights<V>(P, coef, active, lane, x2, we, index, uvu ? P.mul2 : 1, bw);
        if (!active) continue;
        with_cg(code, [&](auto cg) KILN_INLINE_LAMBDA {
#pragma unroll
            for (int q = 0; q < V; ++q) decltype(cg)::forward(a[q], bw[q], acc[q]);
        });
    }
}

// out[n] = Σ_{e ∈ segment(n)} TP(x[src_e], y[e]; w_e), the segment's edges in the receiver
// order (g.dst_perm, or edge order): x [nodes, dim1], y [edges, dim2],
// w [weight_numel] or [edges, weight_numel], out [nodes, dim_out]. Per receiver, block and
// 32·V channels: path by path, edge by edge, into registers; one write. `vector_rows`: the row
// widths are multiples of 4 and the tensors 16-byte aligned (the launcher's check).
// `accumulate`: add to out instead of writing it (the double backward's passes).
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_fwd_channel_kernel(kiln_tp_plan plan, const T* __restrict__ x, const T* __restrict__ y,
                          const T* __restrict__ w, int shared_weights, Graph g, int vector_rows, int accumulate,
                          int64_t nodes, T* __restrict__ out) {
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
        if (!full && accumulate == 0) zero_uncovered(plan, off, mul, dim, plan.dim_out, row, lane);
        for_each_block(plan, off, lane, [&](int b) KILN_INLINE_LAMBDA {
            const kiln_tp_path B = load_path(plan, b, lane);
            const bool vector = block_vector_ready(plan, off, B, b, lane, vector_rows);
            with_channels<T>(vector, [&](auto vtag) KILN_INLINE_LAMBDA {
                constexpr int V = decltype(vtag)::value;
                for (int c0 = 0; c0 < B.mul_out; c0 += 32 * V) {
                    const int c = c0 + lane * V;
                    const bool active = c < B.mul_out;
                    C acc[V][kMaxDim] = {};
                    for_each_member(plan, off, B.off_out, b, lane, [&](int p) KILN_INLINE_LAMBDA {
                        const kiln_tp_path P = p == b ? B : load_path(plan, p, lane);  // B is the first
                        const C coef = path_coef_of<C>(plan, P, p);
                        const int code = triple_code(P.dim1, P.dim2, P.dim_out);
                        const auto edge = [&](int64_t e, int64_t s) KILN_INLINE_LAMBDA {
                            const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
                            path_forward<V>(P, code, coef, c, active, lane, x + s * plan.dim1, y + e * plan.dim2, we,
                                            acc);
                        };
                        for_each_segment_edge(g.dst_perm, g.src, e0, e1, lane, edge);
                    });
                    if (active) {
                        store_channels<V>(row + B.off_out + int64_t(c) * B.dim_out, B.dim_out, accumulate != 0, acc);
                    }
                }
            });
        });
    }
}

// Whether the fused backward (kernels/equivariant_fused.cu) applies to this plan and launch:
// every path uvu, whose lanes own the same channel of x1 and of the output, so a sender-order
// walk holds everything the edge's dy and dw need; and every path vector-ready with vector rows
// (the fused kernel exists at 4 channels a lane only, to keep its compile time down).
// Warp-uniform: one load per lane per 32 paths.
__device__ __forceinline__ bool fused_backward_applies(const kiln_tp_plan& plan, int vector_rows, int lane) {
    bool mine = vector_rows != 0;
    for (int p = lane; p < plan.n_paths; p += 32) {
        const kiln_tp_path& P = plan.paths[p];
        mine = mine && P.mode == KILN_TP_UVU && vector_ready(P);
    }
    return __all_sync(kFullWarp, mine);
}

// Path P's contribution to dx1 of x1's channels c..c+V given dout row go: uvu
// coef·Σ_v W[c, v]·Cᵀ(x2[v], go[c]); uvw coef·Σ_{v, wo} W[c, v, wo]·Cᵀ(x2[v], go[wo]).
// Every lane calls it; `active` lanes accumulate.
template <int V, typename T, typename C>
__device__ __forceinline__ void path_dx(const kiln_tp_path& P, int code, C coef, int c, bool active, int lane,
                                        const T* x2, const T* we, const T* go, C (&acc)[V][kMaxDim]) {
    const bool uvu = P.mode == KILN_TP_UVU;
    const int outs = uvu ? 1 : P.mul_out;
    for (int t = 0; t < outs; ++t) {
        C gk[V][kMaxDim] = {};
        load_operand<V>(!uvu, active, go + P.off_out + c * P.dim_out, go + P.off_out + t * P.dim_out, P.dim_out, lane,
                        gk);
        C bw[V][kMaxDim] = {};
        // Channel q's weight at x2 channel v: (c + q, v) for uvu, (c + q, v, t) for uvw.
        const auto index = [&](int v) KILN_INLINE_LAMBDA {
            return uvu ? weight_index(P, true, c, v, 0) : weight_index(P, false, c, v, t);
        };
        fold_weights<V>(P, coef, active, lane, x2, we, index, uvu ? P.mul2 : P.mul2 * P.mul_out, bw);
        if (!active) continue;
        with_cg(code, [&](auto cg) KILN_INLINE_LAMBDA {
#pragma unroll
            for (int q = 0; q < V; ++q) decltype(cg)::adjoint_a(bw[q], gk[q], acc[q]);
        });
    }
}

// dx[n] = Σ over the edges e with src_e = n of ∂⟨dout[dst_e], TP(x[n], y[e])⟩/∂x[n]
// (dx: [nodes, dim1]); `accumulate`: add to dx instead of writing it. `fused`: the fused
// backward (kernels/equivariant_fused.cu) was launched before, so where it applies
// (fused_backward_applies) it wrote dx and this kernel returns at once.
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_dx_channel_kernel(kiln_tp_plan plan, const T* __restrict__ y, const T* __restrict__ w, int shared_weights,
                             Graph g, int vector_rows, int accumulate, const T* __restrict__ dout, int64_t nodes,
                             T* __restrict__ dx, int fused) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    if (fused != 0 && fused_backward_applies(plan, vector_rows, lane)) return;
    const PathField off = &kiln_tp_path::off1;
    const PathField mul = &kiln_tp_path::mul1;
    const PathField dim = &kiln_tp_path::dim1;
    const bool full = covers(plan, off, mul, dim, plan.dim1, lane);
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t n = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; n < nodes; n += warps) {
        const int64_t t0 = g.src_ptr != nullptr ? g.src_ptr[n] : n;
        const int64_t t1 = g.src_ptr != nullptr ? g.src_ptr[n + 1] : n + 1;
        T* row = dx + n * plan.dim1;
        if (!full && accumulate == 0) zero_uncovered(plan, off, mul, dim, plan.dim1, row, lane);
        for_each_block(plan, off, lane, [&](int b) KILN_INLINE_LAMBDA {
            const kiln_tp_path B = load_path(plan, b, lane);
            const bool vector = block_vector_ready(plan, off, B, b, lane, vector_rows);
            with_channels<T>(vector, [&](auto vtag) KILN_INLINE_LAMBDA {
                constexpr int V = decltype(vtag)::value;
                for (int c0 = 0; c0 < B.mul1; c0 += 32 * V) {
                    const int c = c0 + lane * V;
                    const bool active = c < B.mul1;
                    C acc[V][kMaxDim] = {};
                    for_each_member(plan, off, B.off1, b, lane, [&](int p) KILN_INLINE_LAMBDA {
                        const kiln_tp_path P = p == b ? B : load_path(plan, p, lane);  // B is the first
                        const C coef = path_coef_of<C>(plan, P, p);
                        const int code = triple_code(P.dim1, P.dim2, P.dim_out);
                        const auto edge = [&](int64_t e, int64_t d) KILN_INLINE_LAMBDA {
                            const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
                            path_dx<V>(P, code, coef, c, active, lane, y + e * plan.dim2, we, dout + d * plan.dim_out,
                                       acc);
                        };
                        for_each_segment_edge(g.src_perm, g.dst, t0, t1, lane, edge);
                    });
                    if (active) store_channels<V>(row + B.off1 + int64_t(c) * B.dim1, B.dim1, accumulate != 0, acc);
                }
            });
        });
    }
}

// Σ over the warp of each of the first `dim` components of `dacc`, in a fixed butterfly (the same
// order on every lane and every run: deterministic, no atomics); lane j gets component j's sum,
// the other lanes 0.
template <typename C>
__device__ __forceinline__ C warp_sum_to_lane(const C (&dacc)[kMaxDim], int dim, int lane) {
    C mine = C(0);
#pragma unroll
    for (int j = 0; j < kMaxDim; ++j) {
        if (j >= dim) break;
        C total = dacc[j];
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) total += __shfl_xor_sync(kFullWarp, total, m);
        if (lane == j) mine = total;
    }
    return mine;
}

// Path P's share of one edge's dy[v] and its weight gradients at x2 channel v (b = x2[v]): per
// lane's channels, t = Cᵀ(x1[u], go[wo]) (Σ_ik C_ijk a_i g_k), dw[u, v(, wo)] = coef·⟨t, b⟩ and
// dacc += coef·W[u, v(, wo)]·t. Lanes own u (uvu) or wo (uvw), V at a time; every lane calls it.
template <int V, typename T, typename C, typename W>
__device__ __forceinline__ void path_dy_dw(const kiln_tp_path& P, int code, C coef, int v, const C (&b)[kMaxDim],
                                           int lane, const T* x1, const T* we, const T* go, W* dw, bool accumulate,
                                           C (&dacc)[kMaxDim]) {
    const bool uvu = P.mode == KILN_TP_UVU;
    for (int c0 = 0; c0 < P.mul_out; c0 += 32 * V) {
        const int c = c0 + lane * V;
        const bool active = c < P.mul_out;
        C gk[V][kMaxDim] = {};
        if (active) load_channels<V>(go + P.off_out + c * P.dim_out, P.dim_out, gk);
        const int us = uvu ? 1 : P.mul1;
        for (int s = 0; s < us; ++s) {
            C a[V][kMaxDim] = {};
            load_operand<V>(!uvu, active, x1 + P.off1 + c * P.dim1, x1 + P.off1 + s * P.dim1, P.dim1, lane, a);
            if (!active) continue;
            const int i0 = uvu ? weight_index(P, true, c, v, 0) : weight_index(P, false, s, v, c);
            const int stride = uvu ? P.mul2 : 1;
            C wv[V];
            load_weights<V>(we, i0, stride, wv);
            C t[V][kMaxDim] = {};
            with_cg(code, [&](auto cg) KILN_INLINE_LAMBDA {
#pragma unroll
                for (int q = 0; q < V; ++q) decltype(cg)::adjoint_b(a[q], gk[q], t[q]);
            });
            C grad[V];
#pragma unroll
            for (int q = 0; q < V; ++q) {
                C dot = C(0);
#pragma unroll
                for (int j = 0; j < kMaxDim; ++j) {
                    dot += t[q][j] * b[j];
                    dacc[j] += coef * wv[q] * t[q][j];
                }
                grad[q] = coef * dot;
            }
            if (dw != nullptr) store_weights<V>(dw, i0, stride, accumulate, grad);
        }
    }
}

// Per edge e (a warp each): dy[e] and the edge's weight gradients (dy: [edges, dim2]). Per-edge
// weights: dw_rows is the caller's dw [edges, weight_numel], row e. Shared weights: `parts`
// warps each take a fixed contiguous range of edges (EdgeRange) and sum their edges' gradients
// into their own row of dw_rows [parts, weight_numel] (the workspace, compute type), which
// sum_weight_grads_kernel then sums in order: deterministic, no atomics, and parts rows
// instead of one per edge. For the double backward's passes: dy or dw_rows may be NULL (not
// wanted), and `accumulate` adds to dy and the per-edge dw instead of writing them. `fused`:
// as tp_bwd_dx_channel_kernel's (an all-uvu plan's dy and dw are written already).
template <typename T, typename W>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_edge_channel_kernel(kiln_tp_plan plan, const T* __restrict__ x, const T* __restrict__ y,
                               const T* __restrict__ w, int shared_weights, Graph g, int vector_rows, int accumulate,
                               const T* __restrict__ dout, int64_t edges, int64_t parts, T* __restrict__ dy,
                               W* __restrict__ dw_rows, int fused) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    if (fused != 0 && fused_backward_applies(plan, vector_rows, lane)) return;
    const PathField off = &kiln_tp_path::off2;
    const PathField mul = &kiln_tp_path::mul2;
    const PathField dim = &kiln_tp_path::dim2;
    const bool full = covers(plan, off, mul, dim, plan.dim2, lane);
    const EdgeRange r = edge_range(edges, parts);
    for (int64_t e = r.begin; e < r.end; e += r.step) {
        const int64_t s = g.src != nullptr ? g.src[e] : e;
        const int64_t d = g.dst != nullptr ? g.dst[e] : e;
        const T* x1 = x + s * plan.dim1;
        const T* x2 = y + e * plan.dim2;
        const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
        const T* go = dout + d * plan.dim_out;
        W* dw = dw_rows != nullptr ? dw_rows + (parts > 0 ? r.warp : e) * plan.weight_numel : nullptr;
        // A partition's row sums its edges (the first writes); a per-edge row may add to dw.
        const bool add_dw = parts > 0 ? e > r.begin : accumulate != 0;
        T* row = dy != nullptr ? dy + e * plan.dim2 : nullptr;
        if (row != nullptr && !full && accumulate == 0) zero_uncovered(plan, off, mul, dim, plan.dim2, row, lane);
        for_each_block(plan, off, lane, [&](int b) KILN_INLINE_LAMBDA {
            const kiln_tp_path B = load_path(plan, b, lane);
            for (int v = 0; v < B.mul2; ++v) {
                C xv[kMaxDim];
                broadcast_row(x2 + B.off2 + v * B.dim2, B.dim2, lane, xv);
                C dacc[kMaxDim] = {};
                for_each_member(plan, off, B.off2, b, lane, [&](int p) KILN_INLINE_LAMBDA {
                    const kiln_tp_path P = p == b ? B : load_path(plan, p, lane);  // B is the first
                    const C coef = path_coef_of<C>(plan, P, p);
                    const int code = triple_code(P.dim1, P.dim2, P.dim_out);
                    // Each path's own channels: vector-ready paths V at a time.
                    with_channels<T>(vector_rows != 0 && vector_ready(P), [&](auto vtag) KILN_INLINE_LAMBDA {
                        path_dy_dw<decltype(vtag)::value>(P, code, coef, v, xv, lane, x1, we, go, dw, add_dw, dacc);
                    });
                });
                if (row == nullptr) continue;
                // Σ over the lanes' channels; lane j writes component j.
                const C mine = warp_sum_to_lane(dacc, B.dim2, lane);
                if (lane < B.dim2) {
                    T* out = row + B.off2 + int64_t(v) * B.dim2 + lane;
                    *out = from_compute<T>(accumulate != 0 ? to_compute(*out) + mine : mine);
                }
            }
        });
    }
}

}  // namespace kiln::equivariant

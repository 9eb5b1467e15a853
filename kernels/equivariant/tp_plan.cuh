// The tensor-product plan as the kernels read it: launch constants, the CG values and path
// coefficients in the compute type, and the graph (kernels/equivariant.cu, tp_channel.cuh).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/compute.cuh"
#include "kiln.h"

namespace kiln::equivariant {

// One warp per row (receiver, sender or edge); 4 warps per block.
constexpr int kTpThreads = 128;
constexpr int kTpWarps = kTpThreads / 32;
// With the thread count alone ptxas capped these loops at 48 registers and spilled; one block
// per SM as the stated minimum lets them take the 56-89 they need (no spills, ≥ 5 blocks an SM).
constexpr int kTpMinBlocks = 1;

// CG value c and path p's coefficient in compute type C: the f32 plan fields, or for f64
// storage the f64 tables (cg_val_f64, coef_f64) so that no f32 rounding enters an f64 result.
template <typename C>
__device__ __forceinline__ C cg_value(const kiln_tp_plan& plan, int c) {
    if constexpr (std::is_same_v<C, double>) {
        return plan.cg_val_f64[c];
    } else {
        return plan.cg_val[c];
    }
}

// Path p's coefficient given its descriptor P (already loaded): P.coef, or the f64 table's.
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

template <typename C>
__device__ __forceinline__ C path_coef(const kiln_tp_plan& plan, int p) {
    return path_coef_of<C>(plan, plan.paths[p], p);
}

// A path's CG entry: (i, j, k) packed as i | j << 8 | k << 16 (2l+1 ≤ 9 each).
__device__ __forceinline__ void unpack_ijk(int32_t ijk, int& i, int& j, int& k) {
    i = ijk & 0xff;
    j = (ijk >> 8) & 0xff;
    k = (ijk >> 16) & 0xff;
}

// The graph: edges sorted by dst (dst_ptr: CSR offsets of each receiver), with src for the
// forward; for the backward also dst per edge and the edges permuted by src (src_perm, CSR
// src_ptr). All NULL: the batched tensor product (edge n joins node n to itself).
struct Graph {
    const int32_t* src;       // [edges]
    const int32_t* dst;       // [edges]
    const int32_t* dst_ptr;   // [nodes + 1], offsets into the receiver order
    const int32_t* dst_perm;  // [edges], the receiver order; NULL: the edges are sorted by dst
    const int32_t* src_perm;  // [edges]
    const int32_t* src_ptr;   // [nodes + 1]
};

// Fixed partitions of the edges for the shared-weight gradient: at most kDwParts, each a
// contiguous range, so the reduction's order (and result) is the same on every GPU. Enough
// warps to fill an H100 a few times over; the partials are kDwParts · weight_numel values.
constexpr int64_t kDwParts = 1024;

// The edges warp `warp` takes: with parts > 0 the warp's range [edges·warp/parts,
// edges·(warp+1)/parts) in order (warps past `parts` none); with parts = 0 every grid-stride
// edge from the warp's index.
struct EdgeRange {
    int64_t warp, begin, end, step;
};

__device__ __forceinline__ EdgeRange edge_range(int64_t edges, int64_t parts) {
    const int64_t warp = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32;
    if (parts == 0) return EdgeRange{warp, warp, edges, int64_t(gridDim.x) * kTpWarps};
    if (warp >= parts) return EdgeRange{warp, 0, 0, 1};
    return EdgeRange{warp, edges * warp / parts, edges * (warp + 1) / parts, 1};
}

}  // namespace kiln::equivariant

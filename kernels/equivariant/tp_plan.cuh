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

template <typename C>
__device__ __forceinline__ C path_coef(const kiln_tp_plan& plan, int p) {
    if constexpr (std::is_same_v<C, double>) {
        return plan.coef_f64[p];
    } else {
        return plan.paths[p].coef;
    }
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
    const int32_t* dst_ptr;   // [nodes + 1]
    const int32_t* src_perm;  // [edges]
    const int32_t* src_ptr;   // [nodes + 1]
};

}  // namespace kiln::equivariant

// The fused backward's launch (kernels/equivariant_fused.cu, a translation unit of its own),
// as kernels/equivariant.cu's backward calls it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "equivariant/tp_plan.cuh"
#include "kiln.h"

namespace kiln::equivariant {

// One fused backward launch: f32 storage, per-edge weights. dx, dy, dw may each be NULL (not
// wanted); accumulate_dx adds to dx, accumulate_edge to dy and dw.
struct FusedBackward {
    const kiln_tp_plan* plan;  // device-side tables, as every tensor-product launch
    const float *x, *y, *w;
    Graph g;
    int vector_rows;  // equivariant.cu vector_rows_ok over every tensor of the launch
    int accumulate_dx, accumulate_edge;
    const float* dout;
    int64_t nodes, edges;
    float *dx, *dy, *dw;
    unsigned blocks;  // a warp a sender
    cudaStream_t stream;
};

// Launches the fused walk. On the device it does the work only where fused_backward_applies
// (tp_channel.cuh: every path uvu and vector-ready, vector rows); the dx and edge kernels then
// launched with `fused` = 1 do it otherwise.
kiln_status launch_tp_bwd_fused_uvu(const FusedBackward& f);

}  // namespace kiln::equivariant

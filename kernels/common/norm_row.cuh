// Row groups of the norm kernels: a 2-D block of blockDim.y groups, each of blockDim.x threads
// (a power of two below 32, so that short rows share a warp, or whole warps, at most 1024)
// working on one row, and the deterministic sum over one group.
#pragma once

#include <cuda_runtime.h>

#include "common/reduce.cuh"

namespace kiln::norm {

// A block holds at most 1024 threads, so at most 32 warps hand a total to the cross-warp step.
constexpr int kMaxRowWarps = 32;

// Sums v[0..kN) over the threads of this thread's row group; every thread of the group ends with
// the totals. Warps first (butterfly), then, for a group of several warps, one warp-sized
// butterfly over the warp totals: the pairing depends on thread indices only, so a row gives
// bitwise the same sums on every run. Every thread of the block must call it (it may hold a
// __syncthreads). `slots` is free for reuse once every thread has passed the NEXT call's
// barrier, so callers alternate two slot arrays between consecutive calls.
template <int kN>
__device__ __forceinline__ void row_group_sum(float (&v)[kN], float (&slots)[kN][kMaxRowWarps]) {
    if (blockDim.x < kWarpSize) {
        // Groups of a power-of-two width tile each warp aligned: a butterfly over offsets below
        // the width never leaves the group. Every lane of the warp takes part (full mask).
#pragma unroll
        for (int i = 0; i < kN; ++i) {
            for (int offset = blockDim.x / 2; offset > 0; offset >>= 1)
                v[i] += __shfl_xor_sync(kFullWarp, v[i], offset);
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < kN; ++i) v[i] = warp_sum(v[i]);
    const int warps = blockDim.x / kWarpSize;  // the same for every thread: a uniform branch
    if (warps == 1) return;
    const int lane = threadIdx.x % kWarpSize;
    const int warp = (threadIdx.y * blockDim.x + threadIdx.x) / kWarpSize;
    if (lane == 0) {
#pragma unroll
        for (int i = 0; i < kN; ++i) slots[i][warp] = v[i];
    }
    __syncthreads();
    const int first = threadIdx.y * warps;  // the group's first warp in the block
#pragma unroll
    for (int i = 0; i < kN; ++i) v[i] = warp_sum(lane < warps ? slots[i][first + lane] : 0.0f);
}

}  // namespace kiln::norm

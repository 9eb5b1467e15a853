// Block-wide integer prefix sums and maxima for the padding index kernels. Integer sums are
// exact, so the results do not depend on the order of the additions.
#pragma once

#include <cuda_runtime.h>

#include <climits>

#include "common/reduce.cuh"

namespace kiln {

// Inclusive prefix sum over the 32 lanes of a warp (Hillis-Steele); all lanes must call it.
__device__ __forceinline__ int warp_inclusive_scan(int v) {
    const int lane = threadIdx.x % kWarpSize;
#pragma unroll
    for (int offset = 1; offset < kWarpSize; offset <<= 1) {
        const int other = __shfl_up_sync(kFullWarp, v, offset);
        if (lane >= offset) v += other;
    }
    return v;
}

// Exclusive prefix sum of v in thread order over a 1-D block of kBlockThreads threads; *total
// receives the block's sum in every thread. Every thread must call it. It ends with a barrier,
// so it may be called again (in a loop) without another one.
template <int kBlockThreads>
__device__ __forceinline__ int block_exclusive_scan(int v, int* total) {
    static_assert(kBlockThreads % kWarpSize == 0 && kBlockThreads <= kWarpSize * kWarpSize,
                  "block_exclusive_scan needs whole warps and one warp to scan their sums");
    constexpr int kWarps = kBlockThreads / kWarpSize;
    __shared__ int warp_sums[kWarps];
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    const int inclusive = warp_inclusive_scan(v);
    if (lane == kWarpSize - 1) warp_sums[warp] = inclusive;
    __syncthreads();
    // Every warp scans the warp sums itself: no second barrier before the results are read.
    const int mine = lane < kWarps ? warp_sums[lane] : 0;
    const int sums = warp_inclusive_scan(mine);
    const int before_warp = __shfl_sync(kFullWarp, sums - mine, warp);
    *total = __shfl_sync(kFullWarp, sums, kWarpSize - 1);
    __syncthreads();  // warp_sums is free for the next call
    return before_warp + inclusive - v;
}

// Maximum of v over a 1-D block of kBlockThreads threads, returned to every thread. Every
// thread must call it; it ends with a barrier, like block_exclusive_scan.
template <int kBlockThreads>
__device__ __forceinline__ int block_max(int v) {
    static_assert(kBlockThreads % kWarpSize == 0 && kBlockThreads <= kWarpSize * kWarpSize,
                  "block_max needs whole warps and one warp to combine their maxima");
    constexpr int kWarps = kBlockThreads / kWarpSize;
    __shared__ int warp_max[kWarps];
    const int lane = threadIdx.x % kWarpSize;
    v = __reduce_max_sync(kFullWarp, v);
    if (lane == 0) warp_max[threadIdx.x / kWarpSize] = v;
    __syncthreads();
    const int most = __reduce_max_sync(kFullWarp, lane < kWarps ? warp_max[lane] : INT_MIN);
    __syncthreads();
    return most;
}

}  // namespace kiln

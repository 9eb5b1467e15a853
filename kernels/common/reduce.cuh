// Deterministic f32 sums across the threads of a block: every pairing is fixed by thread
// indices alone, so the same inputs give bitwise the same total on every run (no atomics).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kiln {

constexpr int kWarpSize = 32;
constexpr unsigned kFullWarp = 0xffffffffu;

// Butterfly sum over the 32 lanes; every lane ends with the total. All lanes must call it.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullWarp, v, offset);
    return v;
}

// Sum over a 1-D block of kBlockThreads threads; the total is valid in thread 0. Every thread
// must call it, once per kernel (its shared slots are not re-synchronised for a second call).
template <int kBlockThreads>
__device__ __forceinline__ float block_sum(float v) {
    static_assert(kBlockThreads % kWarpSize == 0 && kBlockThreads <= kWarpSize * kWarpSize,
                  "block_sum needs whole warps and one warp to combine their totals");
    constexpr int kWarps = kBlockThreads / kWarpSize;
    __shared__ float warp_totals[kWarps];
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    v = warp_sum(v);
    if (lane == 0) warp_totals[warp] = v;
    __syncthreads();
    float total = 0.0f;
    if (warp == 0) total = warp_sum(lane < kWarps ? warp_totals[lane] : 0.0f);
    return total;
}

// Floats per thread record in sum_over_lanes' shared memory: kW, padded to an odd count so
// that 32 consecutive threads storing or loading component j of their records hit 32 distinct
// banks (an odd stride is coprime with the 32 banks); a record of kW = 8 floats unpadded makes
// every such access 8-way conflicted.
template <int kW>
__host__ __device__ constexpr int lane_record_floats() {
    return kW % 2 == 0 ? kW + 1 : kW;
}

// For a 2-D block, sums acc[0..kW) over the blockDim.y lanes that share a threadIdx.x; the
// totals land in lane threadIdx.y == 0 (in its acc, and in its records: lane_total). Lane l
// adds lane l+s when l % 2s == 0 (s = 1, 2, 4, ...), which works for any lane count. smem holds
// blockDim.x * blockDim.y * lane_record_floats<kW>() floats. Every thread of the block must
// call it.
template <int kW>
__device__ __forceinline__ void sum_over_lanes(float (&acc)[kW], float* smem) {
    constexpr int kRecord = lane_record_floats<kW>();
    const int lanes = blockDim.y;
    const int lane = threadIdx.y;
    const int lane_stride = blockDim.x * kRecord;
    float* mine = smem + lane * lane_stride + threadIdx.x * kRecord;
#pragma unroll
    for (int j = 0; j < kW; ++j) mine[j] = acc[j];
    for (int s = 1; s < lanes; s <<= 1) {
        // Writers (l % 2s == 0) and readers' targets (l % 2s == s) are disjoint within a step.
        __syncthreads();
        if ((lane & (2 * s - 1)) == 0 && lane + s < lanes) {
            const float* other = mine + s * lane_stride;
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                acc[j] += other[j];
                mine[j] = acc[j];
            }
        }
    }
}

// After sum_over_lanes<kW> and a __syncthreads(): total i of lane 0, i = threadIdx.x * kW + j
// (the block's values in column order), from any thread. Consecutive i read consecutive words
// but for one skipped word per record: at most 2 wavefronts per warp.
template <int kW>
__device__ __forceinline__ float lane_total(const float* smem, int i) {
    return smem[(i / kW) * lane_record_floats<kW>() + i % kW];
}

// out[0] = Σ partials[0..count) in a fixed order: the second pass of the scalar parameter
// gradients (one block; strided per-thread sums, then block_sum's tree). Reads 4 bytes per
// partial. A template, so each translation unit may instantiate it.
template <int kBlockThreads>
__global__ void __launch_bounds__(kBlockThreads) sum_partials_kernel(const float* partials, int64_t count, float* out) {
    float acc = 0.0f;
    for (int64_t i = threadIdx.x; i < count; i += kBlockThreads) acc += partials[i];
    acc = block_sum<kBlockThreads>(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

}  // namespace kiln

// Row moves for gathers and scatters of [rows, dim] tensors: a warp splits into groups of
// `lanes` lanes (a power of two ≤ 32), and each group moves one whole row in kW-element packs.
// Short rows (dim 1, 7) then still keep every lane busy, long rows (4096) get a whole warp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/vec.cuh"

namespace kiln {

// Packs a lane keeps in flight per step of a row: four 16-byte loads issued before their
// stores give 64 bytes per lane, up to 128 KiB per SM at full occupancy. Little's law asks for
// about 3 TB/s × 1 µs of DRAM latency / 132 SMs ≈ 23 KiB per H100 SM, so even a quarter-full
// SM, or rows of only 48 bytes per lane (dim 768 bf16), keep enough bytes in flight.
constexpr int kRowUnroll = 4;

// log2 of the lanes that share a row of `packs` packs: the smallest power of two ≥ packs,
// at most a warp. Host side; packs ≥ 1.
inline int row_lane_shift(int64_t packs) {
    int shift = 0;
    while (shift < 5 && (int64_t(1) << shift) < packs) ++shift;
    return shift;
}

// dst[0, packs·kW) = src[0, packs·kW) by the `lanes` lanes of a group; this lane is `lane`
// (0 ≤ lane < lanes) and moves packs lane, lane + lanes, ... src and dst must not overlap.
template <typename T, int kW>
__device__ __forceinline__ void copy_row(const T* src, T* dst, int64_t packs, int lane, int lanes) {
#pragma unroll 1
    for (int64_t first = lane; first < packs; first += int64_t(lanes) * kRowUnroll) {
        Pack<T, kW> v[kRowUnroll];
#pragma unroll
        for (int u = 0; u < kRowUnroll; ++u) {
            const int64_t k = first + int64_t(u) * lanes;
            if (k < packs) v[u] = load_pack<T, kW>(src + k * kW);
        }
#pragma unroll
        for (int u = 0; u < kRowUnroll; ++u) {
            const int64_t k = first + int64_t(u) * lanes;
            if (k < packs) store_pack<T, kW>(dst + k * kW, v[u]);
        }
    }
}

// dst[0, packs·kW) = 0 (all bits clear) by the lanes of a group, as in copy_row.
template <typename T, int kW>
__device__ __forceinline__ void zero_row(T* dst, int64_t packs, int lane, int lanes) {
    const Pack<T, kW> zero{};
#pragma unroll 1
    for (int64_t k = lane; k < packs; k += lanes) store_pack<T, kW>(dst + k * kW, zero);
}

}  // namespace kiln

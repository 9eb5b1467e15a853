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

// Count, mean and sum of squared deviations of a set of values (Chan, Golub & LeVeque), the
// mean and the deviations taken of v − shift: what LayerNorm's one statistics round combines.
struct Moments {
    float n;
    float shift;
    float mean;  // of v − shift
    float m2;
};

// The union of two disjoint sets, kept relative to a's shift. `a` is always the lower lanes'
// set, so the two lanes of a butterfly pair compute bitwise the same result. The shifts are
// values of the set, so their difference is exact for sets far from zero (Sterbenz), and a
// constant set keeps m2 exactly 0 however it is split.
__device__ __forceinline__ Moments chan_combine(const Moments& a, const Moments& b) {
    if (b.n == 0.0f) return a;  // also keeps an empty set's lanes out of the arithmetic
    if (a.n == 0.0f) return b;
    const float n = a.n + b.n;
    // nb / n: counts are integers ≤ 65536, exact in f32; for equal halves (the usual split)
    // __fdividef's reciprocal of a power of two is exact.
    const float w = __fdividef(b.n, n);
    const float delta = (b.shift - a.shift) + (b.mean - a.mean);
    return Moments{n, a.shift, fmaf(delta, w, a.mean), fmaf(delta * delta, a.n * w, a.m2 + b.m2)};
}

// The butterfly of chan_combine over lane offsets 1, 2, ..., last (ascending, so that after each
// step a lane's set is a contiguous, aligned block of lanes), all lanes sharing one shift.
// Counts are not shuffled: `count(first, width)` gives the count of the row group's threads
// [first, first + width), and `first_of_lane0` is the group thread of this warp's lane 0.
template <typename Count>
__device__ __forceinline__ Moments butterfly_moments(Moments m, int last, int first_of_lane0, const Count& count) {
    const int lane = threadIdx.x % kWarpSize;
    for (int offset = 1; offset <= last; offset <<= 1) {
        const int mine = lane & ~(offset - 1);
        const int theirs = (lane ^ offset) & ~(offset - 1);
        Moments other{count(first_of_lane0 + theirs, offset), m.shift, __shfl_xor_sync(kFullWarp, m.mean, offset),
                      __shfl_xor_sync(kFullWarp, m.m2, offset)};
        m.n = count(first_of_lane0 + mine, offset);
        m = (lane & offset) == 0 ? chan_combine(m, other) : chan_combine(other, m);
    }
    return m;
}

// The moments of this thread's row group: warps first (all lanes of a warp, or of a group below
// a warp, share one shift: their first lane's value), then, for a group of several warps, every
// thread combines the warp totals in warp order from shared memory (no shuffles: a chain of
// chan_combine, the same order on every run, so the same bits). The result is relative to the
// group's first lane's shift. One round (one barrier) where a mean and then a sum of squares
// take two. `m.n` must equal count(tx, 1); `slots` alternate between consecutive calls as
// row_group_sum's do.
template <typename Count>
__device__ __forceinline__ Moments row_group_moments(Moments m, float (&slots)[3][kMaxRowWarps], const Count& count) {
    const int tx = threadIdx.x;
    if (blockDim.x < kWarpSize) return butterfly_moments(m, blockDim.x / 2, 0, count);
    const int lane = tx % kWarpSize;
    m = butterfly_moments(m, kWarpSize / 2, tx - lane, count);
    const int warps = blockDim.x / kWarpSize;  // uniform over the block
    if (warps == 1) return m;
    const int warp = (threadIdx.y * blockDim.x + tx) / kWarpSize;
    if (lane == 0) {
        slots[0][warp] = m.shift;
        slots[1][warp] = m.mean;
        slots[2][warp] = m.m2;
    }
    __syncthreads();
    const int first = threadIdx.y * warps;
    Moments total{count(0, kWarpSize), slots[0][first], slots[1][first], slots[2][first]};
    for (int w = 1; w < warps; ++w) {
        total = chan_combine(total, Moments{count(w * kWarpSize, kWarpSize), slots[0][first + w], slots[1][first + w],
                                            slots[2][first + w]});
    }
    return total;
}

}  // namespace kiln::norm

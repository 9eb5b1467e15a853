// The convolution's edge layouts built on the device from an edge list sorted by receiver:
// dst_ptr (CSR offsets of each receiver's edges), src_perm (the edge ids stably sorted by
// sender) and src_ptr (its CSR offsets), with the indices checked on the way. No host round
// trip: bad data goes to the kiln_data_status word (kiln.h), and the launcher returns at once.
//
//   1. init: the offset arrays and the per-sender fill counters zeroed, the word cleared;
//   2. count: each edge checks its indices (in [0, nodes)) and its order (dst[e] ≤ dst[e + 1]),
//      and counts itself at dst_ptr[dst + 1] and src_ptr[src + 1] (integer atomics: the counts
//      do not depend on their order);
//   3. scan: one block per offset array turns the counts into offsets (inclusive prefix sums);
//   4. place: each edge takes a slot of its sender's segment (an atomic on the sender's fill
//      counter: the order within a segment depends on the schedule);
//   5. rank: a warp per sender writes each of its edges at its rank among the segment's edge
//      ids, so every segment ends in edge order whatever the schedule of step 4: src_perm is
//      the stable sort, the same on every run and GPU. Work per sender is quadratic in its
//      edge count (degree²/32 warp steps: a few for molecular graphs, ~3·10⁸ for one sender
//      of 10⁵ edges).
// Steps 4 and 5 run only while the word is OK (an index out of range would address outside
// the arrays); after a data error the layouts are unspecified.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/padding_scan.cuh"
#include "common/padding_status.cuh"
#include "common/reduce.cuh"
#include "kiln.h"

namespace kiln::equivariant {

constexpr int kGraphThreads = 256;
constexpr int kGraphWarps = kGraphThreads / kWarpSize;

// Step 1: dst_ptr, src_ptr [nodes + 1] and fill [nodes] zeroed, *status = OK.
__global__ void __launch_bounds__(kGraphThreads)
    graph_init_kernel(int64_t nodes, int32_t* __restrict__ dst_ptr, int32_t* __restrict__ src_ptr,
                      int32_t* __restrict__ fill, int32_t* __restrict__ status) {
    const int64_t first = int64_t(blockIdx.x) * kGraphThreads + threadIdx.x;
    if (first == 0) *status = KILN_DATA_OK;
    const int64_t stride = int64_t(gridDim.x) * kGraphThreads;
    for (int64_t n = first; n <= nodes; n += stride) {
        dst_ptr[n] = 0;
        src_ptr[n] = 0;
        if (n < nodes) fill[n] = 0;
    }
}

// Step 2: per edge, the index and order checks, and the counts of valid edges.
__global__ void __launch_bounds__(kGraphThreads)
    graph_count_kernel(const int32_t* __restrict__ src, const int32_t* __restrict__ dst, int64_t nodes,
                       int64_t edges, int32_t* dst_ptr, int32_t* src_ptr, int32_t* status) {
    int32_t worst = KILN_DATA_OK;
    const int64_t stride = int64_t(gridDim.x) * kGraphThreads;
    for (int64_t e = int64_t(blockIdx.x) * kGraphThreads + threadIdx.x; e < edges; e += stride) {
        const int32_t s = src[e];
        const int32_t d = dst[e];
        if (s < 0 || s >= nodes || d < 0 || d >= nodes) {
            worst = lower_code(worst, KILN_DATA_INDEX_OUT_OF_RANGE);
            continue;
        }
        if (e + 1 < edges && dst[e + 1] < d) worst = lower_code(worst, KILN_DATA_UNSORTED_EDGES);
        atomicAdd(dst_ptr + d + 1, 1);
        atomicAdd(src_ptr + s + 1, 1);
    }
    report_warp_lowest(status, worst);  // every lane gets here: no early return above
}

// Step 3: block 0 scans dst_ptr, block 1 src_ptr ([nodes + 1] each, the counts at 1..nodes),
// kGraphThreads entries a pass with the running total carried.
__global__ void __launch_bounds__(kGraphThreads) graph_scan_kernel(int64_t nodes, int32_t* dst_ptr, int32_t* src_ptr) {
    int32_t* ptr = blockIdx.x == 0 ? dst_ptr : src_ptr;
    int carry = 0;
    for (int64_t base = 0; base <= nodes; base += kGraphThreads) {
        const int64_t i = base + threadIdx.x;
        const int v = i <= nodes ? ptr[i] : 0;
        int total = 0;
        const int before = block_exclusive_scan<kGraphThreads>(v, &total);
        if (i <= nodes) ptr[i] = carry + before + v;
        carry += total;
    }
}

// Step 4: each edge takes a slot of its sender's segment of `slots` [edges] (OK word only).
__global__ void __launch_bounds__(kGraphThreads)
    graph_place_kernel(const int32_t* __restrict__ src, int64_t edges, const int32_t* __restrict__ src_ptr,
                       int32_t* fill, int32_t* __restrict__ slots, const int32_t* status) {
    if (*status != KILN_DATA_OK) return;
    const int64_t stride = int64_t(gridDim.x) * kGraphThreads;
    for (int64_t e = int64_t(blockIdx.x) * kGraphThreads + threadIdx.x; e < edges; e += stride) {
        const int32_t s = src[e];
        slots[src_ptr[s] + atomicAdd(fill + s, 1)] = static_cast<int32_t>(e);
    }
}

// Step 5: a warp per sender; each edge id of its segment of `slots` goes to src_perm at the
// segment's start plus its rank (the number of smaller ids in the segment; ids are distinct).
// The segment is read 32 ids at a time and compared through shuffles (OK word only).
__global__ void __launch_bounds__(kGraphThreads)
    graph_rank_kernel(int64_t nodes, const int32_t* __restrict__ src_ptr, const int32_t* __restrict__ slots,
                      int32_t* __restrict__ src_perm, const int32_t* status) {
    if (*status != KILN_DATA_OK) return;
    const int lane = threadIdx.x % kWarpSize;
    const int64_t warps = int64_t(gridDim.x) * kGraphWarps;
    for (int64_t n = int64_t(blockIdx.x) * kGraphWarps + threadIdx.x / kWarpSize; n < nodes; n += warps) {
        const int32_t begin = src_ptr[n];
        const int32_t end = src_ptr[n + 1];
        for (int32_t mine0 = begin; mine0 < end; mine0 += kWarpSize) {
            const bool has = mine0 + lane < end;
            const int32_t id = has ? slots[mine0 + lane] : 0;
            int32_t rank = 0;
            for (int32_t other0 = begin; other0 < end; other0 += kWarpSize) {
                const int32_t theirs = other0 + lane < end ? slots[other0 + lane] : INT32_MAX;
                const int count = end - other0 < kWarpSize ? end - other0 : kWarpSize;
                for (int k = 0; k < count; ++k) rank += __shfl_sync(kFullWarp, theirs, k) < id;
            }
            if (has) src_perm[begin + rank] = id;
        }
    }
}

}  // namespace kiln::equivariant

// The convolution's edge layouts built on the device from an edge list in any order: checked
// copies of src and dst, the receiver order (dst_perm: the edge ids stably sorted by dst;
// dst_ptr its CSR offsets) and the sender order (src_perm, src_ptr), with the indices checked
// on the way. No host round trip: bad data goes to the kiln_data_status word (kiln.h), and
// the launcher returns at once.
//
//   1. init: the offset arrays and both orders' fill counters zeroed, the word cleared;
//   2. count: each edge checks its indices (in [0, nodes)), writes its checked copies (an index
//      out of range becomes 0) and counts itself at dst_ptr[dst + 1] and src_ptr[src + 1]
//      (integer atomics: the counts do not depend on their order);
//   3. scan: one block per offset array turns the counts into offsets (inclusive prefix sums);
//   4. place: per order, each edge takes a slot of its key's segment (an atomic on the key's
//      fill counter: the order within a segment depends on the schedule);
//   5. rank: per order, a warp per key writes each of its edges at its rank among the
//      segment's edge ids, so every segment ends in edge order whatever the schedule of step 4:
//      dst_perm and src_perm are the stable sorts, the same on every run and GPU (an edge list
//      already sorted by dst gets the identity). Work per key is quadratic in its edge count
//      (degree²/32 warp steps: a few for molecular graphs, ~3·10⁸ for one node of 10⁵ edges).
// After a data error step 4 writes the identity permutations and step 5 does nothing: the
// layouts are then safe to read (every copied index in [0, nodes) given nodes > 0, every
// segment within [0, edges), every permutation entry an edge id), so a convolution launched
// on them before anyone reads the word stays in bounds; its result is meaningless.
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
// status[1] (as uint32) holds the lowest 2·edge + side of an index out of range (side 0: src,
// 1: dst), so the caller can name the edge; all ones when there is none. Edges ≤ INT32_MAX:
// 2·edge + 1 fits in 32 unsigned bits.
constexpr uint32_t kNoBadEdge = 0xffffffffu;

// Step 1: dst_ptr, src_ptr [nodes + 1] and fill [2 nodes] (dst's counters, then src's) zeroed,
// status[0] = OK, status[1] = kNoBadEdge.
__global__ void __launch_bounds__(kGraphThreads)
    graph_init_kernel(int64_t nodes, int32_t* __restrict__ dst_ptr, int32_t* __restrict__ src_ptr,
                      int32_t* __restrict__ fill, int32_t* __restrict__ status) {
    const int64_t first = int64_t(blockIdx.x) * kGraphThreads + threadIdx.x;
    if (first == 0) {
        status[0] = KILN_DATA_OK;
        status[1] = static_cast<int32_t>(kNoBadEdge);
    }
    const int64_t stride = int64_t(gridDim.x) * kGraphThreads;
    for (int64_t n = first; n <= nodes; n += stride) {
        dst_ptr[n] = 0;
        src_ptr[n] = 0;
        if (n < nodes) {
            fill[n] = 0;
            fill[nodes + n] = 0;
        }
    }
}

// Step 2: per edge, the index checks, the checked copies and the counts of valid edges.
__global__ void __launch_bounds__(kGraphThreads)
    graph_count_kernel(const int32_t* __restrict__ src, const int32_t* __restrict__ dst, int64_t nodes,
                       int64_t edges, int32_t* __restrict__ src_out, int32_t* __restrict__ dst_out, int32_t* dst_ptr,
                       int32_t* src_ptr, int32_t* status) {
    int32_t worst = KILN_DATA_OK;
    const int64_t stride = int64_t(gridDim.x) * kGraphThreads;
    for (int64_t e = int64_t(blockIdx.x) * kGraphThreads + threadIdx.x; e < edges; e += stride) {
        const int32_t s = src[e];
        const int32_t d = dst[e];
        const bool ok = s >= 0 && s < nodes && d >= 0 && d < nodes;
        src_out[e] = ok ? s : 0;
        dst_out[e] = ok ? d : 0;
        if (!ok) {
            worst = lower_code(worst, KILN_DATA_INDEX_OUT_OF_RANGE);
            const bool src_ok = s >= 0 && s < nodes;
            atomicMin(reinterpret_cast<unsigned int*>(status + 1), static_cast<unsigned int>(2 * e + (src_ok ? 1 : 0)));
            continue;
        }
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

// One order's arrays: blockIdx.y 0 is the receiver order (keys dst), 1 the sender order.
struct GraphOrder {
    const int32_t* key;  // [edges], checked
    const int32_t* ptr;  // [nodes + 1]
    int32_t* fill;       // [nodes]
    int32_t* slots;      // [edges]
    int32_t* perm;       // [edges]
};

// Step 4: per order, each edge takes a slot of its key's segment of `slots` (OK word); after a
// data error, the identity permutation (see the top of the file).
__global__ void __launch_bounds__(kGraphThreads)
    graph_place_kernel(GraphOrder by_dst, GraphOrder by_src, int64_t edges, const int32_t* status) {
    const GraphOrder o = blockIdx.y == 0 ? by_dst : by_src;
    const bool ok = *status == KILN_DATA_OK;
    const int64_t stride = int64_t(gridDim.x) * kGraphThreads;
    for (int64_t e = int64_t(blockIdx.x) * kGraphThreads + threadIdx.x; e < edges; e += stride) {
        if (!ok) {
            o.perm[e] = static_cast<int32_t>(e);
            continue;
        }
        const int32_t k = o.key[e];
        o.slots[o.ptr[k] + atomicAdd(o.fill + k, 1)] = static_cast<int32_t>(e);
    }
}

// Step 5: per order, a warp per key; each edge id of its segment of `slots` goes to perm at the
// segment's start plus its rank (the number of smaller ids in the segment; ids are distinct).
// The segment is read 32 ids at a time and compared through shuffles (OK word only).
__global__ void __launch_bounds__(kGraphThreads)
    graph_rank_kernel(GraphOrder by_dst, GraphOrder by_src, int64_t nodes, const int32_t* status) {
    if (*status != KILN_DATA_OK) return;
    const GraphOrder o = blockIdx.y == 0 ? by_dst : by_src;
    const int lane = threadIdx.x % kWarpSize;
    const int64_t warps = int64_t(gridDim.x) * kGraphWarps;
    for (int64_t n = int64_t(blockIdx.x) * kGraphWarps + threadIdx.x / kWarpSize; n < nodes; n += warps) {
        const int32_t begin = o.ptr[n];
        const int32_t end = o.ptr[n + 1];
        for (int32_t mine0 = begin; mine0 < end; mine0 += kWarpSize) {
            const bool has = mine0 + lane < end;
            const int32_t id = has ? o.slots[mine0 + lane] : 0;
            int32_t rank = 0;
            for (int32_t other0 = begin; other0 < end; other0 += kWarpSize) {
                const int32_t theirs = other0 + lane < end ? o.slots[other0 + lane] : INT32_MAX;
                const int count = end - other0 < kWarpSize ? end - other0 : kWarpSize;
                for (int k = 0; k < count; ++k) rank += __shfl_sync(kFullWarp, theirs, k) < id;
            }
            if (has) o.perm[begin + rank] = id;
        }
    }
}

}  // namespace kiln::equivariant

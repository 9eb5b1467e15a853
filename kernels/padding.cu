// Padding family (flash-attn bert_padding semantics, shared/REFERENCE.md §3): unpad packs the
// kept tokens of hidden [batch, seqlen, dim] into packed [nnz, dim], pad scatters packed rows
// back into a zero-filled hidden, gather copies rows by index. Nothing synchronises with the
// host: nnz stays on the device (counts[0], *nnz) and data errors go to the status word.
// Layout of this file: launch constants, the kernels (unpad's tile kernels, the row copy that
// all three launchers end with, the index checks of pad and gather), validation, the launch
// sequences, the C ABI. Outputs must not overlap inputs.
//
// The status word (kiln.h, kiln_data_status):
//  - unpad: one single-block kernel (scan_tiles_kernel) sees every data error unpad can have
//    (SEQLEN_OUT_OF_RANGE, then CAPACITY_EXCEEDED) and is the word's only writer, with a plain
//    store; the tile count kernel before it neither reads nor writes the word, so no memset;
//  - pad and gather: the word is cleared first (by pad's init kernel, by gather's memset) and
//    the check kernels' warps lower it with report_data_error: the lowest nonzero code wins,
//    whatever the order of the reports;
//  - every kernel that writes an output (indices, packed, hidden) reads the word first and
//    returns when it is not OK; cu_seqlens and counts come from the scan kernel itself, which
//    is why CAPACITY_EXCEEDED still writes them.

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>

#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/padding_scan.cuh"
#include "common/padding_status.cuh"
#include "common/rows.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln::padding {

// ------------------------------------------------------------------------------------------
// Launch constants
// ------------------------------------------------------------------------------------------

// A tile is up to kTileTokens tokens of one sequence, covered by one block of the tile kernels
// (count, index): 256 threads × 8 consecutive tokens. A BERT-sized sequence (≤ 2048 tokens) is
// one tile, so its count and its indices each take one block-wide scan; longer sequences split
// into tiles that the scan kernel chains. 8 tokens are 8 mask bytes (u8) or 32 (i32) a thread.
constexpr int kTileThreads = 256;
constexpr int kTileItems = 8;
constexpr int kTileTokens = kTileThreads * kTileItems;

// The scan kernel is one block (the offset of a tile depends on every tile before it): the
// largest block, kScanItems tiles per thread, so 4096 tiles (16k short sequences) per step.
constexpr int kScanThreads = 1024;
constexpr int kScanItems = 4;

// Row copies and index checks: 8 warps per block as in the elementwise kernels; small blocks
// leave little idle at the end of a grid. The 16-byte copy takes 40 registers (capping it at 32
// spills), so 6 of its blocks share an SM: 48 warps, each lane with up to 64 bytes in flight.
constexpr int kCopyThreads = 256;
// Short rows (one pack per lane or less) a lane group of copy_rows_kernel moves per step: two
// rows' map entries and packs in flight at once (kiln model's latency column: one row per step
// kept 18-24 KiB in flight per SM at dim 256, two keep ~2x).
constexpr int kCopyRowsInFlight = 2;
constexpr int kCheckThreads = 256;

// Grid cap of the grid-stride kernels (row copies, index checks, inverse map init): about 31
// full waves of 256-thread blocks on an H100 (132 SMs × 8); more blocks only add scheduling.
constexpr int64_t kMaxGridBlocks = int64_t(1) << 15;

// pad's inverse map entry of a token that no packed row maps to (a zero row of hidden).
constexpr int32_t kNoRow = -1;

// Largest element count of a tensor: byte offsets (and rounding to a 16-byte pack) stay far
// from int64 overflow for every storage type.
constexpr int64_t kMaxElements = INT64_MAX / kVecBytes;

// ------------------------------------------------------------------------------------------
// unpad: count_tiles_kernel (mask only) → scan_tiles_kernel → index_tiles_kernel →
// copy_rows_kernel. Tile t covers sequence t / tiles_per_seq from token
// (t % tiles_per_seq)·kTileTokens on; thread x of its block covers the kTileItems consecutive
// tokens from there + x·kTileItems (idle where that is past seqlen).
// ------------------------------------------------------------------------------------------

// This thread's part of tile blockIdx.x.
struct TileSlice {
    int seq;        // b
    int64_t first;  // s of the thread's first token; may be ≥ seqlen
};

// (tile: blockIdx.x, or the one-pass unpad's claimed ticket.)
__device__ __forceinline__ TileSlice tile_slice(int tile, int tiles_per_seq) {
    return TileSlice{tile / tiles_per_seq,
                     int64_t(tile % tiles_per_seq) * kTileTokens + int64_t(threadIdx.x) * kTileItems};
}

// Bit j: token first + j of a mask row is kept (mask != 0), for the thread's kTileItems tokens.
// Where all of them lie in the row and their mask words are aligned, one 8-byte load (u8) or two
// 16-byte loads (i32), so a warp reads 256 or 1024 contiguous bytes per instruction instead of 32
// lanes × 1 byte strided by 8; else token by token (a row's end, or rows whose start is not
// aligned: seqlen not a multiple of 8 or 2).
template <typename Mask>
__device__ __forceinline__ unsigned mask_bits(const Mask* row, int64_t first, int seqlen) {
    static_assert(kTileItems == 8, "one 8-byte or two 16-byte loads per thread");
    constexpr size_t kBytes = kTileItems * sizeof(Mask);
    const Mask* p = row + first;
    unsigned bits = 0;
    if (first + kTileItems <= seqlen && reinterpret_cast<uintptr_t>(p) % kBytes == 0) {
        Mask v[kTileItems];
        if constexpr (kBytes == 8) {
            const uint2 raw = *reinterpret_cast<const uint2*>(p);
            memcpy(v, &raw, kBytes);
        } else {
            static_assert(kBytes == 32, "u8 or i32 masks");
            const uint4 lo = reinterpret_cast<const uint4*>(p)[0];
            const uint4 hi = reinterpret_cast<const uint4*>(p)[1];
            memcpy(v, &lo, 16);
            memcpy(v + 16 / sizeof(Mask), &hi, 16);
        }
#pragma unroll
        for (int j = 0; j < kTileItems; ++j) bits |= static_cast<unsigned>(v[j] != 0) << j;
    } else {
#pragma unroll
        for (int j = 0; j < kTileItems; ++j) {
            if (first + j < seqlen && p[j] != 0) bits |= 1u << j;
        }
    }
    return bits;
}

// tile_counts[t] = tokens of tile t with mask != 0 (mask: [batch, seqlen]; tile_counts:
// [batch·tiles_per_seq]). Reads sizeof(Mask) bytes per token, writes 4 bytes per tile.
template <typename Mask>
__global__ void __launch_bounds__(kTileThreads)
    count_tiles_kernel(const Mask* __restrict__ mask, int seqlen, int tiles_per_seq, int32_t* __restrict__ tile_counts) {
    const TileSlice slice = tile_slice(static_cast<int>(blockIdx.x), tiles_per_seq);
    const Mask* row = mask + int64_t(slice.seq) * seqlen;
    const int kept = __popc(mask_bits(row, slice.first, seqlen));
    int total;
    block_exclusive_scan<kTileThreads>(kept, &total);
    if (threadIdx.x == 0) tile_counts[blockIdx.x] = total;
}

// Arguments of scan_tiles_kernel.
struct ScanArgs {
    const int32_t* seqlens;  // [batch], or NULL: the tile counts are in tiles (mask mode)
    int32_t* tiles;          // [batch·tiles_per_seq]: tile counts in (mask mode), tile offsets out
    int batch;
    int seqlen;
    int tiles_per_seq;       // ceil(seqlen / kTileTokens); 0 when seqlen == 0
    int capacity;            // rows of packed and indices
    int32_t* cu_seqlens;     // [batch + 1]
    int32_t* counts;         // [2]: nnz, max_seqlen
    int32_t* status;         // the data status word (this kernel is its only writer)
};

// Kept tokens of tile t: counted from the mask, or what the tile holds of the first
// seqlens[b] tokens.
__device__ __forceinline__ int tile_count(const ScanArgs& a, int64_t t) {
    if (a.seqlens == nullptr) return a.tiles[t];
    const int64_t left = int64_t(a.seqlens[t / a.tiles_per_seq]) - (t % a.tiles_per_seq) * kTileTokens;
    return static_cast<int>(left < 0 ? 0 : (left < kTileTokens ? left : kTileTokens));
}

// Row of packed where sequence b (0 ≤ b ≤ batch) starts, once tiles holds offsets: the offset
// of its first tile, or nnz past the last tile (also every b when seqlen == 0).
__device__ __forceinline__ int sequence_start(const ScanArgs& a, int64_t b, int nnz) {
    const int64_t t = b * a.tiles_per_seq;
    return t < int64_t(a.batch) * a.tiles_per_seq ? a.tiles[t] : nnz;
}

// One block: checks the lengths (seqlens mode), turns tile counts into tile offsets (exclusive
// prefix sums in token order, in place), then writes cu_seqlens, counts = {nnz, max_seqlen} and
// the status word. Reads and writes 4 bytes per tile and per sequence.
__global__ void __launch_bounds__(kScanThreads) scan_tiles_kernel(ScanArgs a) {
    // A length outside [0, seqlen]: SEQLEN_OUT_OF_RANGE, counts {0, 0}, and nothing else written.
    bool bad = false;
    if (a.seqlens != nullptr) {
        for (int64_t b = threadIdx.x; b < a.batch; b += kScanThreads) {
            const int32_t len = a.seqlens[b];
            bad |= len < 0 || len > a.seqlen;
        }
    }
    if (__syncthreads_or(bad)) {
        // counts = {0, 0} and the tile offsets (workspace) zero: index_tiles_kernel and
        // copy_rows_kernel load them with the status word, before they know the word says to
        // write nothing, and nothing else would have written them (lengths mode has no counting
        // pass). An emulator finding when the no-sync path met a bad length with a capacity.
        if (threadIdx.x == 0) {
            *a.status = KILN_DATA_SEQLEN_OUT_OF_RANGE;
            a.counts[0] = 0;
            a.counts[1] = 0;
        }
        for (int64_t t = threadIdx.x; t < int64_t(a.batch) * a.tiles_per_seq; t += kScanThreads) a.tiles[t] = 0;
        return;
    }

    // Tile offsets; thread x takes kScanItems consecutive tiles per step. nnz ≤ batch·seqlen
    // < 2^31, so int sums cannot overflow.
    const int64_t tiles = int64_t(a.batch) * a.tiles_per_seq;
    int nnz = 0;  // kept tokens before this step, the same in every thread
    for (int64_t step = 0; step < tiles; step += int64_t(kScanThreads) * kScanItems) {
        const int64_t first = step + int64_t(threadIdx.x) * kScanItems;
        int count[kScanItems];
        int mine = 0;
#pragma unroll
        for (int j = 0; j < kScanItems; ++j) {
            count[j] = first + j < tiles ? tile_count(a, first + j) : 0;
            mine += count[j];
        }
        int step_total;
        int offset = nnz + block_exclusive_scan<kScanThreads>(mine, &step_total);
#pragma unroll
        for (int j = 0; j < kScanItems; ++j) {
            if (first + j < tiles) a.tiles[first + j] = offset;  // only this thread reads or writes it
            offset += count[j];
        }
        nnz += step_total;
    }
    __syncthreads();  // every tile offset is visible to the whole block

    int longest = 0;
    for (int64_t b = threadIdx.x; b <= a.batch; b += kScanThreads) {
        const int start = sequence_start(a, b, nnz);
        a.cu_seqlens[b] = start;
        if (b < a.batch) {
            const int len = sequence_start(a, b + 1, nnz) - start;
            longest = len > longest ? len : longest;
        }
    }
    longest = block_max<kScanThreads>(longest);
    if (threadIdx.x == 0) {
        a.counts[0] = nnz;
        a.counts[1] = longest;
        *a.status = nnz > a.capacity ? KILN_DATA_CAPACITY_EXCEEDED : KILN_DATA_OK;
    }
}

// indices[tile_offsets[t] + rank] = b·seqlen + s for each kept token (b, s) of tile t, rank
// being the kept tokens of the tile before it: indices come out in token (mask) order. Kept:
// mask != 0, or s < seqlens[b]. Reads sizeof(Mask) bytes per token (none with seqlens), writes
// 4 bytes per kept token; nothing unless the status word is OK.
template <typename Mask>
__global__ void __launch_bounds__(kTileThreads)
    index_tiles_kernel(const Mask* __restrict__ mask, const int32_t* __restrict__ seqlens, int seqlen,
                       int tiles_per_seq, const int32_t* __restrict__ tile_offsets, int32_t* __restrict__ indices,
                       const int32_t* status) {
    // The word, the tile's offset and its tokens are loaded together (one memory round trip);
    // all are readable whatever the word says, and only the word decides what is written.
    const int32_t word = *status;
    const int base = tile_offsets[blockIdx.x];
    const TileSlice slice = tile_slice(static_cast<int>(blockIdx.x), tiles_per_seq);
    const int64_t row = int64_t(slice.seq) * seqlen;
    const int64_t len = seqlens != nullptr ? seqlens[slice.seq] : 0;
    unsigned keep = 0;  // bit j: token first + j is kept
    if (seqlens != nullptr) {
#pragma unroll
        for (int j = 0; j < kTileItems; ++j) {
            const int64_t s = slice.first + j;
            keep |= static_cast<unsigned>(s < seqlen && s < len) << j;
        }
    } else {
        keep = mask_bits(mask + row, slice.first, seqlen);
    }
    const int kept = __popc(keep);
    if (word != KILN_DATA_OK) return;  // the same word in every thread: the whole block leaves
    int total;
    int rank = base + block_exclusive_scan<kTileThreads>(kept, &total);
#pragma unroll
    for (int j = 0; j < kTileItems; ++j) {
        if ((keep >> j) & 1u) indices[rank++] = static_cast<int32_t>(row + slice.first + j);
    }
}

// ------------------------------------------------------------------------------------------
// unpad in one pass: lookback_tiles_kernel → copy_rows_kernel, for a mask with capacity ≥
// batch·seqlen, where no data error is possible. Each block claims the next tile (an atomic
// ticket, so every tile a block waits on belongs to a block already running: forward progress
// whatever order the GPU starts blocks in), counts it, publishes its aggregate, sums the tiles
// before it by decoupled look-back (Merrill & Garland 2016: a warp reads 32 predecessors' words
// at once and stops at the nearest published prefix), publishes its own prefix and writes its
// indices. The mask is read once and nothing waits for a single-block scan. The workspace is
// zeroed first (a memset: every tile word empty, the counters 0).
// ------------------------------------------------------------------------------------------

// A tile's published word: flag in bits 62-63 (0: nothing yet), its kept tokens (aggregate) in
// bits 31-61 and, once the flag is kPrefix, the kept tokens of every tile up to it (inclusive
// prefix) in bits 0-30. Both < 2^31: batch·seqlen < 2^31.
namespace lookback {
// The type CUDA's 64-bit atomics take.
using Word = unsigned long long;
constexpr Word kAggregate = Word(1) << 62;
constexpr Word kPrefix = Word(2) << 62;
constexpr Word kValue = (Word(1) << 31) - 1;

__device__ __forceinline__ Word word(Word flag, int aggregate, int inclusive) {
    return flag | Word(aggregate) << 31 | Word(inclusive);
}
__device__ __forceinline__ int aggregate(Word w) { return static_cast<int>(w >> 31 & kValue); }
__device__ __forceinline__ int inclusive(Word w) { return static_cast<int>(w & kValue); }

// Tile t's word once its flag is at least `flag` (an atomic read: the word is written by
// another block of this launch). On the emulator blocks run one after another, so every
// predecessor has long published its prefix and the poll never goes round twice.
__device__ __forceinline__ Word poll(Word* words, int64_t t, Word flag) {
    Word w;
    do {
        w = atomicOr(words + t, 0ull);
    } while ((w & (kPrefix | kAggregate)) < flag);
    return w;
}
}  // namespace lookback

// The workspace of the one-pass unpad (zeroed before the launch): one word per tile, then the
// ticket counter, the count of blocks done and the longest sequence so far.
struct LookbackState {
    lookback::Word* words;  // [tiles]
    int32_t* next_tile;
    int32_t* done;
    int32_t* longest;
};

// Bytes of LookbackState for `tiles` tiles (the words first: 8-byte aligned with the workspace).
__host__ __device__ constexpr int64_t lookback_bytes(int64_t tiles) {
    return tiles * int64_t(sizeof(lookback::Word)) + 3 * int64_t(sizeof(int32_t));
}

// Kept tokens of every tile before `tile` (warp 0 of the block, every lane; `total` its own
// count): publishes the aggregate, looks back window by window (lane l reads tile
// last − l; a tile before the first counts as a prefix of 0, so the walk always ends), then
// publishes the inclusive prefix.
__device__ __forceinline__ int look_back(lookback::Word* words, int64_t tile, int total) {
    const int lane = threadIdx.x % kWarpSize;
    if (lane == 0) {
        atomicExch(words + tile, tile == 0 ? lookback::word(lookback::kPrefix, total, total)
                                           : lookback::word(lookback::kAggregate, total, 0));
    }
    int before = 0;
#pragma unroll 1
    for (int64_t last = tile - 1; last >= 0; last -= kWarpSize) {
        const int64_t t = last - lane;
        const lookback::Word w = t < 0 ? lookback::kPrefix : lookback::poll(words, t, lookback::kAggregate);
        const unsigned prefixes = __ballot_sync(kFullWarp, w >= lookback::kPrefix);
        const int nearest = prefixes != 0 ? __ffs(prefixes) - 1 : kWarpSize;  // lowest lane: the latest tile
        const int aggregate = lookback::aggregate(w), inclusive = lookback::inclusive(w);
        const int part = lane < nearest ? aggregate : (lane == nearest ? inclusive : 0);
        before += __reduce_add_sync(kFullWarp, part);
        if (prefixes != 0) break;
    }
    if (lane == 0 && tile > 0) atomicExch(words + tile, lookback::word(lookback::kPrefix, total, before + total));
    return before;
}

// unpad's indices, cu_seqlens, counts and status word in one pass over a mask (kTileThreads
// threads a block, one block per tile): reads sizeof(Mask) bytes per token, writes 4 bytes per
// kept token and per sequence; a few atomics per tile. Only for capacity ≥ batch·seqlen, so the
// indices of every kept token fit and the word is always OK.
template <typename Mask>
__global__ void __launch_bounds__(kTileThreads)
    lookback_tiles_kernel(const Mask* __restrict__ mask, int batch, int seqlen, int tiles_per_seq,
                          LookbackState st, int32_t* __restrict__ indices, int32_t* __restrict__ cu_seqlens,
                          int32_t* __restrict__ counts, int32_t* __restrict__ status) {
    __shared__ int claimed;
    __shared__ int tile_start;  // kept tokens before this tile: its first row of packed
    if (threadIdx.x == 0) claimed = atomicAdd(st.next_tile, 1);
    __syncthreads();
    const int64_t tile = claimed;
    const TileSlice slice = tile_slice(claimed, tiles_per_seq);
    const int seq = slice.seq, within = static_cast<int>(tile % tiles_per_seq);
    const int64_t first = slice.first;
    const int64_t row = int64_t(seq) * seqlen;
    const unsigned keep = mask_bits(mask + row, first, seqlen);
    int total;
    const int rank = block_exclusive_scan<kTileThreads>(__popc(keep), &total);  // ends with a barrier
    if (threadIdx.x < kWarpSize) {
        const int before = look_back(st.words, tile, total);
        if (threadIdx.x == 0) tile_start = before;
    }
    __syncthreads();
    int at = tile_start + rank;
#pragma unroll
    for (int j = 0; j < kTileItems; ++j) {
        if ((keep >> j) & 1u) indices[at++] = static_cast<int32_t>(row + first + j);
    }
    if (threadIdx.x != 0) return;
    // Thread 0: the sequence's start, and its length from its last tile (the first tile's
    // published prefix minus its aggregate is where the sequence starts).
    if (within == 0) cu_seqlens[seq] = tile_start;
    if (within == tiles_per_seq - 1) {
        const lookback::Word head = within == 0 ? 0 : lookback::poll(st.words, tile - within, lookback::kPrefix);
        const int start = within == 0 ? tile_start : lookback::inclusive(head) - lookback::aggregate(head);
        atomicMax(st.longest, tile_start + total - start);
    }
    // The last block to finish (threadFenceReduction) writes what needs every tile.
    __threadfence();
    const int64_t tiles = int64_t(batch) * tiles_per_seq;
    if (atomicAdd(st.done, 1) == tiles - 1) {
        const int nnz = lookback::inclusive(lookback::poll(st.words, tiles - 1, lookback::kPrefix));
        cu_seqlens[batch] = nnz;
        counts[0] = nnz;
        counts[1] = atomicMax(st.longest, 0);
        *status = KILN_DATA_OK;
    }
}

// ------------------------------------------------------------------------------------------
// The row copy (unpad, pad, gather)
// ------------------------------------------------------------------------------------------

// dst[r] = src[map[r]] for r < rows, a zero row where map[r] < 0 (dst: [rows, dim]; src:
// [*, dim]; rows = rows_bound, or min(rows_bound, *device_rows) when device_rows is given).
// Reads and writes dim·sizeof(E) bytes per row (a zero row only writes), reads 4 bytes of map.
// E holds the bits of the storage type: a copy converts nothing, so f16 and bf16 share one
// instantiation. Groups of 2^lane_shift lanes move one row each (rows.cuh). Nothing unless the
// status word is OK.
template <typename E, int kW>
__global__ void __launch_bounds__(kCopyThreads)
    copy_rows_kernel(const E* __restrict__ src, const int32_t* __restrict__ map, E* __restrict__ dst,
                     int64_t rows_bound, const int32_t* device_rows, int64_t dim, int lane_shift,
                     const int32_t* status) {
    // Both words in one memory round trip; *device_rows is only used when the status is OK.
    const int32_t word = *status;
    const int64_t count = device_rows != nullptr ? *device_rows : rows_bound;
    if (word != KILN_DATA_OK) return;
    const int64_t rows = count < rows_bound ? count : rows_bound;
    const int lanes = 1 << lane_shift;
    const int lane = threadIdx.x & (lanes - 1);
    const int64_t packs = dim / kW;
    const int64_t groups = kCopyThreads >> lane_shift;  // rows a block moves at once
    const int64_t stride = int64_t(gridDim.x) * groups;
    const int64_t first = int64_t(blockIdx.x) * groups + (threadIdx.x >> lane_shift);
    if (packs <= lanes) {
        // Short rows (at most one pack per lane): kCopyRowsInFlight rows a stride apart per step,
        // their map entries and then their packs all loaded before the first store, so a group
        // keeps that many rows in flight instead of one row after one map round trip.
#pragma unroll 1
        for (int64_t r = first; r < rows; r += kCopyRowsInFlight * stride) {
            int32_t from[kCopyRowsInFlight];
#pragma unroll
            for (int u = 0; u < kCopyRowsInFlight; ++u) from[u] = r + u * stride < rows ? map[r + u * stride] : -1;
            Pack<E, kW> v[kCopyRowsInFlight];
#pragma unroll
            for (int u = 0; u < kCopyRowsInFlight; ++u) {
                v[u] = Pack<E, kW>{};
                if (from[u] >= 0 && lane < packs) v[u] = load_pack<E, kW>(src + int64_t(from[u]) * dim + lane * kW);
            }
#pragma unroll
            for (int u = 0; u < kCopyRowsInFlight; ++u) {
                if (r + u * stride >= rows || lane >= packs) continue;
                store_pack<E, kW>(dst + (r + u * stride) * dim + lane * kW, v[u]);
            }
        }
        return;
    }
#pragma unroll 1
    for (int64_t r = first; r < rows; r += stride) {
        const int32_t from = map[r];
        E* out = dst + r * dim;
        if (from >= 0) {
            copy_row<E, kW>(src + int64_t(from) * dim, out, packs, lane, lanes);
        } else {
            zero_row<E, kW>(out, packs, lane, lanes);
        }
    }
}

// ------------------------------------------------------------------------------------------
// pad and gather: index checks
// ------------------------------------------------------------------------------------------

// inv[r] = kNoRow for r < tokens, and the status word cleared (inv: [tokens]). Writes 4 bytes
// per token.
__global__ void __launch_bounds__(kCheckThreads)
    init_inverse_kernel(int32_t* __restrict__ inv, int64_t tokens, int32_t* __restrict__ status) {
    const int64_t first = int64_t(blockIdx.x) * kCheckThreads + threadIdx.x;
    if (first == 0) *status = KILN_DATA_OK;
    const int64_t stride = int64_t(gridDim.x) * kCheckThreads;
    for (int64_t r = first; r < tokens; r += stride) inv[r] = kNoRow;
}

// Checks 0 ≤ indices[i] < tokens for i < rows, rows = *device_rows (CAPACITY_EXCEEDED unless
// it lies in [0, capacity]) or capacity. With kScatter also claims inv[indices[i]] = i (inv:
// [tokens], all kNoRow before): a second claim on a token is DUPLICATE_INDEX. Reports the
// lowest code found. Reads 4 bytes per index (with kScatter plus one 4-byte atomic).
template <bool kScatter>
__global__ void __launch_bounds__(kCheckThreads)
    check_indices_kernel(const int32_t* __restrict__ indices, const int32_t* device_rows, int capacity, int tokens,
                         int32_t* inv, int32_t* status) {
    int rows = capacity;
    int32_t worst = KILN_DATA_OK;
    if (device_rows != nullptr) {
        rows = *device_rows;
        if (rows < 0 || rows > capacity) {
            if (blockIdx.x == 0) worst = KILN_DATA_CAPACITY_EXCEEDED;  // one block reports it
            rows = 0;
        }
    }
    const int64_t stride = int64_t(gridDim.x) * kCheckThreads;
    for (int64_t i = int64_t(blockIdx.x) * kCheckThreads + threadIdx.x; i < rows; i += stride) {
        const int32_t token = indices[i];
        if (token < 0 || token >= tokens) {
            worst = lower_code(worst, KILN_DATA_INDEX_OUT_OF_RANGE);
        } else if constexpr (kScatter) {
            // i < rows ≤ capacity < 2^31 fits the map.
            if (atomicCAS(inv + token, kNoRow, static_cast<int32_t>(i)) != kNoRow) {
                worst = lower_code(worst, KILN_DATA_DUPLICATE_INDEX);
            }
        }
    }
    report_warp_lowest(status, worst);  // every lane gets here: no early return above
}

// ------------------------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------------------------

namespace {

// a ≥ 0, b > 0; no overflow for any a.
int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// Blocks of a grid-stride kernel with `per_block` items a block: at least one (a check kernel
// also validates *nnz when there is nothing else to do), capped.
unsigned grid_blocks(int64_t items, int64_t per_block) {
    return static_cast<unsigned>(std::clamp(ceil_div(items, per_block), int64_t(1), kMaxGridBlocks));
}

// batch, seqlen ≥ 0 with batch·seqlen < 2^31 (token indices are int32), each < 2^31 too.
bool valid_tokens(int64_t batch, int64_t seqlen) {
    return batch >= 0 && seqlen >= 0 && batch <= INT32_MAX && seqlen <= INT32_MAX &&
           (seqlen == 0 || batch <= INT32_MAX / seqlen);
}

// A [rows, dim] tensor can be addressed (rows ≥ 0, dim ≥ 1).
bool valid_rows(int64_t rows, int64_t dim) { return rows == 0 || dim <= kMaxElements / rows; }

// The sizes of every launcher. capacity < 2^31: packed rows are named by int32 indices.
bool valid_sizes(int64_t batch, int64_t seqlen, int64_t dim, int64_t capacity) {
    return valid_tokens(batch, seqlen) && dim >= 1 && capacity >= 0 && capacity <= INT32_MAX &&
           valid_rows(batch * seqlen, dim) && valid_rows(capacity, dim);
}

// unpad's tile offsets (batch·ceil(seqlen / kTileTokens) ≤ batch·seqlen), pad's inverse map
// (batch·seqlen) and the one-pass unpad's LookbackState share the workspace: one int32 per
// token, or the look-back's words and counters where they are larger (one-token sequences, a
// handful of tokens). Sizes must be valid.
int64_t workspace_bytes(int64_t batch, int64_t seqlen) {
    const int64_t tiles = batch * ceil_div(seqlen, kTileTokens);
    return std::max(batch * seqlen * int64_t(sizeof(int32_t)), tiles > 0 ? lookback_bytes(tiles) : 0);
}

bool valid_mask_dtype(kiln_dtype dtype) {
    const int d = static_cast<int>(dtype);
    return d == KILN_DTYPE_U8 || d == KILN_DTYPE_I32;
}

int64_t mask_bytes(kiln_dtype dtype) { return static_cast<int>(dtype) == KILN_DTYPE_U8 ? 1 : 4; }

bool aligned_i32(const void* p) { return is_aligned(p, sizeof(int32_t)); }

// ------------------------------------------------------------------------------------------
// Launch sequences (arguments already validated)
// ------------------------------------------------------------------------------------------

// Row copy with 16-byte packs when every row starts on a 16-byte boundary (dim·sizeof(E) a
// multiple of 16 and both bases aligned), else element by element.
template <typename E>
kiln_status launch_copy(const void* src, const int32_t* map, void* dst, int64_t rows_bound,
                        const int32_t* device_rows, int64_t dim, const int32_t* status, cudaStream_t stream) {
    constexpr int kV = kVecWidth<E>;
    const bool vec = dim % kV == 0 && is_aligned(src, kVecBytes) && is_aligned(dst, kVecBytes);
    const int shift = row_lane_shift(vec ? dim / kV : dim);
    const int64_t packs = vec ? dim / kV : dim;
    const int64_t rows_per_group = packs <= (int64_t(1) << shift) ? kCopyRowsInFlight : 1;  // copy_rows_kernel's step
    const unsigned blocks = grid_blocks(rows_bound, (kCopyThreads >> shift) * rows_per_group);
    const E* from = static_cast<const E*>(src);
    E* to = static_cast<E*>(dst);
    if (vec) {
        KILN_LAUNCH(blocks, kCopyThreads, 0, stream, copy_rows_kernel<E, kV>)(from, map, to, rows_bound, device_rows,
                                                                              dim, shift, status);
    } else {
        KILN_LAUNCH(blocks, kCopyThreads, 0, stream, copy_rows_kernel<E, 1>)(from, map, to, rows_bound, device_rows,
                                                                             dim, shift, status);
    }
    return launch_status();
}

kiln_status copy_rows(kiln_dtype dtype, const void* src, const int32_t* map, void* dst, int64_t rows_bound,
                      const int32_t* device_rows, int64_t dim, const int32_t* status, cudaStream_t stream) {
    if (rows_bound == 0) return KILN_SUCCESS;
    static_assert(sizeof(float) == sizeof(uint32_t) && sizeof(__half) == sizeof(uint16_t) &&
                      sizeof(__nv_bfloat16) == sizeof(uint16_t),
                  "rows are copied as the bits of their storage type");
    return storage_bytes(dtype) == 4
               ? launch_copy<uint32_t>(src, map, dst, rows_bound, device_rows, dim, status, stream)
               : launch_copy<uint16_t>(src, map, dst, rows_bound, device_rows, dim, status, stream);
}

struct Unpad {
    kiln_dtype dtype;
    const void* hidden;      // [batch, seqlen, dim]
    const void* mask;        // [batch, seqlen], or NULL with seqlens (or when empty)
    const int32_t* seqlens;  // [batch], or NULL with mask
    int64_t batch, seqlen, dim, capacity;
    void* packed;            // [capacity, dim]
    int32_t* indices;        // [capacity]
    int32_t* cu_seqlens;     // [batch + 1]
    int32_t* counts;         // [2]
    int32_t* status;
    int32_t* tiles;          // workspace: one int32 per tile
    cudaStream_t stream;
};

// The one-pass unpad (mask, capacity ≥ batch·seqlen, at least one tile, the workspace 8-byte
// aligned): zero the LookbackState, one look-back launch, the copy. The caller has checked
// every other argument, the workspace's size among them.
template <typename Mask>
kiln_status launch_unpad_lookback(const Unpad& u, int tiles_per_seq, int64_t tiles) {
    const int64_t bytes = lookback_bytes(tiles);
    const cudaError_t err = cudaMemsetAsync(u.tiles, 0, static_cast<size_t>(bytes), u.stream);
    if (err != cudaSuccess) {
        t_last_cuda_error = err;
        return KILN_ERROR_CUDA;
    }
    auto* words = reinterpret_cast<lookback::Word*>(u.tiles);
    int32_t* counters = reinterpret_cast<int32_t*>(words + tiles);
    const LookbackState st{words, counters, counters + 1, counters + 2};
    KILN_LAUNCH(static_cast<unsigned>(tiles), kTileThreads, 0, u.stream, lookback_tiles_kernel<Mask>)(
        static_cast<const Mask*>(u.mask), static_cast<int>(u.batch), static_cast<int>(u.seqlen), tiles_per_seq, st,
        u.indices, u.cu_seqlens, u.counts, u.status);
    const kiln_status status = launch_status();
    if (status != KILN_SUCCESS || u.packed == nullptr) return status;
    return copy_rows(u.dtype, u.hidden, u.indices, u.packed, u.batch * u.seqlen, u.counts, u.dim, u.status, u.stream);
}

// The validating unpad (lengths, which may be out of range, or a capacity that the kept tokens
// may exceed): count (mask only), one-block scan (every data error), indices, copy; nothing but
// cu_seqlens and counts is written on a data error. With a mask and room for every token, the
// one-pass look-back instead.
template <typename Mask>
kiln_status launch_unpad(const Unpad& u) {
    const int tiles_per_seq = static_cast<int>(ceil_div(u.seqlen, kTileTokens));
    const int64_t tiles = u.batch * tiles_per_seq;  // ≤ batch·seqlen < 2^31: fits grid.x
    if (u.mask != nullptr && tiles > 0 && u.capacity >= u.batch * u.seqlen && is_aligned(u.tiles, sizeof(lookback::Word))) {
        return launch_unpad_lookback<Mask>(u, tiles_per_seq, tiles);
    }
    const Mask* mask = static_cast<const Mask*>(u.mask);
    const int seqlen = static_cast<int>(u.seqlen);
    if (u.mask != nullptr && tiles > 0) {
        KILN_LAUNCH(static_cast<unsigned>(tiles), kTileThreads, 0, u.stream, count_tiles_kernel<Mask>)(mask, seqlen,
                                                                                             tiles_per_seq, u.tiles);
        const kiln_status status = launch_status();
        if (status != KILN_SUCCESS) return status;
    }
    const ScanArgs args{u.seqlens, u.tiles, static_cast<int>(u.batch), seqlen, tiles_per_seq,
                        static_cast<int>(u.capacity), u.cu_seqlens, u.counts, u.status};
    KILN_LAUNCH(1, kScanThreads, 0, u.stream, scan_tiles_kernel)(args);
    kiln_status status = launch_status();
    // nnz ≤ min(capacity, batch·seqlen) once the word is OK: nothing to write when that is 0.
    const int64_t rows_bound = std::min(u.capacity, u.batch * u.seqlen);
    if (status != KILN_SUCCESS || rows_bound == 0) return status;
    KILN_LAUNCH(static_cast<unsigned>(tiles), kTileThreads, 0, u.stream, index_tiles_kernel<Mask>)(
        mask, u.seqlens, seqlen, tiles_per_seq, u.tiles, u.indices, u.status);
    status = launch_status();
    if (status != KILN_SUCCESS || u.packed == nullptr) return status;
    return copy_rows(u.dtype, u.hidden, u.indices, u.packed, rows_bound, u.counts, u.dim, u.status, u.stream);
}

}  // namespace
}  // namespace kiln::padding

// ------------------------------------------------------------------------------------------
// C ABI (kernels/include/kiln.h). Checks in the order: dtype, sizes, pointers, values,
// alignment, workspace; a pointer may be NULL where its tensor is empty.
// ------------------------------------------------------------------------------------------

namespace pad = kiln::padding;
using kiln::is_aligned;
using kiln::launch_status;

extern "C" {

int64_t kiln_padding_workspace_bytes(int64_t batch, int64_t seqlen) {
    return pad::valid_tokens(batch, seqlen) ? pad::workspace_bytes(batch, seqlen) : -1;
}

kiln_status kiln_padding_unpad_fwd(kiln_dtype dtype, const void* hidden, kiln_dtype mask_dtype, const void* mask,
                                   const int32_t* seqlens, int64_t batch, int64_t seqlen, int64_t dim,
                                   int64_t capacity, void* packed, int32_t* indices, int32_t* cu_seqlens,
                                   int32_t* counts, int32_t* status, void* workspace, int64_t workspace_bytes,
                                   void* stream) {
    if (!kiln::valid_dtype(dtype) || (mask != nullptr && !pad::valid_mask_dtype(mask_dtype))) {
        return KILN_ERROR_INVALID_DTYPE;
    }
    if (!pad::valid_sizes(batch, seqlen, dim, capacity)) return KILN_ERROR_INVALID_SIZE;
    const int64_t tokens = batch * seqlen;
    const int64_t needed = pad::workspace_bytes(batch, seqlen);
    // With no token at all, mask == seqlens == NULL is an empty mask: nothing is kept.
    // packed NULL: the indices only (no row is copied).
    if (status == nullptr || cu_seqlens == nullptr || counts == nullptr || (tokens > 0 && hidden == nullptr) ||
        (tokens > 0 && mask == nullptr && seqlens == nullptr) || (capacity > 0 && indices == nullptr) ||
        (needed > 0 && workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (mask != nullptr && seqlens != nullptr) return KILN_ERROR_INVALID_VALUE;  // exactly one of the two
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(hidden, elem) || !is_aligned(packed, elem) ||
        (mask != nullptr && !is_aligned(mask, pad::mask_bytes(mask_dtype))) || !pad::aligned_i32(seqlens) ||
        !pad::aligned_i32(indices) || !pad::aligned_i32(cu_seqlens) || !pad::aligned_i32(counts) ||
        !pad::aligned_i32(status) || !pad::aligned_i32(workspace)) {
        return KILN_ERROR_MISALIGNED;
    }
    if (workspace_bytes < needed) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    const pad::Unpad u{dtype,   hidden,  mask,       seqlens, batch,  seqlen,
                       dim,     capacity, packed,    indices, cu_seqlens, counts,
                       status,  static_cast<int32_t*>(workspace), static_cast<cudaStream_t>(stream)};
    // The mask type only matters with a mask; seqlens mode instantiates the u8 kernels unread.
    const bool i32_mask = mask != nullptr && static_cast<int>(mask_dtype) == KILN_DTYPE_I32;
    return i32_mask ? pad::launch_unpad<int32_t>(u) : pad::launch_unpad<uint8_t>(u);
}

kiln_status kiln_padding_pad_fwd(kiln_dtype dtype, const void* packed, const int32_t* indices, const int32_t* nnz,
                                 int64_t capacity, int64_t batch, int64_t seqlen, int64_t dim, void* hidden,
                                 int32_t* status, void* workspace, int64_t workspace_bytes, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!pad::valid_sizes(batch, seqlen, dim, capacity)) return KILN_ERROR_INVALID_SIZE;
    const int64_t tokens = batch * seqlen;
    const int64_t needed = pad::workspace_bytes(batch, seqlen);
    if (status == nullptr || (tokens > 0 && hidden == nullptr) ||
        (capacity > 0 && (indices == nullptr || packed == nullptr)) || (needed > 0 && workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(packed, elem) || !is_aligned(hidden, elem) || !pad::aligned_i32(indices) ||
        !pad::aligned_i32(nnz) || !pad::aligned_i32(status) || !pad::aligned_i32(workspace)) {
        return KILN_ERROR_MISALIGNED;
    }
    if (workspace_bytes < needed) return KILN_ERROR_WORKSPACE_TOO_SMALL;

    const auto s = static_cast<cudaStream_t>(stream);
    int32_t* inv = static_cast<int32_t*>(workspace);  // [tokens]: the packed row of each token
    KILN_LAUNCH(pad::grid_blocks(tokens, pad::kCheckThreads), pad::kCheckThreads, 0, s, pad::init_inverse_kernel)(
        inv, tokens, status);
    kiln_status result = launch_status();
    if (result != KILN_SUCCESS) return result;
    if (capacity > 0 || nnz != nullptr) {
        KILN_LAUNCH(pad::grid_blocks(capacity, pad::kCheckThreads), pad::kCheckThreads, 0, s,
                    pad::check_indices_kernel<true>)(indices, nnz, static_cast<int>(capacity), static_cast<int>(tokens),
                                                     inv, status);
        result = launch_status();
        if (result != KILN_SUCCESS) return result;
    }
    // Every row of hidden once: packed[inv[r]], or zeros.
    return pad::copy_rows(dtype, packed, inv, hidden, tokens, nullptr, dim, status, s);
}

kiln_status kiln_padding_gather_fwd(kiln_dtype dtype, const void* hidden, const int32_t* indices, const int32_t* nnz,
                                    int64_t capacity, int64_t batch, int64_t seqlen, int64_t dim, void* packed,
                                    int32_t* status, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!pad::valid_sizes(batch, seqlen, dim, capacity)) return KILN_ERROR_INVALID_SIZE;
    const int64_t tokens = batch * seqlen;
    if (status == nullptr || (tokens > 0 && hidden == nullptr) ||
        (capacity > 0 && (indices == nullptr || packed == nullptr))) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(hidden, elem) || !is_aligned(packed, elem) || !pad::aligned_i32(indices) ||
        !pad::aligned_i32(nnz) || !pad::aligned_i32(status)) {
        return KILN_ERROR_MISALIGNED;
    }

    const auto s = static_cast<cudaStream_t>(stream);
    const cudaError_t err = cudaMemsetAsync(status, 0, sizeof(int32_t), s);  // KILN_DATA_OK
    if (err != cudaSuccess) {
        kiln::t_last_cuda_error = err;
        return KILN_ERROR_CUDA;
    }
    if (capacity > 0 || nnz != nullptr) {
        KILN_LAUNCH(pad::grid_blocks(capacity, pad::kCheckThreads), pad::kCheckThreads, 0, s,
                    pad::check_indices_kernel<false>)(indices, nnz, static_cast<int>(capacity),
                                                      static_cast<int>(tokens), nullptr, status);
        const kiln_status result = launch_status();
        if (result != KILN_SUCCESS) return result;
    }
    return pad::copy_rows(dtype, hidden, indices, packed, capacity, nnz, dim, status, s);
}

}  // extern "C"

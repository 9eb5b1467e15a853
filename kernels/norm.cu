// Norm family: fused residual add + LayerNorm / RMSNorm over the last dimension, forward and
// backward, with deterministic column sums for dγ and dβ (kernels/include/kiln.h).
//
//   s = x + residual (f32, never rounded before normalising)
//   LayerNorm: mean = Σs/D, var = Σ(s − mean)²/D (two passes), rstd = 1/√(var + eps)
//   RMSNorm:   mean = 0,    rstd = 1/√(Σs²/D + eps)
//   x̂ = (s − mean)·rstd,  y = x̂·γ + β
//   backward: g = dy·γ, dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (RMSNorm drops mean(g)),
//             ds = dx + dresidual_out, dγ = Σ_rows dy·x̂, dβ = Σ_rows dy.
//   Both directions center LayerNorm rows as (s − s₀) − Σ(s − s₀)/D with s₀ the row's first
//   element, never through the saved f32 mean (see row_shift); the backward recomputes that sum
//   beside its own two, one three-value row reduction.
//
// Layout of this file: launch constants, device helpers, the kernels (rows cached in registers;
// long rows looped through the cache; the dγ/dβ finalize), the launch plans, validation, and
// the C ABI. Row groups and their sums: common/norm_row.cuh.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/norm_row.cuh"
#include "common/ptx.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln::norm {

// ------------------------------------------------------------------------------------------
// Launch constants
// ------------------------------------------------------------------------------------------

// The ABI's largest row: 64 Ki elements (a 256 KiB f32 row).
constexpr int kMaxDim = 65536;

// Bound on rows·dim: far beyond any device memory, it keeps every byte count, chunk count and
// grid size of a launch inside int64 and CUDA's 2^31 − 1 blocks.
constexpr int64_t kMaxElements = int64_t(1) << 50;

// CUDA's block limit, so the widest row group a register-cached kernel can use.
constexpr int kMaxRowThreads = 1024;

// Threads per block when a row needs fewer: short rows share a block (blockDim.y row groups) so
// a block stays 8 warps, which keeps 8 blocks resident per SM instead of 32 one-warp blocks
// (the per-SM block limit would otherwise leave half the threads idle).
constexpr int kBlockThreads = 256;

// Elements of a row each thread keeps in registers in the forward: the row s (16 floats) plus
// addressing stays under the 64 registers that 1024-thread blocks allow, and 16 bf16 elements
// are two 16-byte loads in flight per thread. Rows up to 1024·16 = 16384 elements are cached.
constexpr int kFwdElems = 16;

// The backward keeps, per element, x̂ and the dγ/dβ accumulators (3 floats) plus dy and
// dresidual_out in storage form: 8 elements per thread fit 64 registers without spilling.
// Rows up to 1024·8 = 8192 elements are cached.
constexpr int kBwdElems = 8;
constexpr int kFwdCachedMaxDim = kMaxRowThreads * kFwdElems;
constexpr int kBwdCachedMaxDim = kMaxRowThreads * kBwdElems;

// Longer rows (up to kMaxDim) take one 1024-thread block per row and re-read the row from
// L1/L2 for each pass instead of caching it.
constexpr int kLoopThreads = 1024;

// Unrolling of the looped kernels' strided passes over a row, in 16-byte packs: two packs'
// loads in flight per thread (the compiler's default of 4 spilled the f32 backward); the scalar
// path unrolls as many scalars (16 for 16-bit types), so it keeps as many bytes in flight.
constexpr int kLoopUnrollPacks = 2;
template <typename T, int kW>
constexpr int kLoopUnroll = kLoopUnrollPacks * kVecBytes / static_cast<int>(kW * sizeof(T));

// Launch bounds of every 1024-thread kernel: one resident block per SM, so 64 registers per
// thread. Left unstated, ptxas squeezed some kernels to 32 registers and spilled.
constexpr int kMinBlocksPerSm = 1;

// Bytes of each tensor a thread handles per row in the looped backward's second phase: one
// 16-byte pack (or 8 / 4 scalars), so the loads of x, residual, dy and dresidual_out and two
// accumulators per element fit 64 registers (two f32 packs spilled).
constexpr int kLoopSliceBytes = kVecBytes;

// The forward grid-strides over rows; this cap (≈ 500 waves of an H100) only bounds the grid.
constexpr int64_t kMaxFwdBlocks = int64_t(1) << 16;

// The pipelined forward (fwd_pipelined_kernel) takes rows of the 16-byte path whose row group
// is at most kPipeMaxThreads threads (dim ≤ 512·16 = 8192; its launch bounds then leave ptxas
// 128 registers). Its ring holds kPipeStages rows (kPipeStages − 1 in flight while one is
// worked on: a LayerNorm row's reductions take about a third of a DRAM latency, so two cover
// it, and a third would cost a block per SM at dim 4096), or 2 when that would not fit, with
// γ/β in at most kPipeMaxShared bytes of shared memory per block (two such blocks fit an SM).
constexpr int kPipeMaxThreads = 512;
constexpr int kPipeStages = 3;
constexpr size_t kPipeMaxShared = 112 * 1024;
// The pipelined backward reads its chunk's rstd and shift into shared memory once, a row per
// thread: chunks of at most as many rows as its block has threads (≥ 256: every chunk of a
// problem below 256·1024 rows, see partition(); larger ones take the register-cached kernel).
// Two 512-thread blocks of the pipelined backward per SM: 64 registers (left free, ptxas took
// 76-93 and a 512-thread row, dim 4096 in 16-bit types, ran one block per SM).
constexpr int kBwdPipeMinBlocks = 2;

// The backward's fixed partition of rows into chunks: one block per chunk, each with its own
// dγ/dβ partial row [dim] in the workspace. A chunk has at least kMinRowsPerChunk rows, so the
// partials (dγ and dβ, 4 bytes written and 4 read back each: 16 bytes per column and chunk)
// stay ≤ 16/(64·6) ≈ 4% of the ≥ 6 bytes per element of data; at most kMaxChunks chunks (about
// 4 waves of 512-thread blocks on an H100) once rows are plentiful. Depends only on
// (rows, dim): see partition().
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kMaxChunks = 1024;

// A looped-backward chunk keeps four f32 coefficients per row in shared memory (4 KiB); more
// chunks are used when rows would exceed this. Partials then stay < 1% of the data (dim > 8192).
constexpr int kLoopMaxRowsPerChunk = 256;

// Finalize blocks: 32 columns (a warp reads 128 contiguous bytes of a partial row) by 8 lanes
// that take every 8th chunk and combine in a fixed tree.
constexpr int kFinalizeColumns = 32;
constexpr int kFinalizeLanes = 8;

static_assert(kFwdElems % kVecWidth<__half> == 0 && kBwdElems % kVecWidth<__half> == 0,
              "elements per thread must be whole 16-byte packs of every storage type");
static_assert(kBwdCachedMaxDim <= kFwdCachedMaxDim && kFwdCachedMaxDim <= kMaxDim, "cached paths are the short rows");
static_assert(kLoopThreads == kMaxRowThreads, "the looped kernels are one whole-block row group");

// ------------------------------------------------------------------------------------------
// Kernel arguments. Pointers may be NULL where the ABI makes them optional; outputs may alias
// their inputs exactly (y == x, residual_out == residual, dx == dy, ...): every element is read
// before any thread writes it.
// ------------------------------------------------------------------------------------------

template <typename T>
struct FwdParams {
    const T* x;          // [rows, dim]
    const T* residual;   // [rows, dim] or NULL
    const float* gamma;  // [dim] or NULL (1)
    const float* beta;   // [dim] or NULL (0)
    T* y;                // [rows, dim]
    T* residual_out;     // [rows, dim] or NULL: s rounded to T
    float* mean;         // [rows] or NULL (always NULL for RMSNorm)
    float* rstd;         // [rows] or NULL
    int64_t rows;
    int dim;
    float eps;
};

template <typename T>
struct BwdParams {
    const T* dy;             // [rows, dim]
    const T* x;              // [rows, dim]
    const T* residual;       // [rows, dim] or NULL
    // No mean: the ABI still asks for the forward's (LayerNorm), but the kernels recompute each
    // row's centre exactly as the forward did; x̂ from the rounded f32 mean would lose ~1e-4 of
    // x̂'s precision on rows whose |mean|/std is ~1e4.
    const float* rstd;       // [rows]
    const float* gamma;      // [dim] or NULL (1)
    const T* dresidual_out;  // [rows, dim] or NULL
    T* dx;                   // [rows, dim]
    T* dresidual;            // [rows, dim] or NULL
    float* dgamma_part;      // [chunks, dim]: one partial row per chunk (dgamma itself for one chunk), or NULL
    float* dbeta_part;       // [chunks, dim], likewise
    int64_t rows;
    int dim;
    int64_t rows_per_chunk;  // block b takes rows [b·rows_per_chunk, (b+1)·rows_per_chunk) ∩ [0, rows)
};

// ------------------------------------------------------------------------------------------
// Device helpers. kW is the pack width: kVecWidth<T> (16-byte accesses; dim % kW == 0 and every
// pointer 16-byte aligned) or 1 (any element-aligned pointer).
// ------------------------------------------------------------------------------------------

// s = x + residual for the kW elements at x + off.
template <typename T, int kW>
__device__ __forceinline__ void load_sum(const T* x, const T* residual, int64_t off, float (&s)[kW]) {
    const Pack<T, kW> px = load_pack<T, kW>(x + off);
#pragma unroll
    for (int j = 0; j < kW; ++j) s[j] = to_float(px.v[j]);
    if (residual != nullptr) {
        const Pack<T, kW> pr = load_pack<T, kW>(residual + off);
#pragma unroll
        for (int j = 0; j < kW; ++j) s[j] += to_float(pr.v[j]);
    }
}

// kW values of an f32 parameter vector from column col, or `fallback` when p is NULL. With
// kW % 4 == 0 the loads are 16 bytes wide (p + col is then 16-byte aligned).
template <int kW>
__device__ __forceinline__ void load_param(const float* p, int col, float fallback, float (&out)[kW]) {
    if (p == nullptr) {
#pragma unroll
        for (int j = 0; j < kW; ++j) out[j] = fallback;
    } else if constexpr (kW % 4 == 0) {
#pragma unroll
        for (int h = 0; h < kW; h += 4) {
            // kiln's one 16-byte load (LDG.128), which the emulator also sees as one access.
            const Pack<float, 4> v = load_pack<float, 4>(p + col + h);
#pragma unroll
            for (int i = 0; i < 4; ++i) out[h + i] = v.v[i];
        }
    } else {
#pragma unroll
        for (int j = 0; j < kW; ++j) out[j] = p[col + j];
    }
}

// Rounds kW floats to T and stores them at dst + off.
template <typename T, int kW>
__device__ __forceinline__ void store_floats(T* dst, int64_t off, const float (&v)[kW]) {
    Pack<T, kW> out;
#pragma unroll
    for (int j = 0; j < kW; ++j) out.v[j] = from_float<T>(v[j]);
    store_pack<T, kW>(dst + off, out);
}

// The LayerNorm shift: s of the row's first element. The forward sums s − shift and centers
// as (s − shift) − delta with delta = Σ(s − shift)/D, never through the f32 mean itself: a
// constant row gives exactly 0 (so y is exactly β), and a row with a large common offset
// (|s| ~ 1e4, spread ~ 1) keeps the digits that rounding mean to f32 would cost x̂.
// g = dy·γ, rounded once by an explicit multiply that nvcc may not contract: the backward sums g
// for mean(g) and later subtracts mean(g) from g, and a product fused into that subtraction
// (fma(dy, γ, −mean_g)) keeps the low bits the sum lost. At D = 1 (g − mean(g) = 0 exactly)
// that left rstd·(dy·γ − round(dy·γ)), ~1e-5 at eps 1e-5: the H200's first run found it
// (perf/), the emulator, which compiles without contraction, cannot.
__device__ __forceinline__ float upstream_gradient(float dy, float gamma) { return __fmul_rn(dy, gamma); }

template <typename T>
__device__ __forceinline__ float row_shift(const T* x, const T* residual, int64_t off) {
    float s = to_float(x[off]);
    if (residual != nullptr) s += to_float(residual[off]);
    return s;
}

// ------------------------------------------------------------------------------------------
// Kernels: rows cached in registers. A block is blockDim.y row groups of blockDim.x threads
// (a power of two below 32, or whole warps); thread tx of a group owns the packs tx, tx + blockDim.x, ... of its row, at
// most kPacks of them. Block-wide steps sit in loops whose trip count is uniform over the block.
// ------------------------------------------------------------------------------------------

// y = norm(x + residual)·γ + β over rows of dim ≤ kMaxRowThreads·kPacks·kW; also residual_out,
// mean, rstd. Reads sizeof(T) (+ sizeof(T) residual), writes sizeof(T) (+ sizeof(T)
// residual_out) per element; γ, β come from L1; 8 bytes of statistics per row.
template <typename T, int kW, int kPacks, bool kLayer>
__global__ void __launch_bounds__(kMaxRowThreads, kMinBlocksPerSm) fwd_cached_kernel(const FwdParams<T> p) {
    __shared__ float slots[2][1][kMaxRowWarps];
    const int tx = threadIdx.x;
    const int threads = blockDim.x;
    const int packs = p.dim / kW;
    const int64_t step = int64_t(gridDim.x) * blockDim.y;
    int phase = 0;
#pragma unroll 1
    for (int64_t base = int64_t(blockIdx.x) * blockDim.y; base < p.rows; base += step) {
        const int64_t row = base + threadIdx.y;
        const bool valid = row < p.rows;
        const int64_t off = row * p.dim;
        const auto owns = [&](int q) { return valid && tx + q * threads < packs; };
        float s[kPacks][kW];  // (kPacks, kW): this thread's packs of s
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (owns(q)) {
                load_sum<T, kW>(p.x, p.residual, off + int64_t(tx + q * threads) * kW, s[q]);
            } else {
#pragma unroll
                for (int j = 0; j < kW; ++j) s[q][j] = 0.0f;
            }
        }
        float shift = 0.0f;  // s − shift − delta is s − mean without the rounding of the f32 mean
        float delta = 0.0f;
        if constexpr (kLayer) {
            shift = valid ? row_shift(p.x, p.residual, off) : 0.0f;
            float sum[1] = {0.0f};
#pragma unroll
            for (int q = 0; q < kPacks; ++q) {
                if (owns(q)) {
#pragma unroll
                    for (int j = 0; j < kW; ++j) sum[0] += s[q][j] - shift;
                }
            }
            row_group_sum<1>(sum, slots[phase]);
            phase ^= 1;
            delta = sum[0] / static_cast<float>(p.dim);
        }
        const float mean = shift + delta;
        float squares[1] = {0.0f};
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (owns(q)) {
#pragma unroll
                for (int j = 0; j < kW; ++j) {
                    const float c = (s[q][j] - shift) - delta;
                    squares[0] = fmaf(c, c, squares[0]);
                }
            }
        }
        row_group_sum<1>(squares, slots[phase]);
        phase ^= 1;
        const float rstd = 1.0f / sqrtf(squares[0] / static_cast<float>(p.dim) + p.eps);
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (!owns(q)) continue;
            const int col = (tx + q * threads) * kW;
            float gamma[kW], beta[kW], y[kW];
            load_param<kW>(p.gamma, col, 1.0f, gamma);
            load_param<kW>(p.beta, col, 0.0f, beta);
#pragma unroll
            for (int j = 0; j < kW; ++j) y[j] = fmaf(((s[q][j] - shift) - delta) * rstd, gamma[j], beta[j]);
            store_floats<T, kW>(p.y, off + col, y);
            if (p.residual_out != nullptr) store_floats<T, kW>(p.residual_out, off + col, s[q]);
        }
        if (valid && tx == 0) {
            if (kLayer && p.mean != nullptr) p.mean[row] = mean;
            if (p.rstd != nullptr) p.rstd[row] = rstd;
        }
    }
}

// The shared memory of fwd_pipelined_kernel, in 16-byte units: the ring of row copies
// [stage][stream][row group][pack q][thread], then γ and β as float4s
// [vector][pack q][float4 u][thread of the group] (absent ones take none).
struct PipeLayout {
    int ring;
    int params;
    __host__ __device__ size_t bytes() const { return static_cast<size_t>(ring + params) * kVecBytes; }
};

__host__ __device__ inline PipeLayout pipe_layout(int threads, int rows_per_block, int packs_per_thread,
                                                  int quads_per_pack, int streams, int stages, int param_vectors) {
    return PipeLayout{stages * streams * rows_per_block * packs_per_thread * threads,
                      param_vectors * packs_per_thread * quads_per_pack * threads};
}

// fwd_cached_kernel's result, pipelined (same block shape and formulas; LayerNorm's statistics
// in one Chan round): persistent blocks (the grid fills the device once) walk their rows with
// the next kStages − 1 rows' x (and residual) already copying into shared memory by cp.async,
// so a row's reductions and stores never leave the memory system idle. Each thread copies the
// packs it reads itself, so no barrier guards the ring. γ and β are read once per block into
// shared memory. LayerNorm combines (mean, M2) of s − shift in one round (counts are computed,
// not shuffled; each warp's shift is its first lane's first s, the group's result is relative
// to the row's first s as in fwd_cached_kernel, so a constant row still gives exactly β).
template <typename T, int kPacks, bool kLayer, int kStages>
__global__ void __launch_bounds__(kPipeMaxThreads) fwd_pipelined_kernel(const FwdParams<T> p) {
    constexpr int kW = kVecWidth<T>;
    constexpr int kQuads = kW / 4;  // float4s of γ per pack
    using P = Pack<T, kW>;
    __shared__ float slots[2][kLayer ? 3 : 1][kMaxRowWarps];
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int threads = blockDim.x;
    const int rows_per_block = blockDim.y;
    const int packs = p.dim / kW;
    const int streams = p.residual != nullptr ? 2 : 1;
    const int vectors = (p.gamma != nullptr) + (p.beta != nullptr);
    const PipeLayout layout = pipe_layout(threads, rows_per_block, kPacks, kQuads, streams, kStages, vectors);
    P* const ring = dynamic_shared<P>();
    float4* const params = reinterpret_cast<float4*>(ring + layout.ring);
    const auto slot = [&](int stage, int stream, int q) {
        return ring + (((stage * streams + stream) * rows_per_block + ty) * kPacks + q) * threads + tx;
    };
    const auto param = [&](int vector, int q, int u, int thread) {
        return params + ((vector * kPacks + q) * kQuads + u) * threads + thread;
    };
    const auto owns = [&](int q) { return tx + q * threads < packs; };
    ptx::CpAsync pipe;
    // Starts copying `row` (if it exists) into `stage`; one commit group per call, always.
    const auto fetch = [&](int64_t row, int stage) {
        if (row < p.rows) {
            const int64_t off = row * p.dim;
#pragma unroll
            for (int q = 0; q < kPacks; ++q) {
                if (!owns(q)) continue;
                const int64_t at = off + int64_t(tx + q * threads) * kW;
                pipe.copy16(slot(stage, 0, q), p.x + at);
                if (p.residual != nullptr) pipe.copy16(slot(stage, 1, q), p.residual + at);
            }
        }
        pipe.commit();
    };
    const int64_t step = int64_t(gridDim.x) * rows_per_block;
    const int64_t first = int64_t(blockIdx.x) * rows_per_block + ty;
#pragma unroll
    for (int k = 0; k < kStages - 1; ++k) fetch(first + k * step, k);
    // γ and β, once for all the block's rows: the block copies them in column order (whole
    // sectors per warp request) to where each thread reads its own columns.
    {
        const int quads = packs * kQuads;  // float4s of one vector
        const int linear = ty * threads + tx;
        for (int i = linear; i < vectors * quads; i += threads * rows_per_block) {
            const int vector = i / quads;
            const int f = i - vector * quads;  // float4 f holds columns 4f..4f+3
            const int idx = f / kQuads;        // the pack, owned by thread idx % threads as its pack q
            const float* src = vector == 0 && p.gamma != nullptr ? p.gamma : p.beta;
            *param(vector, idx / threads, f % kQuads, idx % threads) = *reinterpret_cast<const float4*>(src + 4 * f);
        }
    }
    __syncthreads();
    int stage = 0;
    int phase = 0;
#pragma unroll 1
    for (int64_t row = first; row - ty < p.rows; row += step) {  // uniform over the block
        fetch(row + (kStages - 1) * step, stage == 0 ? kStages - 1 : stage - 1);  // the stage read last
        pipe.template wait<kStages - 1>();  // this thread's copies of `row` have landed
        const bool valid = row < p.rows;
        const int64_t off = row * p.dim;
        float s[kPacks][kW];
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
#pragma unroll
            for (int j = 0; j < kW; ++j) s[q][j] = 0.0f;
            if (!valid || !owns(q)) continue;
            const P px = *slot(stage, 0, q);
#pragma unroll
            for (int j = 0; j < kW; ++j) s[q][j] = to_float(px.v[j]);
            if (p.residual != nullptr) {
                const P pr = *slot(stage, 1, q);
#pragma unroll
                for (int j = 0; j < kW; ++j) s[q][j] += to_float(pr.v[j]);
            }
        }
        float shift = 0.0f;
        float delta = 0.0f;
        float rstd;
        if constexpr (kLayer) {
            // This warp's (or sub-warp group's) shift: its first lane's first s, which lane 0
            // of every warp holds (a warp's first thread owns pack 0 of its columns).
            const float warp_shift = __shfl_sync(kFullWarp, s[0][0], 0, threads < kWarpSize ? threads : kWarpSize);
            // Elements of group threads [first_tx, first_tx + width) in this row.
            const auto count = [&](int first_tx, int width) {
                int n = 0;
                if (valid && first_tx < threads) {
                    const int w = width < threads - first_tx ? width : threads - first_tx;
#pragma unroll
                    for (int q = 0; q < kPacks; ++q) {
                        const int here = packs - q * threads - first_tx;  // threads from first_tx owning pack q
                        n += here <= 0 ? 0 : here < w ? here : w;
                    }
                }
                return static_cast<float>(n * kW);
            };
            Moments m{count(tx, 1), warp_shift, 0.0f, 0.0f};
            float sum = 0.0f;
#pragma unroll
            for (int q = 0; q < kPacks; ++q) {
#pragma unroll
                for (int j = 0; j < kW; ++j) sum += owns(q) ? s[q][j] - warp_shift : 0.0f;
            }
            m.mean = m.n > 0.0f ? __fdividef(sum, m.n) : 0.0f;
#pragma unroll
            for (int q = 0; q < kPacks; ++q) {
#pragma unroll
                for (int j = 0; j < kW; ++j) {
                    const float c = (s[q][j] - warp_shift) - m.mean;
                    m.m2 = owns(q) ? fmaf(c, c, m.m2) : m.m2;
                }
            }
            m = row_group_moments(m, slots[phase], count);
            shift = m.shift;
            delta = m.mean;
            rstd = 1.0f / sqrtf(m.m2 / static_cast<float>(p.dim) + p.eps);
        } else {
            float squares[1] = {0.0f};
#pragma unroll
            for (int q = 0; q < kPacks; ++q) {
#pragma unroll
                for (int j = 0; j < kW; ++j) squares[0] = fmaf(s[q][j], s[q][j], squares[0]);
            }
            row_group_sum<1>(squares, slots[phase]);
            rstd = 1.0f / sqrtf(squares[0] / static_cast<float>(p.dim) + p.eps);
        }
        phase ^= 1;
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (!valid || !owns(q)) continue;
            float gamma[kW], beta[kW], y[kW];
#pragma unroll
            for (int u = 0; u < kQuads; ++u) {
                const float4 g = p.gamma != nullptr ? *param(0, q, u, tx) : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
                const float4 b =
                    p.beta != nullptr ? *param(vectors - 1, q, u, tx) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                gamma[4 * u] = g.x, gamma[4 * u + 1] = g.y, gamma[4 * u + 2] = g.z, gamma[4 * u + 3] = g.w;
                beta[4 * u] = b.x, beta[4 * u + 1] = b.y, beta[4 * u + 2] = b.z, beta[4 * u + 3] = b.w;
            }
            const int64_t at = off + int64_t(tx + q * threads) * kW;
#pragma unroll
            for (int j = 0; j < kW; ++j) y[j] = fmaf(((s[q][j] - shift) - delta) * rstd, gamma[j], beta[j]);
            store_floats<T, kW>(p.y, at, y);
            if (p.residual_out != nullptr) store_floats<T, kW>(p.residual_out, at, s[q]);
        }
        if (valid && tx == 0) {
            if (kLayer && p.mean != nullptr) p.mean[row] = shift + delta;
            if (p.rstd != nullptr) p.rstd[row] = rstd;
        }
        stage = stage + 1 == kStages ? 0 : stage + 1;
    }
    pipe.template wait<0>();  // nothing is left copying when the block ends
}

// The row means of the backward's dx formula from its row sums (LayerNorm: Σ (s − shift), Σ g,
// Σ g·(s − shift); RMSNorm: Σ g·s): delta = Σ(s − shift)/D, mean(g), and mean(g·x̂) =
// rstd·(Σ g·(s − shift) − delta·Σ g)/D, both terms O(spread), not O(|s|). RMSNorm: delta =
// mean(g) = 0.
struct RowMeans {
    float delta;
    float mean_g;
    float mean_gx;
};

template <bool kLayer, int kSums>
__device__ __forceinline__ RowMeans row_means(const float (&sums)[kSums], float rstd, int dim_elems) {
    const float dim = static_cast<float>(dim_elems);
    if constexpr (kLayer) {
        const float delta = sums[0] / dim;
        return RowMeans{delta, sums[1] / dim, rstd * fmaf(-delta, sums[1], sums[2]) / dim};
    } else {
        return RowMeans{0.0f, 0.0f, rstd * sums[0] / dim};
    }
}

// This block's dγ/dβ partial rows (its chunk's): acc is (2, kPacks, kW), Σ dy·x̂ then Σ dy, for
// thread threadIdx.x's packs threadIdx.x + q·blockDim.x of the row.
template <typename T, int kPacks, int kW>
__device__ __forceinline__ void store_partials(const BwdParams<T>& p, const float (&acc)[2 * kPacks * kW]) {
    constexpr int kElems = kPacks * kW;
    const int64_t chunk = int64_t(blockIdx.x) * p.dim;
#pragma unroll
    for (int q = 0; q < kPacks; ++q) {
        const int idx = threadIdx.x + q * blockDim.x;
        if (idx >= p.dim / kW) continue;
#pragma unroll
        for (int j = 0; j < kW; ++j) {
            const int64_t at = chunk + int64_t(idx) * kW + j;
            if (p.dgamma_part != nullptr) p.dgamma_part[at] = acc[q * kW + j];
            if (p.dbeta_part != nullptr) p.dbeta_part[at] = acc[kElems + q * kW + j];
        }
    }
}

// One pack's terms of the backward's row sums (LayerNorm Σ (s − shift), Σ g, Σ g·(s − shift);
// RMSNorm Σ g·s), keeping c = s − shift for the gradient pass. Both register-cached backward
// kernels add their packs through it, so their sums are the same bits.
template <bool kLayer, typename T, int kW, int kSums>
__device__ __forceinline__ void add_row_sums(const float (&s)[kW], const Pack<T, kW>& dy, const float (&gamma)[kW],
                                             float shift, float (&c)[kW], float (&sums)[kSums]) {
#pragma unroll
    for (int j = 0; j < kW; ++j) {
        const float g = upstream_gradient(to_float(dy.v[j]), gamma[j]);
        c[j] = s[j] - shift;
        if constexpr (kLayer) {
            sums[0] += c[j];
            sums[1] += g;
        }
        sums[kSums - 1] = fmaf(g, c[j], sums[kSums - 1]);
    }
}

// One pack's ds = dx (+ dresidual_out `dres` when with_dres) from the row means, and its dγ/dβ
// terms (dy·x̂, dy) added to acc (2, kPacks, kW) at pack q: the gradient pass of both
// register-cached backward kernels.
template <typename T, int kW, int kElems>
__device__ __forceinline__ void pack_gradient(const Pack<T, kW>& dy, const Pack<T, kW>& dres, bool with_dres,
                                              const float (&gamma)[kW],
                                              const float (&c)[kW], const RowMeans& m, float rstd, int q,
                                              float (&acc)[2 * kElems], float (&ds)[kW]) {
#pragma unroll
    for (int j = 0; j < kW; ++j) {
        const float d = to_float(dy.v[j]);
        const float g = upstream_gradient(d, gamma[j]);
        const float xhat = (c[j] - m.delta) * rstd;
        acc[q * kW + j] = fmaf(d, xhat, acc[q * kW + j]);
        acc[kElems + q * kW + j] += d;
        ds[j] = rstd * fmaf(-xhat, m.mean_gx, g - m.mean_g);
        if (with_dres) ds[j] += to_float(dres.v[j]);
    }
}

// dx = ds, dresidual = ds for the rows of chunk blockIdx.x (dim ≤ kMaxRowThreads·kPacks·kW), and
// the chunk's column partials Σ dy·x̂ → dgamma_part[chunk], Σ dy → dbeta_part[chunk].
// Reads 2·sizeof(T) (+ residual, dresidual_out), writes sizeof(T) (+ dresidual) per element;
// γ from L1, 8 bytes of statistics per row, 8 bytes of partials per column per chunk.
template <typename T, int kW, int kPacks, bool kLayer>
__global__ void __launch_bounds__(kMaxRowThreads, kMinBlocksPerSm) bwd_cached_kernel(const BwdParams<T> p) {
    constexpr int kElems = kPacks * kW;
    // The row sums: LayerNorm Σ (s − shift), Σ g, Σ g·(s − shift); RMSNorm Σ g·s.
    constexpr int kSums = kLayer ? 3 : 1;
    __shared__ float slots[2][kSums][kMaxRowWarps];
    __shared__ float lanes[kBlockThreads * lane_record_floats<2 * kElems>()];  // row groups' records, blockDim.y > 1
    const int tx = threadIdx.x;
    const int threads = blockDim.x;
    const int packs = p.dim / kW;
    const int64_t begin = int64_t(blockIdx.x) * p.rows_per_chunk;
    const int64_t end = begin + p.rows_per_chunk < p.rows ? begin + p.rows_per_chunk : p.rows;
    float acc[2 * kElems];  // (2, kPacks, kW): Σ dy·x̂ then Σ dy over this group's rows
#pragma unroll
    for (int i = 0; i < 2 * kElems; ++i) acc[i] = 0.0f;
    int phase = 0;
#pragma unroll 1
    for (int64_t base = begin; base < end; base += blockDim.y) {
        const int64_t row = base + threadIdx.y;
        const bool valid = row < end;
        const int64_t off = row * p.dim;
        const auto owns = [&](int q) { return valid && tx + q * threads < packs; };
        const float rstd = valid ? p.rstd[row] : 0.0f;
        // The forward's shift (LayerNorm; 0 for RMSNorm, whose x̂ is s·rstd).
        const float shift = (kLayer && valid) ? row_shift(p.x, p.residual, off) : 0.0f;
        // x and dy are loaded before the row sum, so their latency overlaps one wait; dy stays in
        // storage form (half the registers of f32 for 16-bit types) and g = dy·γ is recomputed
        // after the sum. dresidual_out is read after it: holding it too would spill.
        float c[kPacks][kW];     // (kPacks, kW): s − shift
        Pack<T, kW> dy[kPacks];  // (kPacks,) packs of kW
        float sums[kSums];
#pragma unroll
        for (int k = 0; k < kSums; ++k) sums[k] = 0.0f;
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                c[q][j] = 0.0f;
                dy[q].v[j] = from_float<T>(0.0f);
            }
            if (!owns(q)) continue;
            const int col = (tx + q * threads) * kW;
            float s[kW], gamma[kW];
            load_sum<T, kW>(p.x, p.residual, off + col, s);
            dy[q] = load_pack<T, kW>(p.dy + off + col);
            load_param<kW>(p.gamma, col, 1.0f, gamma);
            add_row_sums<kLayer>(s, dy[q], gamma, shift, c[q], sums);
        }
        row_group_sum<kSums>(sums, slots[phase]);
        phase ^= 1;
        const RowMeans m = row_means<kLayer>(sums, rstd, p.dim);
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (!owns(q)) continue;
            const int col = (tx + q * threads) * kW;
            float gamma[kW], ds[kW];
            load_param<kW>(p.gamma, col, 1.0f, gamma);
            Pack<T, kW> dres{};
            if (p.dresidual_out != nullptr) dres = load_pack<T, kW>(p.dresidual_out + off + col);
            pack_gradient<T, kW, kElems>(dy[q], dres, p.dresidual_out != nullptr, gamma, c[q], m, rstd, q, acc, ds);
            store_floats<T, kW>(p.dx, off + col, ds);
            if (p.dresidual != nullptr) store_floats<T, kW>(p.dresidual, off + col, ds);
        }
    }
    // Row groups of one block own the same columns: a fixed tree adds them into group 0.
    if (blockDim.y > 1) sum_over_lanes<2 * kElems>(acc, lanes);
    if (threadIdx.y == 0) store_partials<T, kPacks, kW>(p, acc);
}

// The shared memory of bwd_pipelined_kernel, in bytes: the ring of row copies
// [stage][stream][row group][pack q][thread] (streams x, dy, then residual and dresidual_out
// when given), γ as float4s [pack q][float4 u][thread of the group] when given, then the
// chunk's rstd and (LayerNorm) shift per row (the shift filled only for groups wider than a
// warp). After the rows, the ring holds sum_over_lanes' records.
struct BwdPipeLayout {
    size_t ring;
    size_t gamma;
    size_t coefs;
    __host__ __device__ size_t bytes() const { return ring + gamma + coefs; }
};

__host__ __device__ inline BwdPipeLayout bwd_pipe_layout(int threads, int rows_per_block, int packs_per_thread,
                                                         int elems_per_pack, int streams, int stages, bool gamma,
                                                         int64_t chunk_rows, bool layer) {
    const size_t per_thread = static_cast<size_t>(packs_per_thread) * kVecBytes;
    return BwdPipeLayout{static_cast<size_t>(stages * streams * rows_per_block * threads) * per_thread,
                         gamma ? static_cast<size_t>(threads * packs_per_thread * elems_per_pack) * sizeof(float) : 0,
                         static_cast<size_t>(chunk_rows) * (layer ? 2 : 1) * sizeof(float)};
}

// bwd_cached_kernel's result (same block shape, chunks, formulas and order of every sum, so the
// same bits), pipelined as fwd_pipelined_kernel: the block walks its chunk with the next
// kStages − 1 rows' x, dy (residual, dresidual_out) copying into a shared-memory ring by
// cp.async while it reduces and stores the current one; γ, and every row's rstd and LayerNorm
// shift, are read once per block (the coefficients in one parallel round trip, not one per row
// after each row's wait); dy and dresidual_out are read again from the ring after the row's
// reduction instead of being held in registers across it.
template <typename T, int kPacks, bool kLayer, int kStages>
__global__ void __launch_bounds__(kPipeMaxThreads, kBwdPipeMinBlocks) bwd_pipelined_kernel(const BwdParams<T> p) {
    constexpr int kW = kVecWidth<T>;
    constexpr int kQuads = kW / 4;
    constexpr int kElems = kPacks * kW;
    constexpr int kSums = kLayer ? 3 : 1;  // as bwd_cached_kernel
    using P = Pack<T, kW>;
    __shared__ float slots[2][kSums][kMaxRowWarps];
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int threads = blockDim.x;
    const int rows_per_block = blockDim.y;
    const int packs = p.dim / kW;
    const int64_t begin = int64_t(blockIdx.x) * p.rows_per_chunk;
    const int64_t end = begin + p.rows_per_chunk < p.rows ? begin + p.rows_per_chunk : p.rows;
    const int stream_res = 2;
    const int stream_dres = p.residual != nullptr ? 3 : 2;
    const int streams = stream_dres + (p.dresidual_out != nullptr ? 1 : 0);
    const BwdPipeLayout layout = bwd_pipe_layout(threads, rows_per_block, kPacks, kW, streams, kStages,
                                                 p.gamma != nullptr, p.rows_per_chunk, kLayer);
    unsigned char* const base = dynamic_shared<unsigned char>();
    P* const ring = reinterpret_cast<P*>(base);
    float4* const gamma4 = reinterpret_cast<float4*>(base + layout.ring);
    float* const coef_rstd = reinterpret_cast<float*>(base + layout.ring + layout.gamma);
    float* const coef_shift = coef_rstd + p.rows_per_chunk;
    const auto slot = [&](int stage, int stream, int q) {
        return ring + (((stage * streams + stream) * rows_per_block + ty) * kPacks + q) * threads + tx;
    };
    const auto owns = [&](int q) { return tx + q * threads < packs; };
    ptx::CpAsync pipe;
    const auto fetch = [&](int64_t row, int stage) {
        if (row < end) {
            const int64_t off = row * p.dim;
#pragma unroll
            for (int q = 0; q < kPacks; ++q) {
                if (!owns(q)) continue;
                const int64_t at = off + int64_t(tx + q * threads) * kW;
                pipe.copy16(slot(stage, 0, q), p.x + at);
                pipe.copy16(slot(stage, 1, q), p.dy + at);
                if (p.residual != nullptr) pipe.copy16(slot(stage, stream_res, q), p.residual + at);
                if (p.dresidual_out != nullptr) pipe.copy16(slot(stage, stream_dres, q), p.dresidual_out + at);
            }
        }
        pipe.commit();
    };
    const int64_t first = begin + ty;
#pragma unroll
    for (int k = 0; k < kStages - 1; ++k) fetch(first + k * rows_per_block, k);
    // Once per block: γ (column order, whole sectors per request) and the chunk's coefficients.
    const int linear = ty * threads + tx;
    const int block_threads = threads * rows_per_block;
    if (p.gamma != nullptr) {
        for (int f = linear; f < packs * kQuads; f += block_threads) {
            const int idx = f / kQuads;
            gamma4[((idx / threads) * kQuads + f % kQuads) * threads + idx % threads] =
                *reinterpret_cast<const float4*>(p.gamma + 4 * f);
        }
    }
    if (linear < end - begin) {  // a chunk has at most as many rows as the block threads (launch_bwd_pipelined)
        coef_rstd[linear] = p.rstd[begin + linear];
        if (kLayer && threads > kWarpSize) coef_shift[linear] = row_shift(p.x, p.residual, (begin + linear) * p.dim);
    }
    __syncthreads();
    const auto gamma_of = [&](int q, float (&g)[kW]) {
#pragma unroll
        for (int u = 0; u < kQuads; ++u) {
            const float4 v =
                p.gamma != nullptr ? gamma4[(q * kQuads + u) * threads + tx] : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
            g[4 * u] = v.x, g[4 * u + 1] = v.y, g[4 * u + 2] = v.z, g[4 * u + 3] = v.w;
        }
    };
    float acc[2 * kElems];  // (2, kPacks, kW): Σ dy·x̂ then Σ dy over this group's rows
#pragma unroll
    for (int i = 0; i < 2 * kElems; ++i) acc[i] = 0.0f;
    int stage = 0;
    int phase = 0;
#pragma unroll 1
    for (int64_t row = first; row - ty < end; row += rows_per_block) {  // uniform over the block
        fetch(row + (kStages - 1) * rows_per_block, stage == 0 ? kStages - 1 : stage - 1);
        pipe.template wait<kStages - 1>();
        const bool valid = row < end;
        const int64_t off = row * p.dim;
        const float rstd = valid ? coef_rstd[row - begin] : 0.0f;
        // The LayerNorm shift, the row's first s: a group within a warp takes it from its first
        // thread's copy (one shuffle; loading it per row would read a sector per row), a wider
        // group from the block's coefficients.
        float shift = 0.0f;
        if constexpr (kLayer) {
            if (threads <= kWarpSize) {
                float head = 0.0f;
                if (tx == 0 && valid) {
                    head = to_float(slot(stage, 0, 0)->v[0]);
                    if (p.residual != nullptr) head += to_float(slot(stage, stream_res, 0)->v[0]);
                }
                shift = __shfl_sync(kFullWarp, head, 0, threads);
            } else if (valid) {
                shift = coef_shift[row - begin];
            }
        }
        float c[kPacks][kW];  // s − shift
        float sums[kSums];
#pragma unroll
        for (int k = 0; k < kSums; ++k) sums[k] = 0.0f;
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
#pragma unroll
            for (int j = 0; j < kW; ++j) c[q][j] = 0.0f;
            if (!valid || !owns(q)) continue;
            const P px = *slot(stage, 0, q);
            const P pdy = *slot(stage, 1, q);
            P pr{};
            if (p.residual != nullptr) pr = *slot(stage, stream_res, q);
            float gamma[kW], s[kW];
            gamma_of(q, gamma);
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                s[j] = to_float(px.v[j]);
                if (p.residual != nullptr) s[j] += to_float(pr.v[j]);
            }
            add_row_sums<kLayer>(s, pdy, gamma, shift, c[q], sums);
        }
        row_group_sum<kSums>(sums, slots[phase]);
        phase ^= 1;
        const RowMeans m = row_means<kLayer>(sums, rstd, p.dim);
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (!valid || !owns(q)) continue;
            const int64_t at = off + int64_t(tx + q * threads) * kW;
            const P pdy = *slot(stage, 1, q);
            P pd{};
            if (p.dresidual_out != nullptr) pd = *slot(stage, stream_dres, q);
            float gamma[kW], ds[kW];
            gamma_of(q, gamma);
            pack_gradient<T, kW, kElems>(pdy, pd, p.dresidual_out != nullptr, gamma, c[q], m, rstd, q, acc, ds);
            store_floats<T, kW>(p.dx, at, ds);
            if (p.dresidual != nullptr) store_floats<T, kW>(p.dresidual, at, ds);
        }
        stage = stage + 1 == kStages ? 0 : stage + 1;
    }
    pipe.template wait<0>();
    // Row groups of one block own the same columns: a fixed tree adds them into group 0, its
    // records in the ring (free now: every copy has landed and been read).
    if (rows_per_block > 1) {
        __syncthreads();
        sum_over_lanes<2 * kElems>(acc, reinterpret_cast<float*>(base));
    }
    if (ty == 0) store_partials<T, kPacks, kW>(p, acc);
}

// What the looped backward's first phase leaves per row for its second: x̂ = ((s − shift) −
// delta)·rstd, and the two row means of the dx formula.
struct RowCoef {
    float shift;
    float delta;    // Σ(s − shift)/D
    float mean_g;   // mean(g) (0 for RMSNorm)
    float mean_gx;  // mean(g·x̂)
};

// ------------------------------------------------------------------------------------------
// Kernels: long rows (dim above the cached limits). One 1024-thread block per row; each pass
// strides over the row and reads it again (from L1/L2 for the later passes).
// ------------------------------------------------------------------------------------------

// The forward of fwd_cached_kernel for any dim ≤ kMaxDim, in three passes (LayerNorm: shifted
// sum, centered squares, output) or two (RMSNorm). DRAM traffic as fwd_cached_kernel when the
// row stays in cache; up to 3× the reads of x (and residual) when it does not.
template <typename T, int kW, bool kLayer>
__global__ void __launch_bounds__(kLoopThreads, kMinBlocksPerSm) fwd_looped_kernel(const FwdParams<T> p) {
    __shared__ float slots[2][1][kMaxRowWarps];
    const int packs = p.dim / kW;
    int phase = 0;
#pragma unroll 1
    for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const int64_t off = row * p.dim;
        float shift = 0.0f;  // as in fwd_cached_kernel
        float delta = 0.0f;
        if constexpr (kLayer) {
            shift = row_shift(p.x, p.residual, off);
            float sum[1] = {0.0f};
#pragma unroll(kLoopUnroll<T, kW>)
            for (int i = threadIdx.x; i < packs; i += kLoopThreads) {
                float s[kW];
                load_sum<T, kW>(p.x, p.residual, off + int64_t(i) * kW, s);
#pragma unroll
                for (int j = 0; j < kW; ++j) sum[0] += s[j] - shift;
            }
            row_group_sum<1>(sum, slots[phase]);
            phase ^= 1;
            delta = sum[0] / static_cast<float>(p.dim);
        }
        const float mean = shift + delta;
        float squares[1] = {0.0f};
#pragma unroll(kLoopUnroll<T, kW>)
        for (int i = threadIdx.x; i < packs; i += kLoopThreads) {
            float s[kW];
            load_sum<T, kW>(p.x, p.residual, off + int64_t(i) * kW, s);
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                const float c = (s[j] - shift) - delta;
                squares[0] = fmaf(c, c, squares[0]);
            }
        }
        row_group_sum<1>(squares, slots[phase]);
        phase ^= 1;
        const float rstd = 1.0f / sqrtf(squares[0] / static_cast<float>(p.dim) + p.eps);
#pragma unroll(kLoopUnroll<T, kW>)
        for (int i = threadIdx.x; i < packs; i += kLoopThreads) {
            const int col = i * kW;
            float s[kW], gamma[kW], beta[kW], y[kW];
            load_sum<T, kW>(p.x, p.residual, off + col, s);
            load_param<kW>(p.gamma, col, 1.0f, gamma);
            load_param<kW>(p.beta, col, 0.0f, beta);
#pragma unroll
            for (int j = 0; j < kW; ++j) y[j] = fmaf(((s[j] - shift) - delta) * rstd, gamma[j], beta[j]);
            store_floats<T, kW>(p.y, off + col, y);
            if (p.residual_out != nullptr) store_floats<T, kW>(p.residual_out, off + col, s);
        }
        if (threadIdx.x == 0) {
            if (kLayer && p.mean != nullptr) p.mean[row] = mean;
            if (p.rstd != nullptr) p.rstd[row] = rstd;
        }
    }
}

// The backward of bwd_cached_kernel for any dim ≤ kMaxDim, for the ≤ kLoopMaxRowsPerChunk rows
// of chunk blockIdx.x. Phase A: each row's mean(g) and mean(g·x̂) (whole block per row) into
// shared memory. Phase B: column slices of kLoopThreads·kLoopSliceBytes bytes; each thread walks
// the chunk's rows for its columns, writing ds and accumulating dγ, dβ in registers.
// Reads x, dy (and residual) twice, dresidual_out once; writes as bwd_cached_kernel.
template <typename T, int kW, bool kLayer>
__global__ void __launch_bounds__(kLoopThreads, kMinBlocksPerSm) bwd_looped_kernel(const BwdParams<T> p) {
    constexpr int kSlicePacks = kLoopSliceBytes / static_cast<int>(kW * sizeof(T));
    constexpr int kSliceElems = kSlicePacks * kW;
    __shared__ float slots[2][3][kMaxRowWarps];
    __shared__ RowCoef coef[kLoopMaxRowsPerChunk];  // per row of the chunk
    const int packs = p.dim / kW;
    const int64_t begin = int64_t(blockIdx.x) * p.rows_per_chunk;
    const int64_t end = begin + p.rows_per_chunk < p.rows ? begin + p.rows_per_chunk : p.rows;
    int phase = 0;
#pragma unroll 1
    for (int64_t row = begin; row < end; ++row) {
        const int64_t off = row * p.dim;
        const float rstd = p.rstd[row];
        const float shift = kLayer ? row_shift(p.x, p.residual, off) : 0.0f;  // as bwd_cached_kernel
        float sums[3] = {0.0f, 0.0f, 0.0f};  // Σ (s − shift), Σ g, Σ g·(s − shift)
#pragma unroll(kLoopUnroll<T, kW>)
        for (int i = threadIdx.x; i < packs; i += kLoopThreads) {
            const int col = i * kW;
            float s[kW], gamma[kW];
            load_sum<T, kW>(p.x, p.residual, off + col, s);
            const Pack<T, kW> pdy = load_pack<T, kW>(p.dy + off + col);
            load_param<kW>(p.gamma, col, 1.0f, gamma);
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                const float g = upstream_gradient(to_float(pdy.v[j]), gamma[j]);
                const float c = s[j] - shift;
                sums[0] += c;
                sums[1] += g;
                sums[2] = fmaf(g, c, sums[2]);
            }
        }
        row_group_sum<3>(sums, slots[phase]);
        phase ^= 1;
        if (threadIdx.x == 0) {
            const float inv_dim = 1.0f / static_cast<float>(p.dim);
            const float delta = kLayer ? sums[0] * inv_dim : 0.0f;
            coef[row - begin] = RowCoef{shift, delta, kLayer ? sums[1] * inv_dim : 0.0f,
                                        rstd * fmaf(-delta, sums[1], sums[2]) * inv_dim};
        }
    }
    __syncthreads();  // coef complete
    // No block-wide step from here: each thread works on its own columns.
#pragma unroll 1
    for (int slice = 0; slice < packs; slice += kLoopThreads * kSlicePacks) {
        float acc[2 * kSliceElems];  // (2, kSlicePacks, kW): Σ dy·x̂ then Σ dy
#pragma unroll
        for (int i = 0; i < 2 * kSliceElems; ++i) acc[i] = 0.0f;
#pragma unroll 1
        for (int64_t row = begin; row < end; ++row) {
            const int64_t off = row * p.dim;
            const float rstd = p.rstd[row];
            const RowCoef c = coef[row - begin];
#pragma unroll
            for (int q = 0; q < kSlicePacks; ++q) {
                const int idx = slice + threadIdx.x + q * kLoopThreads;
                if (idx >= packs) continue;
                const int col = idx * kW;
                float s[kW], gamma[kW], ds[kW];
                load_sum<T, kW>(p.x, p.residual, off + col, s);
                const Pack<T, kW> pdy = load_pack<T, kW>(p.dy + off + col);
                load_param<kW>(p.gamma, col, 1.0f, gamma);
#pragma unroll
                for (int j = 0; j < kW; ++j) {
                    const float dy = to_float(pdy.v[j]);
                    const float xhat = ((s[j] - c.shift) - c.delta) * rstd;
                    acc[q * kW + j] = fmaf(dy, xhat, acc[q * kW + j]);
                    acc[kSliceElems + q * kW + j] += dy;
                    ds[j] = rstd * fmaf(-xhat, c.mean_gx, upstream_gradient(dy, gamma[j]) - c.mean_g);
                }
                if (p.dresidual_out != nullptr) {
                    const Pack<T, kW> pd = load_pack<T, kW>(p.dresidual_out + off + col);
#pragma unroll
                    for (int j = 0; j < kW; ++j) ds[j] += to_float(pd.v[j]);
                }
                store_floats<T, kW>(p.dx, off + col, ds);
                if (p.dresidual != nullptr) store_floats<T, kW>(p.dresidual, off + col, ds);
            }
        }
        const int64_t chunk = int64_t(blockIdx.x) * p.dim;
#pragma unroll
        for (int q = 0; q < kSlicePacks; ++q) {
            const int idx = slice + threadIdx.x + q * kLoopThreads;
            if (idx >= packs) continue;
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                const int64_t at = chunk + idx * kW + j;
                if (p.dgamma_part != nullptr) p.dgamma_part[at] = acc[q * kW + j];
                if (p.dbeta_part != nullptr) p.dbeta_part[at] = acc[kSliceElems + q * kW + j];
            }
        }
    }
}

// out[c] = Σ_k partials[k, c] over k = 0..chunks in a fixed order, for dγ (blockIdx.y == 0) and
// dβ (1); partials: [2, chunks, dim], out NULL skips. Lanes take chunks ty, ty + 8, ... and a
// fixed tree combines them. Reads 4 bytes per partial, writes 4 per column.
__global__ void __launch_bounds__(kFinalizeColumns* kFinalizeLanes)
    finalize_kernel(const float* partials, int64_t chunks, int dim, float* dgamma, float* dbeta) {
    __shared__ float lanes[kFinalizeColumns * kFinalizeLanes];
    float* out = blockIdx.y == 0 ? dgamma : dbeta;
    if (out == nullptr) return;  // the whole block returns: no barrier is left waiting
    const float* part = partials + int64_t(blockIdx.y) * chunks * dim;
    const int c = blockIdx.x * kFinalizeColumns + threadIdx.x;
    float acc[1] = {0.0f};
    if (c < dim) {
        for (int64_t k = threadIdx.y; k < chunks; k += kFinalizeLanes) acc[0] += part[k * dim + c];
    }
    sum_over_lanes<1>(acc, lanes);
    if (threadIdx.y == 0 && c < dim) out[c] = acc[0];
}

// ------------------------------------------------------------------------------------------
// Launch plans
// ------------------------------------------------------------------------------------------

namespace {

// a ≥ 0, b > 0.
int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// The block of a register-cached kernel: enough threads per row for `packs` packs at
// `packs_per_thread` each (a power of two below a warp, so that rows of 128-256 elements do not
// leave 16-24 lanes of a warp idle, or whole warps), and as many rows per block as fit
// kBlockThreads. packs / packs_per_thread = dim / kElems, so the shape (and with it the order of
// the dγ/dβ sums) depends on dim alone, not on the pack width.
struct RowShape {
    int threads;         // blockDim.x: threads per row
    int rows_per_block;  // blockDim.y
};

RowShape row_shape(int64_t packs, int packs_per_thread) {
    const int64_t needed = ceil_div(packs, packs_per_thread);
    RowShape r;
    if (needed < kWarpSize) {
        int width = 1;
        while (width < needed) width *= 2;
        r.threads = width;
    } else {
        r.threads = static_cast<int>(std::min(ceil_div(needed, kWarpSize) * kWarpSize, int64_t(kMaxRowThreads)));
    }
    r.rows_per_block = std::max(1, kBlockThreads / r.threads);
    return r;
}

// The backward's chunks (see kMinRowsPerChunk): a function of (rows, dim) alone, so dγ and dβ
// are bitwise reproducible whatever the dtype, alignment or device.
struct Partition {
    int64_t rows_per_chunk;
    int64_t chunks;  // = blocks of the backward kernel = partial rows per gradient
};

Partition partition(int64_t rows, int64_t dim) {
    if (rows == 0) return Partition{0, 0};
    int64_t wanted = std::min(ceil_div(rows, kMinRowsPerChunk), kMaxChunks);
    if (dim > kBwdCachedMaxDim) wanted = std::max(wanted, ceil_div(rows, kLoopMaxRowsPerChunk));
    Partition part;
    part.rows_per_chunk = ceil_div(rows, wanted);
    part.chunks = ceil_div(rows, part.rows_per_chunk);  // no empty chunk
    return part;
}

bool valid_sizes(int64_t rows, int64_t dim) {
    return rows >= 0 && dim >= 1 && dim <= kMaxDim && rows <= kMaxElements / dim;
}

// Partial rows for dγ and dβ, [2, chunks, dim] f32.
int64_t workspace_bytes(int64_t rows, int64_t dim) {
    return 2 * partition(rows, dim).chunks * dim * static_cast<int64_t>(sizeof(float));
}

// Blocks of `kernel` (threads, smem) resident at once on the device: the persistent grid.
template <typename Kernel>
int64_t resident_blocks(Kernel* kernel, int threads, size_t smem) {
    int device = 0, sms = 0, per_sm = 0;
    const bool known = cudaGetDevice(&device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess &&
                       cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) == cudaSuccess;
    // A failed query only costs the grid its fit (1024 blocks); its error is cleared.
    return known ? std::max(1, sms) * int64_t(std::max(1, per_sm)) : (cudaGetLastError(), int64_t(1024));
}

// The pipelined forward when its conditions hold (16-byte path, a row group of at most
// kPipeMaxThreads, its shared memory within kPipeMaxShared); false: the caller takes another kernel.
template <typename T, bool kLayer>
bool launch_fwd_pipelined(const FwdParams<T>& p, cudaStream_t stream) {
    constexpr int kW = kVecWidth<T>;
    constexpr int kPacks = kFwdElems / kW;
    const RowShape shape = row_shape(p.dim / kW, kPacks);
    const int threads = shape.threads * shape.rows_per_block;
    if (threads > kPipeMaxThreads) return false;
    const int streams = p.residual != nullptr ? 2 : 1;
    const int vectors = (p.gamma != nullptr) + (p.beta != nullptr);
    const auto layout = [&](int stages) {
        return pipe_layout(shape.threads, shape.rows_per_block, kPacks, kW / 4, streams, stages, vectors).bytes();
    };
    const dim3 block(static_cast<unsigned>(shape.threads), static_cast<unsigned>(shape.rows_per_block));
    const int64_t needed = ceil_div(p.rows, shape.rows_per_block);
    if (layout(kPipeStages) <= kPipeMaxShared) {
        const size_t smem = layout(kPipeStages);
        const int64_t resident = resident_blocks(fwd_pipelined_kernel<T, kPacks, kLayer, kPipeStages>, threads, smem);
        KILN_LAUNCH(static_cast<unsigned>(std::min(needed, resident)), block, smem, stream,
                    fwd_pipelined_kernel<T, kPacks, kLayer, kPipeStages>)(p);
        return true;
    }
    if (layout(2) <= kPipeMaxShared) {
        const size_t smem = layout(2);
        const int64_t resident = resident_blocks(fwd_pipelined_kernel<T, kPacks, kLayer, 2>, threads, smem);
        KILN_LAUNCH(static_cast<unsigned>(std::min(needed, resident)), block, smem, stream,
                    fwd_pipelined_kernel<T, kPacks, kLayer, 2>)(p);
        return true;
    }
    return false;
}

template <typename T, int kW, bool kLayer>
kiln_status launch_fwd(const FwdParams<T>& p, cudaStream_t stream) {
    if constexpr (kW == kVecWidth<T>) {
        if (launch_fwd_pipelined<T, kLayer>(p, stream)) return launch_status();
    }
    if (p.dim <= kFwdCachedMaxDim) {
        constexpr int kPacks = kFwdElems / kW;
        const RowShape shape = row_shape(p.dim / kW, kPacks);
        const int64_t blocks = std::min(ceil_div(p.rows, shape.rows_per_block), kMaxFwdBlocks);
        const dim3 block(static_cast<unsigned>(shape.threads), static_cast<unsigned>(shape.rows_per_block));
        KILN_LAUNCH(static_cast<unsigned>(blocks), block, 0, stream, fwd_cached_kernel<T, kW, kPacks, kLayer>)(p);
    } else {
        const int64_t blocks = std::min(p.rows, kMaxFwdBlocks);
        KILN_LAUNCH(static_cast<unsigned>(blocks), kLoopThreads, 0, stream, fwd_looped_kernel<T, kW, kLayer>)(p);
    }
    return launch_status();
}

// The pipelined backward when its conditions hold (16-byte path, a row group of at most
// kPipeMaxThreads, chunks of at most a block's threads in rows, its shared memory within
// kPipeMaxShared and large enough for sum_over_lanes' records); false: the caller takes another.
template <typename T, bool kLayer>
bool launch_bwd_pipelined(const BwdParams<T>& p, int64_t chunks, cudaStream_t stream) {
    constexpr int kW = kVecWidth<T>;
    constexpr int kPacks = kBwdElems / kW;
    const RowShape shape = row_shape(p.dim / kW, kPacks);
    const int threads = shape.threads * shape.rows_per_block;
    if (threads > kPipeMaxThreads || p.rows_per_chunk > threads) return false;
    const int streams = 2 + (p.residual != nullptr) + (p.dresidual_out != nullptr);
    const auto layout = [&](int stages) {
        return bwd_pipe_layout(shape.threads, shape.rows_per_block, kPacks, kW, streams, stages, p.gamma != nullptr,
                               p.rows_per_chunk, kLayer);
    };
    const size_t records = static_cast<size_t>(threads) * lane_record_floats<2 * kBwdElems>() * sizeof(float);
    const dim3 block(static_cast<unsigned>(shape.threads), static_cast<unsigned>(shape.rows_per_block));
    for (const int stages : {kPipeStages, 2}) {
        const BwdPipeLayout l = layout(stages);
        if (l.bytes() > kPipeMaxShared || l.ring < records) continue;
        if (stages == kPipeStages) {
            KILN_LAUNCH(static_cast<unsigned>(chunks), block, l.bytes(), stream,
                        bwd_pipelined_kernel<T, kPacks, kLayer, kPipeStages>)(p);
        } else {
            KILN_LAUNCH(static_cast<unsigned>(chunks), block, l.bytes(), stream,
                        bwd_pipelined_kernel<T, kPacks, kLayer, 2>)(p);
        }
        return true;
    }
    return false;
}

template <typename T, int kW, bool kLayer>
kiln_status launch_bwd(const BwdParams<T>& p, int64_t chunks, cudaStream_t stream) {
    if constexpr (kW == kVecWidth<T>) {
        if (launch_bwd_pipelined<T, kLayer>(p, chunks, stream)) return launch_status();
    }
    if (p.dim <= kBwdCachedMaxDim) {
        constexpr int kPacks = kBwdElems / kW;
        const RowShape shape = row_shape(p.dim / kW, kPacks);
        const dim3 block(static_cast<unsigned>(shape.threads), static_cast<unsigned>(shape.rows_per_block));
        KILN_LAUNCH(static_cast<unsigned>(chunks), block, 0, stream, bwd_cached_kernel<T, kW, kPacks, kLayer>)(p);
    } else {
        KILN_LAUNCH(static_cast<unsigned>(chunks), kLoopThreads, 0, stream, bwd_looped_kernel<T, kW, kLayer>)(p);
    }
    return launch_status();
}

// ------------------------------------------------------------------------------------------
// Validation and dispatch
// ------------------------------------------------------------------------------------------

enum class Kind { kLayerNorm, kRmsNorm };

// One call as given through the C ABI (forward and backward share it; unused fields are NULL).
struct Problem {
    Kind kind;
    kiln_dtype dtype;
    int64_t rows;
    int64_t dim;
    void* stream;
    // forward
    const void* x;
    const void* residual;
    const float* gamma;
    const float* beta;
    float eps;
    void* y;
    void* residual_out;
    float* mean;  // forward: output; backward: input
    float* rstd;  // likewise
    // backward
    const void* dy;
    const void* dresidual_out;
    void* dx;
    void* dresidual;
    float* dgamma;
    float* dbeta;
    void* workspace;
    int64_t workspace_bytes;
};

bool storage_aligned(int64_t bytes, std::initializer_list<const void*> ptrs) {
    for (const void* ptr : ptrs) {
        if (!is_aligned(ptr, bytes)) return false;
    }
    return true;
}

bool positive_finite(float v) { return std::isfinite(v) && v > 0.0f; }

kiln_status cuda_status(cudaError_t err) {
    if (err == cudaSuccess) return KILN_SUCCESS;
    t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

// dtype, sizes, eps; then rows == 0 (nothing to launch); pointers, alignment.
kiln_status run_fwd(const Problem& p) {
    if (!valid_dtype(p.dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!valid_sizes(p.rows, p.dim)) return KILN_ERROR_INVALID_SIZE;
    if (!positive_finite(p.eps)) return KILN_ERROR_INVALID_VALUE;
    if (p.rows == 0) return KILN_SUCCESS;
    if (p.x == nullptr || p.y == nullptr) return KILN_ERROR_NULL_POINTER;
    const int64_t elem = storage_bytes(p.dtype);
    if (!storage_aligned(elem, {p.x, p.residual, p.y, p.residual_out}) ||
        !storage_aligned(sizeof(float), {p.gamma, p.beta, p.mean, p.rstd})) {
        return KILN_ERROR_MISALIGNED;
    }
    const bool layer = p.kind == Kind::kLayerNorm;
    return with_storage_type(p.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        constexpr int kV = kVecWidth<T>;
        const FwdParams<T> f{static_cast<const T*>(p.x), static_cast<const T*>(p.residual), p.gamma, p.beta,
                             static_cast<T*>(p.y), static_cast<T*>(p.residual_out), layer ? p.mean : nullptr,
                             p.rstd, p.rows, static_cast<int>(p.dim), p.eps};
        const auto stream = static_cast<cudaStream_t>(p.stream);
        const bool vec = p.dim % kV == 0 && storage_aligned(kVecBytes, {p.x, p.residual, p.y, p.residual_out,
                                                                         p.gamma, p.beta});
        if (layer) return vec ? launch_fwd<T, kV, true>(f, stream) : launch_fwd<T, 1, true>(f, stream);
        return vec ? launch_fwd<T, kV, false>(f, stream) : launch_fwd<T, 1, false>(f, stream);
    });
}

// rows == 0: nothing is read, but requested dγ, dβ are empty sums: zero them.
kiln_status zero_empty_gradients(const Problem& p) {
    if (!storage_aligned(sizeof(float), {p.dgamma, p.dbeta})) return KILN_ERROR_MISALIGNED;
    const auto stream = static_cast<cudaStream_t>(p.stream);
    const size_t bytes = static_cast<size_t>(p.dim) * sizeof(float);
    for (float* grad : {p.dgamma, p.dbeta}) {
        if (grad == nullptr) continue;
        const kiln_status status = cuda_status(cudaMemsetAsync(grad, 0, bytes, stream));
        if (status != KILN_SUCCESS) return status;
    }
    return KILN_SUCCESS;
}

// dtype, sizes; then rows == 0 (zero requested gradients); pointers, alignment, workspace.
kiln_status run_bwd(const Problem& p) {
    if (!valid_dtype(p.dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!valid_sizes(p.rows, p.dim)) return KILN_ERROR_INVALID_SIZE;
    if (p.rows == 0) return zero_empty_gradients(p);
    const bool layer = p.kind == Kind::kLayerNorm;
    const bool grads = p.dgamma != nullptr || p.dbeta != nullptr;
    if (p.dy == nullptr || p.x == nullptr || p.rstd == nullptr || (layer && p.mean == nullptr) ||
        p.dx == nullptr || (grads && p.workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = storage_bytes(p.dtype);
    if (!storage_aligned(elem, {p.dy, p.x, p.residual, p.dresidual_out, p.dx, p.dresidual}) ||
        !storage_aligned(sizeof(float), {p.mean, p.rstd, p.gamma, p.dgamma, p.dbeta}) ||
        (grads && !is_aligned(p.workspace, sizeof(float)))) {
        return KILN_ERROR_MISALIGNED;
    }
    if (grads && p.workspace_bytes < workspace_bytes(p.rows, p.dim)) return KILN_ERROR_WORKSPACE_TOO_SMALL;

    const Partition part = partition(p.rows, p.dim);
    // One chunk is the whole sum: the kernel writes dγ, dβ in place and no finalize runs.
    float* const partials = static_cast<float*>(p.workspace);
    const bool direct = part.chunks == 1;
    float* const dgamma_part = p.dgamma == nullptr ? nullptr : direct ? p.dgamma : partials;
    float* const dbeta_part = p.dbeta == nullptr ? nullptr : direct ? p.dbeta : partials + part.chunks * p.dim;
    const auto stream = static_cast<cudaStream_t>(p.stream);
    const kiln_status status = with_storage_type(p.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        constexpr int kV = kVecWidth<T>;
        const BwdParams<T> b{static_cast<const T*>(p.dy), static_cast<const T*>(p.x),
                             static_cast<const T*>(p.residual), p.rstd, p.gamma,
                             static_cast<const T*>(p.dresidual_out), static_cast<T*>(p.dx),
                             static_cast<T*>(p.dresidual), dgamma_part, dbeta_part, p.rows,
                             static_cast<int>(p.dim), part.rows_per_chunk};
        const bool vec = p.dim % kV == 0 && storage_aligned(kVecBytes, {p.dy, p.x, p.residual, p.dresidual_out,
                                                                         p.dx, p.dresidual, p.gamma});
        const int64_t chunks = part.chunks;
        if (layer) return vec ? launch_bwd<T, kV, true>(b, chunks, stream) : launch_bwd<T, 1, true>(b, chunks, stream);
        return vec ? launch_bwd<T, kV, false>(b, chunks, stream) : launch_bwd<T, 1, false>(b, chunks, stream);
    });
    if (status != KILN_SUCCESS || !grads || direct) return status;
    const dim3 grid(static_cast<unsigned>(ceil_div(p.dim, kFinalizeColumns)), 2);  // y: dγ, dβ
    const dim3 block(kFinalizeColumns, kFinalizeLanes);
    KILN_LAUNCH(grid, block, 0, stream, finalize_kernel)(partials, part.chunks, static_cast<int>(p.dim), p.dgamma,
                                                         p.dbeta);
    return launch_status();
}

}  // namespace
}  // namespace kiln::norm

// ------------------------------------------------------------------------------------------
// C ABI (kernels/include/kiln.h)
// ------------------------------------------------------------------------------------------

namespace kn = kiln::norm;  // (plain `norm` is a CUDA math function)

namespace {

kn::Problem fwd_problem(kn::Kind kind, kiln_dtype dtype, const void* x, const void* residual, const float* gamma,
                          const float* beta, int64_t rows, int64_t dim, float eps, void* y, void* residual_out,
                          float* mean, float* rstd, void* stream) {
    kn::Problem p{};
    p.kind = kind;
    p.dtype = dtype;
    p.rows = rows;
    p.dim = dim;
    p.stream = stream;
    p.x = x;
    p.residual = residual;
    p.gamma = gamma;
    p.beta = beta;
    p.eps = eps;
    p.y = y;
    p.residual_out = residual_out;
    p.mean = mean;
    p.rstd = rstd;
    return p;
}

kn::Problem bwd_problem(kn::Kind kind, kiln_dtype dtype, const void* dy, const void* x, const void* residual,
                          const float* mean, const float* rstd, const float* gamma, const void* dresidual_out,
                          int64_t rows, int64_t dim, void* dx, void* dresidual, float* dgamma, float* dbeta,
                          void* workspace, int64_t workspace_bytes, void* stream) {
    kn::Problem p{};
    p.kind = kind;
    p.dtype = dtype;
    p.rows = rows;
    p.dim = dim;
    p.stream = stream;
    p.x = x;
    p.residual = residual;
    p.gamma = gamma;
    p.mean = const_cast<float*>(mean);  // read only in the backward
    p.rstd = const_cast<float*>(rstd);
    p.dy = dy;
    p.dresidual_out = dresidual_out;
    p.dx = dx;
    p.dresidual = dresidual;
    p.dgamma = dgamma;
    p.dbeta = dbeta;
    p.workspace = workspace;
    p.workspace_bytes = workspace_bytes;
    return p;
}

}  // namespace

extern "C" {

int64_t kiln_norm_workspace_bytes(int64_t rows, int64_t dim) {
    return kn::valid_sizes(rows, dim) ? kn::workspace_bytes(rows, dim) : -1;
}

kiln_status kiln_norm_layernorm_fwd(kiln_dtype dtype, const void* x, const void* residual, const float* gamma,
                                    const float* beta, int64_t rows, int64_t dim, float eps, void* y,
                                    void* residual_out, float* mean, float* rstd, void* stream) {
    return kn::run_fwd(fwd_problem(kn::Kind::kLayerNorm, dtype, x, residual, gamma, beta, rows, dim, eps, y,
                                     residual_out, mean, rstd, stream));
}

kiln_status kiln_norm_rmsnorm_fwd(kiln_dtype dtype, const void* x, const void* residual, const float* gamma,
                                  const float* beta, int64_t rows, int64_t dim, float eps, void* y,
                                  void* residual_out, float* rstd, void* stream) {
    return kn::run_fwd(fwd_problem(kn::Kind::kRmsNorm, dtype, x, residual, gamma, beta, rows, dim, eps, y,
                                     residual_out, nullptr, rstd, stream));
}

kiln_status kiln_norm_layernorm_bwd(kiln_dtype dtype, const void* dy, const void* x, const void* residual,
                                    const float* mean, const float* rstd, const float* gamma,
                                    const void* dresidual_out, int64_t rows, int64_t dim, void* dx,
                                    void* dresidual, float* dgamma, float* dbeta, void* workspace,
                                    int64_t workspace_bytes, void* stream) {
    return kn::run_bwd(bwd_problem(kn::Kind::kLayerNorm, dtype, dy, x, residual, mean, rstd, gamma,
                                     dresidual_out, rows, dim, dx, dresidual, dgamma, dbeta, workspace,
                                     workspace_bytes, stream));
}

kiln_status kiln_norm_rmsnorm_bwd(kiln_dtype dtype, const void* dy, const void* x, const void* residual,
                                  const float* rstd, const float* gamma, const void* dresidual_out, int64_t rows,
                                  int64_t dim, void* dx, void* dresidual, float* dgamma, float* dbeta,
                                  void* workspace, int64_t workspace_bytes, void* stream) {
    return kn::run_bwd(bwd_problem(kn::Kind::kRmsNorm, dtype, dy, x, residual, nullptr, rstd, gamma,
                                     dresidual_out, rows, dim, dx, dresidual, dgamma, dbeta, workspace,
                                     workspace_bytes, stream));
}

}  // extern "C"

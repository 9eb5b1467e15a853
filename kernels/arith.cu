// Arithmetic units (issue 26; Madsen & Johansen, ICLR 2020, conventions of stable-nalu;
// src/families/arith/cpu.rs is the f64 reference). The NMU as a product-GEMM on CUDA cores:
//
//   z_bo = Π_i t_boi,   t_boi = W_c,oi·(x_bi − 1) + 1   (one FMA),   W_c = clamp(W, ε, 1)
//
// x [B, I], W [O, I], z [B, O], row-major; storage f32/f16/bf16, math in f32.
//
// Forward: a block owns a 64 × 64 tile of (b, o) and walks i 16 at a time through shared
// memory (x − 1 and W_c, staged once per tile, so no element's clamp or subtraction is
// repeated per product), each thread a 4 × 4 register tile of running products: one FMA and
// one multiply per (b, o, i), no [B, I, O] buffer. A product that comes out zero or not finite
// (a term exactly 0, or under/overflow) is recomputed exactly by its thread: the zero count and
// the product of the nonzero terms, which the forward saves (prod [B, O] f32, zeros [B, O]
// i32: O(1) extra memory, no host sync) so that the backward never divides by a zero term.
//
// Backward, with g = dz·prod: the product of the terms other than i is prod/t_i with no zero,
// prod at the zero term with one zero, 0 with more, so per (b, o, i)
//   q = t == 0 ? (zeros == 1 ? g : 0) : (zeros == 0 ? g : 0) / t,
//   dx_bi = Σ_o q·W_c,oi,    dW_oi = Σ_b q·(x_bi − 1), where ε ≤ W_oi ≤ 1 (clamp's gradient).
// dx: a block a 64 × 64 tile of (b, i), o in steps of 16 (q's two cases staged per (b, o));
// dW: a block a 64 × 64 tile of (o, i), b in steps of 16 over a fixed partition of the batch
// (nmu_dw_splits: a function of the shape alone), each partition's sum in its own workspace
// slice, summed in order by a second kernel: deterministic, no atomics. t is recomputed with
// the same FMA as the forward's, so a zero term is found again exactly.
//
// The regularisers: one pass over W for both means and the sparsity error (a fixed partition of
// the weights, a block each, its partials summed in order by one thread: deterministic), and an
// elementwise backward.
//
// Layout: constants, staging, the NMU's three tile kernels and its partition sum, the
// regularisers, validation and the C ABI.

#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "common/compute.cuh"
#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln::arith {

// ------------------------------------------------------------------------------------------
// Launch constants
// ------------------------------------------------------------------------------------------

// A block's output tile is kTile × kTile, 16 × 16 threads, each kTile/16 = 4 rows by 4
// columns at a stride of 16 (row ty + 16r, column tx + 16c): a warp's shared-memory reads of a
// column operand are 16 consecutive floats, conflict-free, and of a row operand a broadcast.
constexpr int kTile = 64;
constexpr int kSide = 16;
constexpr int kThreads = kSide * kSide;
constexpr int kPer = kTile / kSide;
// The reduction dimension's step: two [kStep][kTile] f32 operands (8 KiB) a step.
constexpr int kStep = 16;
// Staged rows are padded by one float: a fill whose consecutive threads write consecutive
// steps (stride kPadded) then hits distinct banks.
constexpr int kPadded = kTile + 1;
// Tiles a grid dimension may hold on y (CUDA's 65535 limit): O and I are bounded by it.
constexpr int64_t kMaxTilesY = 65535;
// Target blocks for the weight gradient: about two waves of an H100 (132 SMs). Fewer (o, i)
// tiles than this split the batch into fixed partitions (at most kMaxDwSplits).
constexpr int64_t kDwTargetBlocks = 264;
constexpr int64_t kMaxDwSplits = 32;

__device__ __forceinline__ float clamp_weight(float w, float eps) { return fminf(fmaxf(w, eps), 1.0f); }

// The term t = W_c·(x − 1) + 1, as every kernel here computes it (one rounding).
__device__ __forceinline__ float nmu_term(float wc, float xm1) { return fmaf(wc, xm1, 1.0f); }

// ------------------------------------------------------------------------------------------
// Staging
// ------------------------------------------------------------------------------------------

// A thread's share of staging a [kTile rows][kStep] block of a row-major matrix whose rows are
// contiguous along the step (x by (b, i) and W by (o, i) for the forward; dz, prod and zeros by
// (b, o) for dx): thread t stages step column t % kStep of rows t / kStep + 16j, j < kPer. Its
// rows' offsets and whether they exist are fixed over the walk; per step one compare for the
// column and one load a row.
//
// The offsets are carried from step to step (advanced by `advance`) rather than recomputed:
// recomputed, ptxas rebuilt each 64-bit row product every step (~28 instructions an element
// staged, where a load, a convert and a store are the work).
struct RowsAlongStep {
    int col;                 // the step column this thread stages
    int row0;                // its first row in the tile; rows row0 + 16j
    int64_t offset[kPer];    // element offset of row j at the current step's column
    bool exists[kPer];

    __device__ __forceinline__ void advance() {
#pragma unroll
        for (int j = 0; j < kPer; ++j) offset[j] += kStep;
    }
};

__device__ __forceinline__ RowsAlongStep rows_along_step(int64_t first_row, int64_t rows, int64_t row_stride) {
    RowsAlongStep r;
    r.col = threadIdx.x % kStep;
    r.row0 = threadIdx.x / kStep;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
        const int64_t row = first_row + r.row0 + (kThreads / kStep) * j;
        r.exists[j] = row < rows;
        r.offset[j] = (r.exists[j] ? row * row_stride : 0) + r.col;
    }
    return r;
}

// A thread's share of staging a [kStep][kTile columns] block whose columns are contiguous (W by
// (o, i) for dx; dz, prod, zeros and x by (b, ·) for dW): thread t stages column t % kTile of
// step rows t / kTile + 4j; per step its rows move kStep rows down.
struct ColumnsAlongTile {
    int col;   // the tile column this thread stages
    int row0;  // its first step row; rows row0 + 4j
};

__device__ __forceinline__ ColumnsAlongTile columns_along_tile() {
    return {static_cast<int>(threadIdx.x % kTile), static_cast<int>(threadIdx.x / kTile)};
}
constexpr int kColumnRows = kThreads / kTile;  // step rows a pass of the block stages (4)

// ------------------------------------------------------------------------------------------
// NMU forward
// ------------------------------------------------------------------------------------------

// z[b, o], and where `prod` is given the product of the nonzero terms and their zero count.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nmu_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, int64_t batch, int64_t in, int64_t out,
                   float eps, T* __restrict__ z, float* __restrict__ prod, int32_t* __restrict__ zeros) {
    __shared__ float xs[kStep][kPadded];  // x − 1, [i][b]
    __shared__ float ws[kStep][kPadded];  // W_c, [i][o]
    const int tx = threadIdx.x % kSide;
    const int ty = threadIdx.x / kSide;
    const int64_t b0 = int64_t(blockIdx.x) * kTile;
    const int64_t o0 = int64_t(blockIdx.y) * kTile;
    RowsAlongStep xr = rows_along_step(b0, batch, in);
    RowsAlongStep wr = rows_along_step(o0, out, in);
    float p[kPer][kPer];
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
#pragma unroll
        for (int c = 0; c < kPer; ++c) p[r][c] = 1.0f;
    }
    for (int64_t i0 = 0; i0 < in; i0 += kStep) {
        // Out-of-range entries stage 0 and 0: their term is exactly 1.
        const bool col_ok = i0 + xr.col < in;
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
            const int row = xr.row0 + (kThreads / kStep) * j;
            xs[xr.col][row] = xr.exists[j] && col_ok ? to_compute(x[xr.offset[j]]) - 1.0f : 0.0f;
            ws[wr.col][row] = wr.exists[j] && col_ok ? clamp_weight(to_compute(w[wr.offset[j]]), eps) : 0.0f;
        }
        xr.advance();
        wr.advance();
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kStep; ++k) {
            float xv[kPer];
            float wv[kPer];
#pragma unroll
            for (int r = 0; r < kPer; ++r) xv[r] = xs[k][ty + kSide * r];
#pragma unroll
            for (int c = 0; c < kPer; ++c) wv[c] = ws[k][tx + kSide * c];
#pragma unroll
            for (int r = 0; r < kPer; ++r) {
#pragma unroll
                for (int c = 0; c < kPer; ++c) p[r][c] *= nmu_term(wv[c], xv[r]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
        const int64_t b = b0 + ty + kSide * r;
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
            const int64_t o = o0 + tx + kSide * c;
            if (b >= batch || o >= out) continue;
            float product = p[r][c];
            int32_t count = 0;
            // Zero, infinite or NaN: a zero term, an under/overflow, or a NaN input. Again
            // exactly, term by term in the same order: the product of the nonzero terms and
            // their count.
            if (!(fabsf(product) > 0.0f && fabsf(product) <= FLT_MAX)) {
                product = 1.0f;
                for (int64_t i = 0; i < in; ++i) {
                    const float t =
                        nmu_term(clamp_weight(to_compute(w[o * in + i]), eps), to_compute(x[b * in + i]) - 1.0f);
                    if (t == 0.0f) {
                        ++count;
                    } else {
                        product *= t;
                    }
                }
            }
            z[b * out + o] = from_compute<T>(count > 0 ? 0.0f : product);
            if (prod != nullptr) {
                prod[b * out + o] = product;
                zeros[b * out + o] = count;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// NMU backward
// ------------------------------------------------------------------------------------------

// The two cases of q at (b, o) (see the header): g where no term is zero (divided by t), g at
// the zero term where exactly one is, 0 otherwise.
struct QParts {
    float nonzero;
    float at_zero;
};

__device__ __forceinline__ QParts q_parts(float dz, float prod, int32_t zeros) {
    const float g = dz * prod;
    return {zeros == 0 ? g : 0.0f, zeros == 1 ? g : 0.0f};
}

// q for a term t: the SFU's reciprocal (rcp.approx.ftz, 1 ulp; a term is never subnormal: t =
// W_c·(x − 1) + 1 rounded once is 0 or at least 2^-48 in magnitude) and a multiply. With
// kZeroTerms (a step where some output has a zero term) a zero term takes the other case; a
// step without one needs no compare and select (and a 0 there would give 0·inf).
template <bool kZeroTerms>
__device__ __forceinline__ float q_of(float t, float nonzero, float at_zero) {
    const float q = nonzero * ptx::rcp_approx_ftz(t);
    if constexpr (kZeroTerms) {
        return t == 0.0f ? at_zero : q;
    } else {
        return q;
    }
}

using Staged = float[kStep][kPadded];

// One step of a backward tile: acc[r][c] += Σ_k q_k,r,c · s_k,c, where s is the staged operand
// of the step (W_c[o_k, i_c] for dx, x[b_k, i_c] − 1 for dW), g the one the thread holds for
// the walk (x − 1 for dx, W_c for dW), t = g·s + 1 the term (one FMA, whichever factor comes
// first: the same rounding as the forward's) and q from the staged (row r, step k) cases.
template <bool kZeroTerms>
__device__ __forceinline__ void backward_step(const Staged& q0, const Staged& q1, const Staged& staged,
                                              const float (&held)[kPer][kPer], int tx, int ty,
                                              float (&acc)[kPer][kPer]) {
#pragma unroll
    for (int k = 0; k < kStep; ++k) {
        float sv[kPer];
#pragma unroll
        for (int c = 0; c < kPer; ++c) sv[c] = staged[k][tx + kSide * c];
#pragma unroll
        for (int r = 0; r < kPer; ++r) {
            const float n = q0[k][ty + kSide * r];
            const float a = q1[k][ty + kSide * r];
#pragma unroll
            for (int c = 0; c < kPer; ++c) {
                const float q = q_of<kZeroTerms>(nmu_term(sv[c], held[r][c]), n, a);
                acc[r][c] = fmaf(q, sv[c], acc[r][c]);
            }
        }
    }
}

// One step of either gradient, the body chosen for the whole block: the exact one where some
// staged output has a zero term (`zero_terms`, made block-uniform by the barrier that also
// publishes the staged operands), the fast one otherwise.
__device__ __forceinline__ void backward_step_uniform(bool zero_terms, const Staged& q0, const Staged& q1,
                                                      const Staged& staged, const float (&held)[kPer][kPer], int tx,
                                                      int ty, float (&acc)[kPer][kPer]) {
    if (__syncthreads_or(zero_terms)) {
        backward_step<true>(q0, q1, staged, held, tx, ty, acc);
    } else {
        backward_step<false>(q0, q1, staged, held, tx, ty, acc);
    }
}

// dx[b, i] = Σ_o q·W_c[o, i].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nmu_dx_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ dz,
                  const float* __restrict__ prod, const int32_t* __restrict__ zeros, int64_t batch, int64_t in,
                  int64_t out, float eps, T* __restrict__ dx) {
    __shared__ float q0[kStep][kPadded];  // [o][b]
    __shared__ float q1[kStep][kPadded];  // [o][b]
    __shared__ float ws[kStep][kPadded];  // W_c, [o][i]
    const int tx = threadIdx.x % kSide;
    const int ty = threadIdx.x / kSide;
    const int64_t b0 = int64_t(blockIdx.x) * kTile;
    const int64_t i0 = int64_t(blockIdx.y) * kTile;
    RowsAlongStep qr = rows_along_step(b0, batch, out);
    const ColumnsAlongTile wc = columns_along_tile();
    const int64_t wi = i0 + wc.col;
    float xm1[kPer][kPer];
    float acc[kPer][kPer];
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
        const int64_t b = b0 + ty + kSide * r;
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
            const int64_t i = i0 + tx + kSide * c;
            xm1[r][c] = b < batch && i < in ? to_compute(x[b * in + i]) - 1.0f : 0.0f;
            acc[r][c] = 0.0f;
        }
    }
    for (int64_t o0 = 0; o0 < out; o0 += kStep) {
        // q by (b, o) with o along the step, W_c by (o, i) with i along the tile: each read
        // coalesced. `zero_terms`: some staged output has a zero term (block-uniform after
        // the barrier), so this step takes the exact body.
        const bool o_ok = o0 + qr.col < out;
        bool zero_terms = false;
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
            const int row = qr.row0 + (kThreads / kStep) * j;
            QParts q{0.0f, 0.0f};
            if (qr.exists[j] && o_ok) {
                const int64_t e = qr.offset[j];
                const int32_t count = zeros[e];
                zero_terms = zero_terms || count != 0;
                q = q_parts(to_compute(dz[e]), prod[e], count);
            }
            q0[qr.col][row] = q.nonzero;
            q1[qr.col][row] = q.at_zero;
            const int k = wc.row0 + kColumnRows * j;
            // (W's offsets from o each step: carried as well, they pushed this kernel into spills
            // on sm_80.)
            ws[k][wc.col] = o0 + k < out && wi < in ? clamp_weight(to_compute(w[(o0 + k) * in + wi]), eps) : 0.0f;
        }
        qr.advance();
        backward_step_uniform(zero_terms, q0, q1, ws, xm1, tx, ty, acc);
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
        const int64_t b = b0 + ty + kSide * r;
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
            const int64_t i = i0 + tx + kSide * c;
            if (b < batch && i < in) dx[b * in + i] = from_compute<T>(acc[r][c]);
        }
    }
}

// The batch rows of partition `part` of `parts`: [first, last), multiples of kStep.
struct BatchPart {
    int64_t first, last;
};

__host__ __device__ __forceinline__ BatchPart batch_part(int64_t batch, int64_t parts, int64_t part) {
    const int64_t steps = (batch + kStep - 1) / kStep;
    const int64_t per = (steps + parts - 1) / parts;
    const int64_t first = part * per * kStep;
    const int64_t last = (part + 1) * per * kStep;
    return {first < batch ? first : batch, last < batch ? last : batch};
}

// Whether W's gradient passes the clamp (torch: inside [ε, 1], bounds included).
__device__ __forceinline__ bool weight_passes(float w, float eps) { return w >= eps && w <= 1.0f; }

// Partition blockIdx.z's share of dW[o, i] = Σ_b q·(x[b, i] − 1): into dw (masked, storage type)
// when there is one partition, else into its slice of the f32 workspace.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nmu_dw_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ dz,
                  const float* __restrict__ prod, const int32_t* __restrict__ zeros, int64_t batch, int64_t in,
                  int64_t out, float eps, int64_t parts, T* __restrict__ dw, float* __restrict__ partials) {
    __shared__ float q0[kStep][kPadded];  // [b][o]
    __shared__ float q1[kStep][kPadded];  // [b][o]
    __shared__ float xs[kStep][kPadded];  // x − 1, [b][i]
    const int tx = threadIdx.x % kSide;
    const int ty = threadIdx.x / kSide;
    const int64_t i0 = int64_t(blockIdx.x) * kTile;
    const int64_t o0 = int64_t(blockIdx.y) * kTile;
    const BatchPart range = batch_part(batch, parts, blockIdx.z);
    // Both fills walk the batch along the step: q by (b, o) and x by (b, i), columns along the
    // tile (coalesced).
    const ColumnsAlongTile fc = columns_along_tile();
    const int64_t fo = o0 + fc.col;
    const int64_t fi = i0 + fc.col;

    float wc[kPer][kPer];
    float acc[kPer][kPer];
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
        const int64_t o = o0 + ty + kSide * r;
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
            const int64_t i = i0 + tx + kSide * c;
            wc[r][c] = o < out && i < in ? clamp_weight(to_compute(w[o * in + i]), eps) : 0.0f;
            acc[r][c] = 0.0f;
        }
    }
    for (int64_t bs = range.first; bs < range.last; bs += kStep) {
        bool zero_terms = false;  // as in nmu_dx_kernel
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
            const int k = fc.row0 + kColumnRows * j;
            const int64_t b = bs + k;
            const bool b_ok = b < range.last;
            QParts q{0.0f, 0.0f};
            // (Offsets from b each step: carried, eight 64-bit offsets pushed this kernel
            // past 128 registers and into spills.)
            if (b_ok && fo < out) {
                const int64_t e = b * out + fo;
                const int32_t count = zeros[e];
                zero_terms = zero_terms || count != 0;
                q = q_parts(to_compute(dz[e]), prod[e], count);
            }
            q0[k][fc.col] = q.nonzero;
            q1[k][fc.col] = q.at_zero;
            xs[k][fc.col] = b_ok && fi < in ? to_compute(x[b * in + fi]) - 1.0f : 0.0f;
        }
        backward_step_uniform(zero_terms, q0, q1, xs, wc, tx, ty, acc);
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
        const int64_t o = o0 + ty + kSide * r;
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
            const int64_t i = i0 + tx + kSide * c;
            if (o >= out || i >= in) continue;
            if (parts == 1) {
                const bool pass = weight_passes(to_compute(w[o * in + i]), eps);
                dw[o * in + i] = from_compute<T>(pass ? acc[r][c] : 0.0f);
            } else {
                partials[(int64_t(blockIdx.z) * out + o) * in + i] = acc[r][c];
            }
        }
    }
}

// dW[o, i] = Σ over the partitions, in order, masked by the clamp.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nmu_dw_sum_kernel(const T* __restrict__ w, const float* __restrict__ partials, int64_t parts, int64_t elems,
                      float eps, T* __restrict__ dw) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < elems; e += stride) {
        float sum = 0.0f;
        for (int64_t s = 0; s < parts; ++s) sum += partials[s * elems + e];
        dw[e] = from_compute<T>(weight_passes(to_compute(w[e]), eps) ? sum : 0.0f);
    }
}

// ------------------------------------------------------------------------------------------
// Regularisers (stable-nalu's, torch's gradient conventions; src/families/arith/cpu.rs)
// ------------------------------------------------------------------------------------------

// sign(v) with sign(0) = 0 (|·|'s derivative as torch takes it).
__device__ __forceinline__ float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }

// d min(u, v) given du, dv: the smaller side's, half each on a tie.
__device__ __forceinline__ float min_grad(float u, float v, float du, float dv) {
    return u < v ? du : (v < u ? dv : 0.5f * (du + dv));
}

// One weight's terms: the sparsity term and its derivative, the out-of-bounds term and its
// derivative (relu'(0) = 0).
struct RegTerms {
    float sparse, dsparse, oob, doob;
};

__device__ __forceinline__ RegTerms reg_terms(int unit, int shape, float v) {
    RegTerms t;
    const bool nau = unit == KILN_ARITH_NAU;
    const bool linear = shape == KILN_ARITH_REG_LINEAR;
    if (linear) {
        // min(|v|, |1 − |v||) (NAU) or min(|v|, |1 − v|) (NMU).
        const float u = fabsf(v);
        const float du = sign_of(v);
        const float inner = nau ? 1.0f - fabsf(v) : 1.0f - v;
        const float q = fabsf(inner);
        const float dq = nau ? -sign_of(inner) * sign_of(v) : -sign_of(inner);
        t.sparse = fminf(u, q);
        t.dsparse = min_grad(u, q, du, dq);
    } else {
        // v²(1 − |v|)² (NAU) or v²(1 − v)² (NMU).
        const float s = nau ? 1.0f - fabsf(v) : 1.0f - v;
        t.sparse = v * v * s * s;
        t.dsparse = 2.0f * v * s * s - 2.0f * v * v * s * (nau ? sign_of(v) : 1.0f);
    }
    // The distance outside the range: |v| − 1 (NAU) or |v − ½| − ½ (NMU).
    const float r = nau ? fabsf(v) - 1.0f : fabsf(v - 0.5f) - 0.5f;
    const float dr = nau ? sign_of(v) : sign_of(v - 0.5f);
    t.oob = r > 0.0f ? (linear ? r : r * r) : 0.0f;
    t.doob = r > 0.0f ? (linear ? dr : 2.0f * r * dr) : 0.0f;
    return t;
}

// The distance to {0, ±1} the sparsity error takes the largest of: min(|v|, |1 − |v||).
__device__ __forceinline__ float sparsity_distance(float v) { return fminf(fabsf(v), fabsf(1.0f - fabsf(v))); }

constexpr int kRegThreads = 256;
constexpr int64_t kMaxRegParts = 1024;
// n · part stays within int64 (the partition bounds n·p / parts).
constexpr int64_t kMaxRegWeights = int64_t(1) << 52;

// Block p's sums of the sparse and out-of-bounds terms and the largest sparsity distance over
// its contiguous range of the weights: a thread a strided subset in order, then a fixed tree.
// With `clamped` (the NAU's forward) the same pass also writes W_c = clamp(W, −1, 1), NaN kept
// as torch.clamp keeps it; without `partials` it only clamps.
template <typename T>
__global__ void __launch_bounds__(kRegThreads)
    reg_partials_kernel(const T* __restrict__ w, int64_t n, int unit, int shape, int64_t parts,
                        float* __restrict__ partials, T* __restrict__ clamped) {
    const int64_t first = n * blockIdx.x / parts;
    const int64_t last = n * (blockIdx.x + 1) / parts;
    const bool sums = partials != nullptr;
    float sparse = 0.0f, oob = 0.0f, worst = 0.0f;
    for (int64_t e = first + threadIdx.x; e < last; e += kRegThreads) {
        const float v = to_compute(w[e]);
        if (clamped != nullptr) clamped[e] = from_compute<T>(v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v));
        if (!sums) continue;
        const RegTerms t = reg_terms(unit, shape, v);
        sparse += t.sparse;
        oob += t.oob;
        worst = fmaxf(worst, sparsity_distance(v));
    }
    // Uniform over the block: every thread returns, or none.
    if (!sums) return;
    __shared__ float s_sparse[kRegThreads], s_oob[kRegThreads], s_worst[kRegThreads];
    s_sparse[threadIdx.x] = sparse;
    s_oob[threadIdx.x] = oob;
    s_worst[threadIdx.x] = worst;
    __syncthreads();
    for (unsigned half = kRegThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            s_sparse[threadIdx.x] += s_sparse[threadIdx.x + half];
            s_oob[threadIdx.x] += s_oob[threadIdx.x + half];
            s_worst[threadIdx.x] = fmaxf(s_worst[threadIdx.x], s_worst[threadIdx.x + half]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = s_sparse[0];
        partials[parts + blockIdx.x] = s_oob[0];
        partials[2 * parts + blockIdx.x] = s_worst[0];
    }
}

// The partials summed in order (one thread: at most kMaxRegParts each), the means taken.
__global__ void __launch_bounds__(32)
    reg_finish_kernel(const float* __restrict__ partials, int64_t parts, int64_t n, float* __restrict__ sparse,
                      float* __restrict__ oob, float* __restrict__ sparsity_error) {
    if (threadIdx.x != 0) return;
    float s = 0.0f, b = 0.0f, m = 0.0f;
    for (int64_t p = 0; p < parts; ++p) {
        s += partials[p];
        b += partials[parts + p];
        m = fmaxf(m, partials[2 * parts + p]);
    }
    const float inv_n = 1.0f / static_cast<float>(n);
    if (sparse != nullptr) *sparse = s * inv_n;
    if (oob != nullptr) *oob = b * inv_n;
    if (sparsity_error != nullptr) *sparsity_error = m;
}

// dw = (dsparse·∂sparse + doob·∂oob) / n, elementwise (dsparse, doob: device scalars).
template <typename T>
__global__ void __launch_bounds__(kRegThreads)
    reg_bwd_kernel(const T* __restrict__ w, int64_t n, int unit, int shape, const float* __restrict__ dsparse,
                   const float* __restrict__ doob, T* __restrict__ dw) {
    const float gs = *dsparse / static_cast<float>(n);
    const float gb = *doob / static_cast<float>(n);
    const int64_t stride = int64_t(gridDim.x) * kRegThreads;
    for (int64_t e = int64_t(blockIdx.x) * kRegThreads + threadIdx.x; e < n; e += stride) {
        const RegTerms t = reg_terms(unit, shape, to_compute(w[e]));
        dw[e] = from_compute<T>(gs * t.dsparse + gb * t.doob);
    }
}

// The NAU's weight gradient finished in place: dw holds dzᵀ·x (the caller's GEMM) and keeps it
// where −1 ≤ W ≤ 1 (clamp's gradient, bounds included: torch's `where`, so a NaN outside is
// dropped too), plus (dsparse·∂R_sparse + doob·∂R_oob)/n when the regularisers' gradients are
// given (device scalars; both or neither).
template <typename T>
__global__ void __launch_bounds__(kRegThreads)
    nau_dw_kernel(const T* __restrict__ w, int64_t n, int shape, const float* __restrict__ dsparse,
                  const float* __restrict__ doob, T* __restrict__ dw) {
    const bool reg = dsparse != nullptr;
    const float gs = reg ? *dsparse / static_cast<float>(n) : 0.0f;
    const float gb = reg ? *doob / static_cast<float>(n) : 0.0f;
    const int64_t stride = int64_t(gridDim.x) * kRegThreads;
    for (int64_t e = int64_t(blockIdx.x) * kRegThreads + threadIdx.x; e < n; e += stride) {
        const float v = to_compute(w[e]);
        float g = (v >= -1.0f && v <= 1.0f) ? to_compute(dw[e]) : 0.0f;
        if (reg) {
            const RegTerms t = reg_terms(KILN_ARITH_NAU, shape, v);
            g += gs * t.dsparse + gb * t.doob;
        }
        dw[e] = from_compute<T>(g);
    }
}

// ------------------------------------------------------------------------------------------
// Validation and launches
// ------------------------------------------------------------------------------------------

namespace {

constexpr int64_t kMaxSumBlocks = int64_t(1) << 15;

int64_t tiles(int64_t n) { return (n + kTile - 1) / kTile; }

// B < 2^31 (grid x), I and O within the grid's y limit in tiles, and their products
// addressable.
bool valid_sizes(int64_t batch, int64_t in, int64_t out) {
    if (batch < 0 || in < 0 || out < 0) return false;
    if (batch >= (int64_t(1) << 31) || tiles(in) > kMaxTilesY || tiles(out) > kMaxTilesY) return false;
    const int64_t limit = int64_t(1) << 62;
    return (in == 0 || batch < limit / in) && (out == 0 || batch < limit / out) && (in == 0 || out < limit / in);
}

bool valid_eps(float eps) { return eps >= 0.0f && eps <= 1.0f; }

bool aligned_all(int64_t bytes, std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs) {
        if (!is_aligned(p, bytes)) return false;
    }
    return true;
}

// The fixed partition count of the batch for dW: enough blocks for about two waves when the
// (o, i) tiles alone are fewer, each partition at least 256 rows; a function of the shape only,
// so a result never depends on the GPU.
int64_t dw_parts(int64_t batch, int64_t in, int64_t out) {
    const int64_t weight_tiles = tiles(in) * tiles(out);
    if (weight_tiles == 0 || weight_tiles >= kDwTargetBlocks) return 1;
    int64_t parts = (kDwTargetBlocks + weight_tiles - 1) / weight_tiles;
    const int64_t by_rows = (batch + 255) / 256;
    if (parts > by_rows) parts = by_rows;
    if (parts > kMaxDwSplits) parts = kMaxDwSplits;
    return parts < 1 ? 1 : parts;
}

// The regularisers' fixed partition of n weights: a block per 8192 (at most kMaxRegParts).
int64_t reg_parts(int64_t n) {
    const int64_t parts = (n + 8191) / 8192;
    return parts < 1 ? 1 : (parts > kMaxRegParts ? kMaxRegParts : parts);
}

bool valid_reg(int unit, int shape) {
    return (unit == KILN_ARITH_NAU || unit == KILN_ARITH_NMU) &&
           (shape == KILN_ARITH_REG_LINEAR || shape == KILN_ARITH_REG_SQUARED);
}

int64_t workspace_bytes(int64_t batch, int64_t in, int64_t out) {
    const int64_t parts = dw_parts(batch, in, out);
    return parts == 1 ? 0 : parts * in * out * int64_t(sizeof(float));
}

// Zeros `elems` elements of storage `dtype` at p (a gradient of an empty sum).
kiln_status zero_fill(void* p, int64_t elems, kiln_dtype dtype, cudaStream_t stream) {
    if (elems == 0) return KILN_SUCCESS;
    const cudaError_t err = cudaMemsetAsync(p, 0, elems * storage_bytes(dtype), stream);
    if (err == cudaSuccess) return KILN_SUCCESS;
    kiln::t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

}  // namespace

}  // namespace kiln::arith

namespace ka = kiln::arith;

extern "C" {

int64_t kiln_arith_nmu_workspace_bytes(int64_t batch, int64_t in, int64_t out) {
    return ka::valid_sizes(batch, in, out) ? ka::workspace_bytes(batch, in, out) : -1;
}

kiln_status kiln_arith_nmu_fwd(kiln_dtype dtype, const void* x, const void* w, int64_t batch, int64_t in,
                               int64_t out, float eps, void* z, float* prod, int32_t* zeros, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!ka::valid_sizes(batch, in, out)) return KILN_ERROR_INVALID_SIZE;
    if (!ka::valid_eps(eps)) return KILN_ERROR_INVALID_VALUE;
    if (batch == 0 || out == 0) return KILN_SUCCESS;
    if ((in > 0 && (x == nullptr || w == nullptr)) || z == nullptr || ((prod == nullptr) != (zeros == nullptr))) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!ka::aligned_all(elem, {x, w, z}) || !ka::aligned_all(sizeof(float), {prod, zeros})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const dim3 grid(static_cast<unsigned>(ka::tiles(batch)), static_cast<unsigned>(ka::tiles(out)));
        KILN_LAUNCH(grid, ka::kThreads, 0, s, ka::nmu_fwd_kernel<T>)(
            static_cast<const T*>(x), static_cast<const T*>(w), batch, in, out, eps, static_cast<T*>(z), prod, zeros);
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nmu_bwd(kiln_dtype dtype, const void* x, const void* w, const void* dz, const float* prod,
                               const int32_t* zeros, int64_t batch, int64_t in, int64_t out, float eps, void* dx,
                               void* dw, void* workspace, int64_t workspace_bytes, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!ka::valid_sizes(batch, in, out)) return KILN_ERROR_INVALID_SIZE;
    if (!ka::valid_eps(eps)) return KILN_ERROR_INVALID_VALUE;
    // Every input is read when no dimension is 0; otherwise none is (the gradients are empty
    // sums: zeros).
    const bool inputs = batch > 0 && in > 0 && out > 0;
    const int64_t parts = ka::dw_parts(batch, in, out);
    if ((inputs && (x == nullptr || w == nullptr || dz == nullptr || prod == nullptr || zeros == nullptr)) ||
        (dw != nullptr && parts > 1 && workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!ka::aligned_all(elem, {x, w, dz, dx, dw}) || !ka::aligned_all(sizeof(float), {prod, zeros, workspace})) {
        return KILN_ERROR_MISALIGNED;
    }
    if (dw != nullptr && workspace_bytes < ka::workspace_bytes(batch, in, out)) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* xt = static_cast<const T*>(x);
        const T* wt = static_cast<const T*>(w);
        const T* dzt = static_cast<const T*>(dz);
        if (!inputs) {
            const kiln_status st = dx != nullptr ? ka::zero_fill(dx, batch * in, dtype, s) : KILN_SUCCESS;
            if (st != KILN_SUCCESS || dw == nullptr) return st;
            return ka::zero_fill(dw, in * out, dtype, s);
        }
        if (dx != nullptr) {
            const dim3 grid(static_cast<unsigned>(ka::tiles(batch)), static_cast<unsigned>(ka::tiles(in)));
            KILN_LAUNCH(grid, ka::kThreads, 0, s, ka::nmu_dx_kernel<T>)(xt, wt, dzt, prod, zeros, batch, in, out, eps,
                                                                        static_cast<T*>(dx));
            const kiln_status st = kiln::launch_status();
            if (st != KILN_SUCCESS) return st;
        }
        if (dw == nullptr) return KILN_SUCCESS;
        const dim3 grid(static_cast<unsigned>(ka::tiles(in)), static_cast<unsigned>(ka::tiles(out)),
                        static_cast<unsigned>(parts));
        KILN_LAUNCH(grid, ka::kThreads, 0, s, ka::nmu_dw_kernel<T>)(xt, wt, dzt, prod, zeros, batch, in, out, eps,
                                                                    parts, static_cast<T*>(dw),
                                                                    static_cast<float*>(workspace));
        const kiln_status st = kiln::launch_status();
        if (st != KILN_SUCCESS || parts == 1) return st;
        const int64_t elems = in * out;
        int64_t blocks = (elems + ka::kThreads - 1) / ka::kThreads;
        if (blocks > ka::kMaxSumBlocks) blocks = ka::kMaxSumBlocks;
        KILN_LAUNCH(static_cast<unsigned>(blocks), ka::kThreads, 0, s, ka::nmu_dw_sum_kernel<T>)(
            wt, static_cast<const float*>(workspace), parts, elems, eps, static_cast<T*>(dw));
        return kiln::launch_status();
    });
}

int64_t kiln_arith_reg_workspace_bytes(int64_t n) {
    return n < 1 || n > ka::kMaxRegWeights ? -1 : 3 * ka::reg_parts(n) * int64_t(sizeof(float));
}

kiln_status kiln_arith_reg_fwd(kiln_dtype dtype, kiln_arith_unit unit, kiln_arith_reg_shape shape, const void* w,
                               int64_t n, float* sparse, float* oob, float* sparsity_error, void* workspace,
                               int64_t workspace_bytes, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!ka::valid_reg(unit, shape)) return KILN_ERROR_INVALID_VALUE;
    if (n < 1 || n > ka::kMaxRegWeights) return KILN_ERROR_INVALID_SIZE;
    if (w == nullptr || workspace == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!ka::aligned_all(kiln::storage_bytes(dtype), {w}) ||
        !ka::aligned_all(sizeof(float), {sparse, oob, sparsity_error, workspace})) {
        return KILN_ERROR_MISALIGNED;
    }
    if (workspace_bytes < kiln_arith_reg_workspace_bytes(n)) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    const int64_t parts = ka::reg_parts(n);
    const auto s = static_cast<cudaStream_t>(stream);
    float* partials = static_cast<float*>(workspace);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(static_cast<unsigned>(parts), ka::kRegThreads, 0, s, ka::reg_partials_kernel<T>)(
            static_cast<const T*>(w), n, static_cast<int>(unit), static_cast<int>(shape), parts, partials,
            static_cast<T*>(nullptr));
        const kiln_status st = kiln::launch_status();
        if (st != KILN_SUCCESS) return st;
        KILN_LAUNCH(1, 32, 0, s, ka::reg_finish_kernel)(partials, parts, n, sparse, oob, sparsity_error);
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_reg_bwd(kiln_dtype dtype, kiln_arith_unit unit, kiln_arith_reg_shape shape, const void* w,
                               int64_t n, const float* dsparse, const float* doob, void* dw, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!ka::valid_reg(unit, shape)) return KILN_ERROR_INVALID_VALUE;
    if (n < 1 || n > ka::kMaxRegWeights) return KILN_ERROR_INVALID_SIZE;
    if (w == nullptr || dsparse == nullptr || doob == nullptr || dw == nullptr) return KILN_ERROR_NULL_POINTER;
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!ka::aligned_all(elem, {w, dw}) || !ka::aligned_all(sizeof(float), {dsparse, doob})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    int64_t blocks = (n + ka::kRegThreads - 1) / ka::kRegThreads;
    if (blocks > ka::kMaxSumBlocks) blocks = ka::kMaxSumBlocks;
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(static_cast<unsigned>(blocks), ka::kRegThreads, 0, s, ka::reg_bwd_kernel<T>)(
            static_cast<const T*>(w), n, static_cast<int>(unit), static_cast<int>(shape), dsparse, doob,
            static_cast<T*>(dw));
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nau_weights(kiln_dtype dtype, const void* w, int64_t n, void* wc, kiln_arith_reg_shape shape,
                                   float* sparse, float* oob, float* sparsity_error, void* workspace,
                                   int64_t workspace_bytes, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    const bool regs = sparse != nullptr || oob != nullptr || sparsity_error != nullptr;
    if (regs && !ka::valid_reg(KILN_ARITH_NAU, shape)) return KILN_ERROR_INVALID_VALUE;
    if (n < 0 || n > ka::kMaxRegWeights || (regs && n == 0)) return KILN_ERROR_INVALID_SIZE;
    if (n == 0) return KILN_SUCCESS;
    if (w == nullptr || wc == nullptr || (regs && workspace == nullptr)) return KILN_ERROR_NULL_POINTER;
    if (!ka::aligned_all(kiln::storage_bytes(dtype), {w, wc}) ||
        !ka::aligned_all(sizeof(float), {sparse, oob, sparsity_error, workspace})) {
        return KILN_ERROR_MISALIGNED;
    }
    if (regs && workspace_bytes < kiln_arith_reg_workspace_bytes(n)) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    const int64_t parts = ka::reg_parts(n);
    const auto s = static_cast<cudaStream_t>(stream);
    float* partials = regs ? static_cast<float*>(workspace) : nullptr;
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(static_cast<unsigned>(parts), ka::kRegThreads, 0, s, ka::reg_partials_kernel<T>)(
            static_cast<const T*>(w), n, static_cast<int>(KILN_ARITH_NAU), static_cast<int>(shape), parts, partials,
            static_cast<T*>(wc));
        const kiln_status st = kiln::launch_status();
        if (st != KILN_SUCCESS || !regs) return st;
        KILN_LAUNCH(1, 32, 0, s, ka::reg_finish_kernel)(partials, parts, n, sparse, oob, sparsity_error);
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nau_dw(kiln_dtype dtype, const void* w, int64_t n, void* dw, kiln_arith_reg_shape shape,
                              const float* dsparse, const float* doob, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if ((dsparse == nullptr) != (doob == nullptr)) return KILN_ERROR_NULL_POINTER;
    const bool reg = dsparse != nullptr;
    if (reg && !ka::valid_reg(KILN_ARITH_NAU, shape)) return KILN_ERROR_INVALID_VALUE;
    if (n < 0 || n > ka::kMaxRegWeights) return KILN_ERROR_INVALID_SIZE;
    if (n == 0) return KILN_SUCCESS;
    if (w == nullptr || dw == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!ka::aligned_all(kiln::storage_bytes(dtype), {w, dw}) || !ka::aligned_all(sizeof(float), {dsparse, doob})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    int64_t blocks = (n + ka::kRegThreads - 1) / ka::kRegThreads;
    if (blocks > ka::kMaxSumBlocks) blocks = ka::kMaxSumBlocks;
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(static_cast<unsigned>(blocks), ka::kRegThreads, 0, s, ka::nau_dw_kernel<T>)(
            static_cast<const T*>(w), n, static_cast<int>(shape), dsparse, doob, static_cast<T*>(dw));
        return kiln::launch_status();
    });
}

}  // extern "C"

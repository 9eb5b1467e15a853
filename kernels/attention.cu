// Attention forward with ALiBi, FlashAttention-2 style: per (sequence, head, 64-query tile) one
// block streams the sequence's K/V tiles through shared memory, computes S = scale·Q·Kᵀ + bias on
// tensor cores (mma.sync m16n8k16, f32 accumulators), keeps an online softmax in f32 registers and
// accumulates O = P·V; no S×S matrix ever reaches memory. Varlen (cu_seqlens), MHA/GQA/MQA,
// causal (bottom-right aligned) or bidirectional, linear ALiBi −slope·|i + sk − sq − j| or
// geometric ALiBi −slope·‖p_i − p_j‖, computed in registers. Returns the TRUE log-sum-exp.
// Reads q once and k, v once per query tile; FLOPs 4·sq·sk·D per (sequence, head), halved
// under causal (shared/REFERENCE.md §4).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln {
namespace {

// The bias, a compile-time switch so that each costs nothing where it is off.
enum class Bias { kNone, kLinear, kGeometric };

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// A warp owns 16 query rows (one mma M tile), so a block owns 64: enough reuse of each K/V tile,
// few enough registers for the D=128 accumulators.
constexpr int kBlockM = kWarps * 16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
constexpr ptx::MmaType kMma = std::is_same_v<T, __half> ? ptx::MmaType::kF16 : ptx::MmaType::kBF16;

// Tile sizes of one head dimension. Rows are padded by one 16-byte chunk: the row stride is then
// an odd number of 16-byte units modulo 128 bytes, so the 8 row addresses of an ldmatrix phase fall
// in 8 different bank groups (no conflicts) for every supported D.
template <int kD>
struct Tiles {
    static_assert(kD % 32 == 0 && kD <= 128, "head dims 32, 64, 96, 128");
    // Keys per K/V tile: 64, but 32 at D=128 so that Q, K and V tiles fit the 48 KiB of dynamic
    // shared memory a kernel gets without opting in (the emulator's limit too).
    static constexpr int kBlockN = kD <= 96 ? 64 : 32;
    static constexpr int kStride = kD + 8;  // elements per shared-memory row
    static constexpr int kChunks = kD / 8;  // 16-byte chunks per row
    static constexpr int kSmemElems = (kBlockM + 2 * kBlockN) * kStride;
    static_assert(kBlockM * kChunks % kThreads == 0 && kBlockN * kChunks % kThreads == 0,
                  "every thread copies the same number of chunks");
};

struct Params {
    const void* q;                 // [total_q, H, D]
    const void* k;                 // [total_k, H_k, D]
    const void* v;                 // [total_k, H_k, D]
    const int32_t* cu_seqlens_q;   // [B + 1], prefix sums of the query lengths
    const int32_t* cu_seqlens_k;   // [B + 1]
    const float* slopes;           // slope of (b, h) at b * slope_batch_stride + h; NULL: no bias
    int64_t slope_batch_stride;    // 0 for [H] slopes, H for [B, H]
    const float* positions;        // [total, 3], geometric ALiBi only (total_q == total_k)
    void* out;                     // [total_q, H, D]
    float* lse;                    // [H, total_q]
    int64_t total_q;
    int64_t total_k;
    int heads;                     // H
    int heads_k;                   // H_k (H % H_k == 0)
    int causal;                    // nonzero: key j is visible from query i iff j <= i + sk - sq
    float scale_log2;              // softmax scale · log2(e): scores are kept in base 2
};

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// [begin, end) of sequence b from cu_seqlens, or false when the data is inconsistent (then the
// block writes nothing rather than touch memory outside the tensors).
__device__ __forceinline__ bool sequence(const int32_t* cu, int b, int64_t total, int& begin, int& end) {
    begin = cu[b];
    end = cu[b + 1];
    return 0 <= begin && begin <= end && end <= total;
}

template <typename T, int kD, Bias kBias>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(const Params p) {
    using Tile = Tiles<kD>;
    constexpr int kBlockN = Tile::kBlockN, kStride = Tile::kStride, kChunks = Tile::kChunks;
    constexpr ptx::MmaType kType = kMma<T>;

    const int b = blockIdx.y, h = blockIdx.z, m0 = blockIdx.x * kBlockM;
    int q_begin, q_end, k_begin, k_end;
    if (!sequence(p.cu_seqlens_q, b, p.total_q, q_begin, q_end)) return;
    if (!sequence(p.cu_seqlens_k, b, p.total_k, k_begin, k_end)) return;
    const int sq = q_end - q_begin, sk = k_end - k_begin;
    if (m0 >= sq) return;
    // Causal: query i sees keys j <= i + diag.
    const int diag = sk - sq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int hk = h / (p.heads / p.heads_k);
    const int64_t q_row = int64_t(p.heads) * kD, k_row = int64_t(p.heads_k) * kD;
    const T* q = static_cast<const T*>(p.q) + int64_t(q_begin) * q_row + int64_t(h) * kD;
    const T* k = static_cast<const T*>(p.k) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
    const T* v = static_cast<const T*>(p.v) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
    T* out = static_cast<T*>(p.out) + int64_t(q_begin) * q_row + int64_t(h) * kD;
    float* lse = p.lse + int64_t(h) * p.total_q + q_begin;

    // Keys [0, kv_end) can be visible to this tile's rows; tiles past it are skipped (causal).
    int kv_end = sk;
    if (p.causal) kv_end = imax(0, imin(sk, m0 + kBlockM + diag));
    const int n_tiles = (kv_end + kBlockN - 1) / kBlockN;

    // This thread's rows: the warp's 16 rows, g and g + 8 (the C fragment layout).
    const int row_local[2] = {warp * 16 + g, warp * 16 + g + 8};

    if (n_tiles == 0) {
        // Every row of the tile is fully masked: output 0 (whole 16-byte chunks), lse −inf.
        Pack<T, 8> zeros;
#pragma unroll
        for (int j = 0; j < 8; ++j) zeros.v[j] = from_float<T>(0.0f);
        for (int c = lane; c < 16 * kChunks; c += 32) {
            const int i = m0 + warp * 16 + c / kChunks;
            if (i < sq) store_pack<T, 8>(out + int64_t(i) * q_row + (c % kChunks) * 8, zeros);
        }
        for (int r = 0; r < 2; ++r) {
            const int i = m0 + row_local[r];
            if (i < sq && t == 0) lse[i] = -INFINITY;
        }
        return;
    }

    T* s_q = dynamic_shared<T>();          // (kBlockM, kStride)
    T* s_k = s_q + kBlockM * kStride;      // (kBlockN, kStride)
    T* s_v = s_k + kBlockN * kStride;      // (kBlockN, kStride)
    ptx::CpAsync pipe;

    // Copies `rows` rows of D elements starting at row `first` of a sequence with `len` rows into
    // shared memory; rows past `len` become zeros (so masked keys contribute 0·0, never NaN).
    auto load_tile = [&](T* dst, const T* src, int64_t row_stride, int first, int rows, int len) {
        for (int c = threadIdx.x; c < rows * kChunks; c += kThreads) {
            const int r = c / kChunks, col = (c % kChunks) * 8;
            const bool valid = first + r < len;
            // A row inside the tensor even when invalid: no byte of it is read then.
            const int src_row = valid ? first + r : 0;
            pipe.copy16(dst + r * kStride + col, src + int64_t(src_row) * row_stride + col, valid);
        }
    };

    load_tile(s_q, q, q_row, m0, kBlockM, sq);
    load_tile(s_k, k, k_row, 0, kBlockN, sk);
    pipe.commit();
    load_tile(s_v, v, k_row, 0, kBlockN, sk);
    pipe.commit();
    pipe.wait<1>();  // Q and K_0 have landed (V_0 may still be in flight)
    __syncthreads();

    // Q stays in registers as A fragments for the whole K/V loop. ldmatrix.x4's matrices are
    // (rows +0/+8) × (columns +0/+8) of the 16x16 A tile: lane l names row l%8 of matrix l/8.
    uint32_t q_frag[kD / 16][4];
    {
        const int r = warp * 16 + lane % 8 + 8 * ((lane / 8) % 2), col = 8 * (lane / 16);
#pragma unroll
        for (int ks = 0; ks < kD / 16; ++ks) ptx::ldmatrix<4, false>(q_frag[ks], s_q + r * kStride + ks * 16 + col);
    }

    float slope_log2 = 0.0f;
    if constexpr (kBias != Bias::kNone) slope_log2 = p.slopes[b * p.slope_batch_stride + h] * kLog2e;
    float pos_q[2][3] = {};
    if constexpr (kBias == Bias::kGeometric) {
        for (int r = 0; r < 2; ++r) {
            const int i = imin(m0 + row_local[r], sq - 1);  // rows past sq are computed, never stored
            for (int d = 0; d < 3; ++d) pos_q[r][d] = p.positions[(int64_t(q_begin) + i) * 3 + d];
        }
    }

    float o[kD / 8][4] = {};                  // O accumulators: (16 rows, D) of this warp
    float row_max[2] = {-INFINITY, -INFINITY};  // running max of the base-2 scores
    float row_sum[2] = {0.0f, 0.0f};          // this thread's part of Σ 2^(s − max)

    for (int tile = 0; tile < n_tiles; ++tile) {
        const int n0 = tile * kBlockN;
        if (tile > 0) {
            pipe.wait<1>();  // K_tile has landed
            __syncthreads();
        }

        // S = Q·K_tileᵀ: (16, kBlockN) per warp. K rows are B's columns ("col" layout), so
        // ldmatrix without .trans; one x4 covers 32 head dims (two k-steps) of 8 keys.
        float s[kBlockN / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kD / 32; ++kk) {
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) {
                uint32_t kb[4];
                ptx::ldmatrix<4, false>(kb, s_k + (nt * 8 + lane % 8) * kStride + kk * 32 + 8 * (lane / 8));
                const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
                ptx::mma_m16n8k16<kType>(s[nt], q_frag[2 * kk], b0, s[nt]);
                ptx::mma_m16n8k16<kType>(s[nt], q_frag[2 * kk + 1], b1, s[nt]);
            }
        }
        __syncthreads();  // every warp is done with K_tile: prefetch the next one over it
        if (tile + 1 < n_tiles) load_tile(s_k, k, k_row, n0 + kBlockN, kBlockN, sk);
        pipe.commit();

        // Scale, bias and mask in base 2. Masking is needed only where the tile runs past the
        // sequence or crosses the causal diagonal of the tile's first row.
        const bool need_mask = n0 + kBlockN > sk || (p.causal && n0 + kBlockN - 1 > m0 + diag);
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = m0 + row_local[e / 2], j = n0 + nt * 8 + 2 * t + e % 2;
                float x = s[nt][e] * p.scale_log2;
                if constexpr (kBias == Bias::kLinear) {
                    x -= slope_log2 * fabsf(float(i + diag - j));
                } else if constexpr (kBias == Bias::kGeometric) {
                    const float* pk = p.positions + (int64_t(k_begin) + imin(j, sk - 1)) * 3;
                    const float dx = pos_q[e / 2][0] - pk[0], dy = pos_q[e / 2][1] - pk[1],
                                dz = pos_q[e / 2][2] - pk[2];
                    x -= slope_log2 * sqrtf(dx * dx + dy * dy + dz * dz);
                }
                if (need_mask && (j >= sk || (p.causal && j > i + diag))) x = -INFINITY;
                s[nt][e] = x;
            }
        }

        // Online softmax: rescale the running sums and O by 2^(old max − new max). A row with
        // nothing visible yet keeps max −inf; it exponentiates against 0 so that 2^(−inf) = 0.
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = row_max[r];
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            // The 4 lanes of a quad share the row.
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float base = mx == -INFINITY ? 0.0f : mx;
            const float correction = exp2f(row_max[r] - base);
            row_max[r] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) {
                s[nt][2 * r] = exp2f(s[nt][2 * r] - base);
                s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - base);
                sum += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            row_sum[r] = row_sum[r] * correction + sum;
#pragma unroll
            for (int dt = 0; dt < kD / 8; ++dt) {
                o[dt][2 * r] *= correction;
                o[dt][2 * r + 1] *= correction;
            }
        }

        pipe.wait<1>();  // V_tile has landed (K_{tile+1} may still be in flight)
        __syncthreads();

        // O += P·V_tile. The C fragments of key columns 16kk..16kk+15 are exactly the A fragment
        // of that k-step; V rows are keys (B's k), so ldmatrix .trans; one x4 covers 16 keys × 16
        // head dims: matrices (keys +0/+8) × (dims +0/+8).
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            const uint32_t a[4] = {
                ptx::pack2<kType>(s[2 * kk][0], s[2 * kk][1]), ptx::pack2<kType>(s[2 * kk][2], s[2 * kk][3]),
                ptx::pack2<kType>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                ptx::pack2<kType>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const int r = kk * 16 + lane % 8 + 8 * ((lane / 8) % 2), col = 8 * (lane / 16);
#pragma unroll
            for (int dt = 0; dt < kD / 16; ++dt) {
                uint32_t vb[4];
                ptx::ldmatrix<4, true>(vb, s_v + r * kStride + dt * 16 + col);
                const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
                ptx::mma_m16n8k16<kType>(o[2 * dt], a, b0, o[2 * dt]);
                ptx::mma_m16n8k16<kType>(o[2 * dt + 1], a, b1, o[2 * dt + 1]);
            }
        }
        __syncthreads();  // every warp is done with V_tile: prefetch the next one over it
        if (tile + 1 < n_tiles) load_tile(s_v, v, k_row, n0 + kBlockN, kBlockN, sk);
        pipe.commit();
    }

    // Normalise into this warp's own 16 rows of s_q (free: Q lives in registers since the start),
    // then store whole 16-byte chunks of each row. The C fragments hold 4-byte pairs; storing them
    // directly fills each 32-byte sector in quarters from four instructions (kiln model: 51% store
    // efficiency). A row that saw no key (sum 0) gets output 0 and log-sum-exp −inf.
    T* s_o = s_q + warp * 16 * kStride;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float sum = row_sum[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
        for (int dt = 0; dt < kD / 8; ++dt) {
            *reinterpret_cast<uint32_t*>(s_o + (g + 8 * r) * kStride + dt * 8 + 2 * t) =
                ptx::pack2<kType>(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
        }
        const int i = m0 + row_local[r];
        if (i < sq && t == 0) lse[i] = sum > 0.0f ? (row_max[r] + log2f(sum)) * kLn2 : -INFINITY;
    }
    __syncwarp();
    for (int c = lane; c < 16 * kChunks; c += 32) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        const int i = m0 + warp * 16 + r;
        if (i < sq) store_pack<T, 8>(out + int64_t(i) * q_row + col, load_pack<T, 8>(s_o + r * kStride + col));
    }
}

template <typename T, int kD, Bias kBias>
kiln_status launch(const Params& p, int64_t batch, int64_t max_seqlen_q, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((max_seqlen_q + kBlockM - 1) / kBlockM), static_cast<unsigned>(batch),
                    static_cast<unsigned>(p.heads));
    const size_t smem = sizeof(T) * Tiles<kD>::kSmemElems;
    KILN_LAUNCH(grid, kThreads, smem, stream, attention_fwd_kernel<T, kD, kBias>)(p);
    return launch_status();
}

template <typename T, int kD>
kiln_status dispatch_bias(const Params& p, int64_t batch, int64_t max_seqlen_q, cudaStream_t stream) {
    if (p.slopes == nullptr) return launch<T, kD, Bias::kNone>(p, batch, max_seqlen_q, stream);
    if (p.positions == nullptr) return launch<T, kD, Bias::kLinear>(p, batch, max_seqlen_q, stream);
    return launch<T, kD, Bias::kGeometric>(p, batch, max_seqlen_q, stream);
}

template <typename T>
kiln_status dispatch_dim(int64_t head_dim, const Params& p, int64_t batch, int64_t max_seqlen_q,
                         cudaStream_t stream) {
    switch (head_dim) {
        case 32: return dispatch_bias<T, 32>(p, batch, max_seqlen_q, stream);
        case 64: return dispatch_bias<T, 64>(p, batch, max_seqlen_q, stream);
        case 96: return dispatch_bias<T, 96>(p, batch, max_seqlen_q, stream);
        case 128: return dispatch_bias<T, 128>(p, batch, max_seqlen_q, stream);
        default: return KILN_ERROR_INVALID_SIZE;
    }
}

// The padded form's lse [heads, tokens] from the packed one [heads, nnz]: every padded token's
// entry is -inf (a dropped token sees no key), then each kept token's entry is its packed one.
// Two launches on one stream: the fill finishes before the scatter starts.
__global__ void lse_fill_kernel(float* lse, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        lse[i] = -INFINITY;
}

__global__ void lse_scatter_kernel(const float* packed, const int32_t* indices, int64_t nnz, int64_t tokens,
                                   int64_t n, float* lse) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t h = i / nnz;
        const int32_t t = indices[i - h * nnz];
        // Indices come from unpad; one out of range is skipped, never written.
        if (t >= 0 && t < tokens) lse[h * tokens + t] = packed[i];
    }
}

constexpr int kLseThreads = 256;
constexpr int64_t kLseMaxBlocks = 4096;

unsigned lse_blocks(int64_t n) {
    return static_cast<unsigned>(std::min<int64_t>((n + kLseThreads - 1) / kLseThreads, kLseMaxBlocks));
}

// Grid y and z (batch, heads) are limited to 65535 by CUDA.
constexpr int64_t kMaxGridYZ = 65535;

}  // namespace
}  // namespace kiln

extern "C" {

int32_t kiln_attention_head_dim_supported(int64_t head_dim) {
    return head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128;
}

kiln_status kiln_attention_alibi_fwd(kiln_dtype dtype, const void* q, const void* k, const void* v,
                                     const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k, const float* slopes,
                                     int32_t slopes_per_batch, const float* positions, int64_t batch,
                                     int64_t total_q, int64_t total_k, int64_t heads, int64_t heads_k,
                                     int64_t head_dim, int64_t max_seqlen_q, int32_t causal, float softmax_scale,
                                     void* out, float* lse, void* stream) {
    using namespace kiln;
    const int d = static_cast<int>(dtype);
    if (d != KILN_DTYPE_F16 && d != KILN_DTYPE_BF16) return KILN_ERROR_INVALID_DTYPE;
    if (batch < 0 || total_q < 0 || total_k < 0 || max_seqlen_q < 0 || heads < 1 || heads_k < 1 ||
        heads % heads_k != 0 || batch > kMaxGridYZ || heads > kMaxGridYZ || max_seqlen_q > INT32_MAX ||
        !kiln_attention_head_dim_supported(head_dim))
        return KILN_ERROR_INVALID_SIZE;
    if (!std::isfinite(softmax_scale) || (positions != nullptr && slopes == nullptr))
        return KILN_ERROR_INVALID_VALUE;
    // Geometric ALiBi is self-attention: one positions row per token of q and of k.
    if (positions != nullptr && total_q != total_k) return KILN_ERROR_INVALID_SIZE;
    if (cu_seqlens_q == nullptr || cu_seqlens_k == nullptr) return KILN_ERROR_NULL_POINTER;
    if (total_q > 0 && (q == nullptr || out == nullptr || lse == nullptr)) return KILN_ERROR_NULL_POINTER;
    if (total_k > 0 && (k == nullptr || v == nullptr)) return KILN_ERROR_NULL_POINTER;
    // cp.async moves 16-byte chunks of q, k, v rows; out is written in 16-byte chunks.
    if (!is_aligned(q, 16) || !is_aligned(k, 16) || !is_aligned(v, 16) || !is_aligned(out, 16) ||
        !is_aligned(lse, 4) || !is_aligned(slopes, 4) || !is_aligned(positions, 4) || !is_aligned(cu_seqlens_q, 4) ||
        !is_aligned(cu_seqlens_k, 4))
        return KILN_ERROR_MISALIGNED;
    if (batch == 0 || max_seqlen_q == 0 || total_q == 0) return KILN_SUCCESS;

    Params p{};
    p.q = q;
    p.k = k;
    p.v = v;
    p.cu_seqlens_q = cu_seqlens_q;
    p.cu_seqlens_k = cu_seqlens_k;
    p.slopes = slopes;
    p.slope_batch_stride = slopes_per_batch ? heads : 0;
    p.positions = positions;
    p.out = out;
    p.lse = lse;
    p.total_q = total_q;
    p.total_k = total_k;
    p.heads = static_cast<int>(heads);
    p.heads_k = static_cast<int>(heads_k);
    p.causal = causal != 0;
    p.scale_log2 = softmax_scale * kLog2e;
    const auto s = static_cast<cudaStream_t>(stream);
    if (d == KILN_DTYPE_F16) return dispatch_dim<__half>(head_dim, p, batch, max_seqlen_q, s);
    return dispatch_dim<__nv_bfloat16>(head_dim, p, batch, max_seqlen_q, s);
}

kiln_status kiln_attention_lse_pad_fwd(const float* lse_packed, const int32_t* indices, int64_t heads, int64_t nnz,
                                       int64_t tokens, float* lse, void* stream) {
    using namespace kiln;
    if (heads < 0 || nnz < 0 || tokens < 0 || nnz > tokens || tokens > INT32_MAX) return KILN_ERROR_INVALID_SIZE;
    // heads·tokens floats (and heads·nnz <= that) must be addressable: found by tests/fuzz.
    if (tokens > 0 && heads > INT64_MAX / int64_t(sizeof(float)) / tokens) return KILN_ERROR_INVALID_SIZE;
    if (heads > 0 && tokens > 0 && lse == nullptr) return KILN_ERROR_NULL_POINTER;
    if (heads > 0 && nnz > 0 && (lse_packed == nullptr || indices == nullptr)) return KILN_ERROR_NULL_POINTER;
    if (!is_aligned(lse_packed, 4) || !is_aligned(indices, 4) || !is_aligned(lse, 4)) return KILN_ERROR_MISALIGNED;
    const auto s = static_cast<cudaStream_t>(stream);
    const int64_t n = heads * tokens;
    if (n == 0) return KILN_SUCCESS;
    KILN_LAUNCH(lse_blocks(n), kLseThreads, 0, s, lse_fill_kernel)(lse, n);
    const kiln_status filled = launch_status();
    if (filled != KILN_SUCCESS || nnz == 0) return filled;
    KILN_LAUNCH(lse_blocks(heads * nnz), kLseThreads, 0, s, lse_scatter_kernel)(lse_packed, indices, nnz, tokens,
                                                                               heads * nnz, lse);
    return launch_status();
}

}  // extern "C"

// Attention backward with ALiBi, FlashAttention-2 style, deterministic: no float atomics, every
// sum in an order fixed by the launch shape alone, so two runs give the same bits.
//
//  1. delta_kernel: D_i = rowsum(dO ∘ O) in f32 (one warp per row and head), into the workspace.
//  2. dq_kernel: per (64-query tile, sequence, head) it streams the sequence's K/V tiles,
//     recomputes S = scale·Q·Kᵀ + bias and P = exp(S − LSE) from the forward's log-sum-exp,
//     dP = dO·Vᵀ, dS = P ∘ (dP − D), and accumulates dQ = scale·dS·K in registers. It also sums,
//     per query row, dS·∂bias/∂slope and (geometric ALiBi) dS·∂bias/∂p_i into the workspace.
//  3. dkdv_kernel: per (64-key tile, sequence, kv head) it loops over the query heads that share
//     the kv head and, for each, over the query tiles, recomputing Sᵀ and dPᵀ with the keys as
//     rows (each warp owns 16 keys, so nothing crosses warps), and accumulates dV = Pᵀ·dO and
//     dK = scale·dSᵀ·Q in registers: GQA's sum over heads is a loop, not an atomic. It also sums,
//     per key, dS·∂bias/∂p_j (geometric ALiBi).
//  4. dslopes_kernel / dpositions_kernel: the per-row partials reduced in a fixed order.
//
// Why a separate dQ kernel rather than FlashAttention-2's atomicAdd of dQ from the dK/dV
// kernel: the atomics make dQ depend on the order blocks finish (not bitwise reproducible), and
// the deterministic alternative inside one kernel, a per-K/V-tile partial dQ in an f32
// workspace reduced afterwards, needs (sk / 64)·total_q·H·D·4 bytes (2 GiB at 16k tokens,
// H·D = 2048). Recomputing S and dP in the dQ kernel costs two of the backward's five matmuls
// again (7 instead of 5) but no workspace beyond O(total·H) and no ordering at all.
//
// Tensor cores through kernels/common/ptx.cuh (mma.sync m16n8k16 with f32 accumulators,
// ldmatrix with and without .trans, cp.async). Scores are kept in base 2 as in the forward.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "common/reduce.cuh"
#include "common/variants.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln {
namespace {

enum class Bias { kNone, kLinear, kGeometric };

constexpr int kDeltaWarps = 4;  // delta_kernel: a warp per (row, head)
constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
constexpr ptx::MmaType kMma = std::is_same_v<T, __half> ? ptx::MmaType::kF16 : ptx::MmaType::kBF16;

// Shared-memory rows are padded by one 16-byte chunk (conflict-free ldmatrix, as the forward).
template <int kD>
struct Row {
    static_assert(kD % 32 == 0 && kD <= 128, "head dims 32, 64, 96, 128");
    static constexpr int kStride = kD + 8;
    static constexpr int kChunks = kD / 8;
};

// dq_kernel: 64 queries per block (16 per warp); K/V tiles of 64 keys, 32 at D = 96 and 128 (the
// dQ, Q and dO fragments with S and dP then fit the registers without spills). Q and dO are
// staged through the shared rows that the two K/V buffers (double buffering: the next tile is in
// flight while this one is used) take afterwards. Geometric ALiBi from D = 96 keeps dO in shared
// memory instead of registers, past the K/V buffers (its distance and position-gradient terms
// left the dO fragments no room: ptxas spilled at 255 registers); dP's A operand is then read
// with ldmatrix per tile, 8 LDSM among ~700 instructions.
// The default; the sweep's variants (kBwdVariants below) take other warps and key tiles.
template <int kD, Bias kBias, int kWarpsT = 4, int kBlockNT = (kD <= 64 ? 64 : 32)>
struct DqTiles {
    static constexpr int kWarps = kWarpsT, kThreads = 32 * kWarpsT;
    static constexpr int kBlockM = kWarps * 16;
    static constexpr int kBlockN = kBlockNT;
    static constexpr bool kDoShared = kBias == Bias::kGeometric && kD >= 96;
    static constexpr int kKvRows = 4 * kBlockN;  // two buffers of K and V
    // Where dO is staged: after Q (both then overwritten by the K/V buffers), or past the buffers.
    static constexpr int kDoRow = kDoShared ? (kKvRows > kBlockM ? kKvRows : kBlockM) : kBlockM;
    static constexpr int kRows = kDoRow + kBlockM > kKvRows ? kDoRow + kBlockM : kKvRows;
};

// dkdv_kernel: 64 keys per block (16 per warp); query tiles of 64, 32 or 16 rows so that the
// dK/dV accumulators (2·D floats per thread) leave room for Sᵀ and dPᵀ (geometric ALiBi's
// position terms take 64 queries at D = 64, and 32 at D = 128, past the register file; 32 at
// D = 128 without them: 242-254 registers, no spills on sm_80 or sm_90a). Shared memory holds K, V
// and two stages of Q, dO and the per-query floats (LSE, D, positions): above 48 KiB at D = 128,
// opted in by KILN_LAUNCH.
// The default; the sweep's variants take other warps and query tiles.
template <int kD, Bias kBias, int kWarpsT = 4,
          int kBlockMT = (kD <= 32 || (kD == 64 && kBias != Bias::kGeometric) ? 64
                                                                                 : (kD <= 96 || kBias != Bias::kGeometric ? 32 : 16))>
struct DkdvTiles {
    static constexpr int kWarps = kWarpsT, kThreads = 32 * kWarpsT;
    static constexpr int kBlockN = kWarps * 16;
    static constexpr int kBlockM = kBlockMT;
    static constexpr int kRows = 2 * kBlockN + 2 * 2 * kBlockM;
    static constexpr int kFloats = 2 * 5 * kBlockM;
};

struct Params {
    const void* q;                // [total_q, H, D]
    const void* k;                // [total_k, H_k, D]
    const void* v;                // [total_k, H_k, D]
    const void* out;              // [total_q, H, D]
    const void* dout;             // [total_q, H, D]
    const float* lse;             // [H, total_q]
    const int32_t* cu_seqlens_q;  // [B + 1]
    const int32_t* cu_seqlens_k;  // [B + 1]
    const float* slopes;          // slope of (b, h) at b * slope_batch_stride + h; NULL: no bias
    int64_t slope_batch_stride;   // 0 for [H] slopes, H for [B, H]
    const float* positions;       // [total, 3], geometric ALiBi only
    void* dq;                     // [total_q, H, D]
    void* dk;                     // [total_k, H_k, D]
    void* dv;                     // [total_k, H_k, D]
    float* delta;                 // workspace [H, total_q]: rowsum(dO ∘ O)
    float* dslope_rows;           // workspace [H, total_q]: Σ_j dS_ij·|i + sk − sq − j| or ‖p_i − p_j‖
    float* dpos_q;                // workspace [H, total_q, 3]: Σ_j dS_ij·(p_i − p_j)/‖p_i − p_j‖
    float* dpos_k;                // workspace [H_k, total_k, 3]: Σ_h slope·Σ_i dS_ij·(p_i − p_j)/‖·‖
    int64_t total_q;
    int64_t total_k;
    int heads;
    int heads_k;
    int head_dim;
    int causal;
    const int32_t* prefix_len;  // [B] or NULL: prefix-LM (causal only; see attention.cu)
    float scale;       // softmax scale
    float scale_log2;  // scale · log2(e)
};

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

__device__ __forceinline__ bool sequence(const int32_t* cu, int b, int64_t total, int& begin, int& end) {
    begin = cu[b];
    end = cu[b + 1];
    return 0 <= begin && begin <= end && end <= total;
}

// The bias distance of query i and key j (|i + diag − j|, or ‖p_i − p_j‖ with the difference
// vector in diff and 1/‖p_i − p_j‖ in inv, 0 for coincident points), the quantity whose product
// with −slope is the bias. Geometric: one reciprocal square root gives both the distance and the
// reciprocal the position gradient needs (sqrtf and a division were IEEE sequences with
// slow-path calls, ~40 instructions per score of the dq kernel's main loop).
template <Bias kBias>
__device__ __forceinline__ float distance(int i, int j, int diag, const float (&pi)[3], const float* pj,
                                          float (&diff)[3], float& inv) {
    if constexpr (kBias == Bias::kGeometric) {
        diff[0] = pi[0] - pj[0];
        diff[1] = pi[1] - pj[1];
        diff[2] = pi[2] - pj[2];
        const float d2 = diff[0] * diff[0] + diff[1] * diff[1] + diff[2] * diff[2];
        const float r = ptx::rsqrt_approx_ftz(d2);
        inv = d2 > 0.0f ? r : 0.0f;
        return d2 * inv;
    } else {
        inv = 0.0f;
        return fabsf(float(i + diag - j));
    }
}

// Copies kRows rows of kD elements from row `first` of a sequence with `len` rows into shared
// memory with cp.async; rows past `len` become zeros. Unrolled: a fixed number of passes, the
// column arithmetic out of the loop (the forward's instruction count per tile fell by a third
// with it). kRolled: a loop over the block's threads instead, fewer registers live across the
// main loop than the unrolled passes' hoisted addresses, which the dq kernel and geometric
// ALiBi's dkdv, near their register limit, cannot spare (sm_80 spilled).
template <bool kRolled, typename T, int kD, int kRows, int kThreads>
__device__ __forceinline__ void load_rows(ptx::CpAsync& pipe, T* dst, const T* src, int64_t row_stride, int first,
                                          int len) {
    constexpr int kStride = Row<kD>::kStride, kChunks = Row<kD>::kChunks;
    auto copy = [&](int c) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        const bool valid = first + r < len;
        const int src_row = valid ? first + r : 0;
        pipe.copy16(dst + r * kStride + col, src + int64_t(src_row) * row_stride + col, valid);
    };
    if constexpr (kRolled) {
#pragma unroll 1
        for (int c = threadIdx.x; c < kRows * kChunks; c += kThreads) copy(c);
    } else {
        constexpr int kTotal = kRows * kChunks;
#pragma unroll
        for (int pass = 0; pass < (kTotal + kThreads - 1) / kThreads; ++pass) {
            const int c = int(threadIdx.x) + pass * kThreads;
            if (kTotal % kThreads == 0 || c < kTotal) copy(c);
        }
    }
}

// The A fragment (16 rows × 16 columns, columns col0..col0+15) of rows row0.. of a shared tile.
template <int kD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const void* tile, int row0, int col0) {
    const int lane = threadIdx.x % 32;
    const int r = row0 + lane % 8 + 8 * ((lane / 8) % 2), col = col0 + 8 * (lane / 16);
    ptx::ldmatrix<4, false>(a, static_cast<const uint16_t*>(tile) + r * Row<kD>::kStride + col);
}

// acc[nt] (16 × 8 tiles over kN columns) += A·Bᵀ where A's rows come from the fragments `a`
// (kD/16 k-steps) and B's rows (kN of them, the n index) are rows of the shared tile `b_rows`:
// S = Q·Kᵀ with Q in registers and K in shared memory.
template <typename T, int kD, int kN>
__device__ __forceinline__ void mma_abt(float (&acc)[kN / 8][4], const uint32_t (&a)[kD / 16][4], const T* b_rows) {
    constexpr ptx::MmaType kType = kMma<T>;
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int kk = 0; kk < kD / 32; ++kk) {
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt) {
            uint32_t bb[4];
            ptx::ldmatrix<4, false>(bb, b_rows + (nt * 8 + lane % 8) * Row<kD>::kStride + kk * 32 + 8 * (lane / 8));
            const uint32_t b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
            ptx::mma_m16n8k16<kType>(acc[nt], a[2 * kk], b0, acc[nt]);
            ptx::mma_m16n8k16<kType>(acc[nt], a[2 * kk + 1], b1, acc[nt]);
        }
    }
}

// mma_abt with A's rows (row0.. of the shared tile `a_rows`) read per k-step instead of held
// in registers: two A fragments live at a time instead of kD/16.
template <typename T, int kD, int kN>
__device__ __forceinline__ void mma_abt_shared(float (&acc)[kN / 8][4], const T* a_rows, int row0, const T* b_rows) {
    constexpr ptx::MmaType kType = kMma<T>;
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int kk = 0; kk < kD / 32; ++kk) {
        uint32_t a0[4], a1[4];
        load_a<kD>(a0, a_rows, row0, kk * 32);
        load_a<kD>(a1, a_rows, row0, kk * 32 + 16);
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt) {
            uint32_t bb[4];
            ptx::ldmatrix<4, false>(bb, b_rows + (nt * 8 + lane % 8) * Row<kD>::kStride + kk * 32 + 8 * (lane / 8));
            const uint32_t b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
            ptx::mma_m16n8k16<kType>(acc[nt], a0, b0, acc[nt]);
            ptx::mma_m16n8k16<kType>(acc[nt], a1, b1, acc[nt]);
        }
    }
}

// acc (16 × kD) += C·B where C (16 × kK) is given as f32 C fragments (kK/8 tiles, rounded to T
// here: they become A fragments) and B (kK × kD) is row-major in the shared tile `b_rows`.
template <typename T, int kD, int kK>
__device__ __forceinline__ void mma_cb(float (&acc)[kD / 8][4], const float (&c)[kK / 8][4], const T* b_rows) {
    constexpr ptx::MmaType kType = kMma<T>;
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int kk = 0; kk < kK / 16; ++kk) {
        const uint32_t a[4] = {ptx::pack2<kType>(c[2 * kk][0], c[2 * kk][1]),
                               ptx::pack2<kType>(c[2 * kk][2], c[2 * kk][3]),
                               ptx::pack2<kType>(c[2 * kk + 1][0], c[2 * kk + 1][1]),
                               ptx::pack2<kType>(c[2 * kk + 1][2], c[2 * kk + 1][3])};
        const int r = kk * 16 + lane % 8 + 8 * ((lane / 8) % 2), col = 8 * (lane / 16);
#pragma unroll
        for (int dt = 0; dt < kD / 16; ++dt) {
            uint32_t bb[4];
            ptx::ldmatrix<4, true>(bb, b_rows + r * Row<kD>::kStride + dt * 16 + col);
            const uint32_t b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
            ptx::mma_m16n8k16<kType>(acc[2 * dt], a, b0, acc[2 * dt]);
            ptx::mma_m16n8k16<kType>(acc[2 * dt + 1], a, b1, acc[2 * dt + 1]);
        }
    }
}

// D_i = Σ_c dO[i, h, c]·O[i, h, c] in f32, one warp per (row, head); lanes sum strided columns
// and combine through warp_sum's fixed butterfly.
template <typename T, int kD>
__global__ void __launch_bounds__(kDeltaWarps * 32) delta_kernel(const Params p) {
    const int64_t pair = int64_t(blockIdx.x) * kDeltaWarps + threadIdx.x / 32;  // i·H + h
    if (pair >= p.total_q * p.heads) return;
    const int lane = threadIdx.x % 32;
    const T* o = static_cast<const T*>(p.out) + pair * kD;
    const T* dout = static_cast<const T*>(p.dout) + pair * kD;
    float acc = 0.0f;
#pragma unroll
    for (int c = lane; c < kD; c += 32) acc += to_float(o[c]) * to_float(dout[c]);
    acc = warp_sum(acc);
    const int64_t i = pair / p.heads, h = pair % p.heads;
    if (lane == 0) p.delta[h * p.total_q + i] = acc;
}

template <typename T, int kD, Bias kBias, class Tile>
__global__ void __launch_bounds__(Tile::kThreads) dq_kernel(const Params p) {
    constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kStride = Row<kD>::kStride;
    constexpr int kThreads = Tile::kThreads;
    constexpr ptx::MmaType kType = kMma<T>;

    const int b = blockIdx.y, h = blockIdx.z, m0 = blockIdx.x * kBlockM;
    int q_begin, q_end, k_begin, k_end;
    if (!sequence(p.cu_seqlens_q, b, p.total_q, q_begin, q_end)) return;
    if (!sequence(p.cu_seqlens_k, b, p.total_k, k_begin, k_end)) return;
    const int sq = q_end - q_begin, sk = k_end - k_begin;
    if (m0 >= sq) return;
    const int diag = sk - sq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int hk = h / (p.heads / p.heads_k);
    const int64_t q_row = int64_t(p.heads) * kD, k_row = int64_t(p.heads_k) * kD;
    const T* q = static_cast<const T*>(p.q) + int64_t(q_begin) * q_row + int64_t(h) * kD;
    const T* dout = static_cast<const T*>(p.dout) + int64_t(q_begin) * q_row + int64_t(h) * kD;
    const T* k = static_cast<const T*>(p.k) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
    const T* v = static_cast<const T*>(p.v) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
    T* dq = static_cast<T*>(p.dq) + int64_t(q_begin) * q_row + int64_t(h) * kD;
    const int64_t row_base = int64_t(h) * p.total_q + q_begin;  // [H, total_q] index of row 0

    // Prefix-LM: keys [0, prefix) are visible to every query (clamped to [0, sk]).
    const int prefix = p.causal && p.prefix_len != nullptr ? imax(0, imin(sk, p.prefix_len[b])) : 0;
    int kv_end = sk;
    if (p.causal) kv_end = imax(prefix, imax(0, imin(sk, m0 + kBlockM + diag)));
    const int n_tiles = (kv_end + kBlockN - 1) / kBlockN;
    const int row_local[2] = {warp * 16 + g, warp * 16 + g + 8};
    // The keys each of this thread's rows sees are [0, key_end): every key, or under causal those
    // up to the diagonal and the prefix (the mask as one comparison per score).
    int key_end[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = m0 + row_local[r];
        key_end[r] = p.causal ? imin(sk, imax(i + diag + 1, prefix)) : sk;
    }

    float slope = 0.0f;
    if constexpr (kBias != Bias::kNone) slope = p.slopes[b * p.slope_batch_stride + h];
    float acc[kD / 8][4] = {};
    float dslope[2] = {0.0f, 0.0f};
    float dpos[2][3] = {};

    if (n_tiles > 0) {
        T* s_a = dynamic_shared<T>();      // Q, then the K/V buffers
        T* s_b = s_a + Tile::kDoRow * kStride;  // dO
        ptx::CpAsync pipe;
        load_rows<true, T, kD, kBlockM, kThreads>(pipe, s_a, q, q_row, m0, sq);
        load_rows<true, T, kD, kBlockM, kThreads>(pipe, s_b, dout, q_row, m0, sq);
        pipe.commit();
        pipe.wait<0>();
        __syncthreads();
        uint32_t q_frag[kD / 16][4], do_frag[Tile::kDoShared ? 1 : kD / 16][4];
#pragma unroll
        for (int ks = 0; ks < kD / 16; ++ks) {
            load_a<kD>(q_frag[ks], s_a, warp * 16, ks * 16);
            if constexpr (!Tile::kDoShared) load_a<kD>(do_frag[ks], s_b, warp * 16, ks * 16);
        }

        // Per row: the LSE in base 2 (+inf for a row past sq or one that sees no key, so that
        // P = 2^(x − inf) = 0 there), D, and for geometric ALiBi the query position.
        float lse_log2[2], delta[2], pos_q[2][3] = {};
        for (int r = 0; r < 2; ++r) {
            const int i = m0 + row_local[r];
            const float l = i < sq ? p.lse[row_base + i] : -INFINITY;
            lse_log2[r] = l == -INFINITY ? INFINITY : l * kLog2e;
            delta[r] = i < sq ? p.delta[row_base + i] : 0.0f;
            if constexpr (kBias == Bias::kGeometric) {
                for (int c = 0; c < 3; ++c) pos_q[r][c] = p.positions[(int64_t(q_begin) + imin(i, sq - 1)) * 3 + c];
            }
        }
        const float slope_log2 = slope * kLog2e;

        // K/V buffer b: K at s_a + 2b·kBlockN rows, V kBlockN rows after it; for geometric ALiBi
        // the keys' positions (plain stores, published by the barrier after the wait) in
        // s_kpos + b·3·kBlockN, past the rows.
        float* s_kpos = reinterpret_cast<float*>(s_a + Tile::kRows * kStride);
        auto load_kv = [&](int tile) {
            T* buf = s_a + (tile % 2) * 2 * kBlockN * kStride;
            load_rows<true, T, kD, kBlockN, kThreads>(pipe, buf, k, k_row, tile * kBlockN, sk);
            load_rows<true, T, kD, kBlockN, kThreads>(pipe, buf + kBlockN * kStride, v, k_row, tile * kBlockN, sk);
            if constexpr (kBias == Bias::kGeometric) {
                for (int c = threadIdx.x; c < 3 * kBlockN; c += kThreads) {
                    const int j = imin(tile * kBlockN + c / 3, sk - 1);
                    s_kpos[(tile % 2) * 3 * kBlockN + c] = p.positions[(int64_t(k_begin) + j) * 3 + c % 3];
                }
            }
        };
        __syncthreads();  // every warp holds its Q and dO fragments: the staging rows are free
        load_kv(0);
        pipe.commit();
        for (int tile = 0; tile < n_tiles; ++tile) {
            const int n0 = tile * kBlockN;
            // Prefetch the next tile into the other buffer (the barrier that ended the previous
            // iteration says every warp is done with it); an empty group keeps the count uniform.
            if (tile + 1 < n_tiles) load_kv(tile + 1);
            pipe.commit();
            pipe.wait<1>();  // this tile's group has landed
            __syncthreads();
            const T* s_k = s_a + (tile % 2) * 2 * kBlockN * kStride;
            const T* s_v = s_k + kBlockN * kStride;

            float s[kBlockN / 8][4] = {}, dp[kBlockN / 8][4] = {};
            mma_abt<T, kD, kBlockN>(s, q_frag, s_k);
            if constexpr (Tile::kDoShared) {
                mma_abt_shared<T, kD, kBlockN>(dp, s_b, warp * 16, s_v);
            } else {
                mma_abt<T, kD, kBlockN>(dp, do_frag, s_v);
            }

            // P = 2^(x − lse) and dS = P ∘ (dP − D), written over dp; the bias-gradient terms.
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = e / 2, i = m0 + row_local[r], j = n0 + nt * 8 + 2 * t + e % 2;
                    float x = s[nt][e] * p.scale_log2;
                    float dist = 0.0f, inv = 0.0f, diff[3] = {0.0f, 0.0f, 0.0f};
                    if constexpr (kBias != Bias::kNone) {
                        const float* pk = nullptr;
                        if constexpr (kBias == Bias::kGeometric) pk = s_kpos + (tile % 2) * 3 * kBlockN + (j - n0) * 3;
                        dist = distance<kBias>(i, j, diag, pos_q[r], pk, diff, inv);
                        x -= slope_log2 * dist;
                    }
                    if (j >= key_end[r]) x = -INFINITY;
                    const float prob = ptx::ex2_approx_ftz(x - lse_log2[r]);
                    const float ds = prob * (dp[nt][e] - delta[r]);
                    dp[nt][e] = ds;
                    if constexpr (kBias != Bias::kNone) dslope[r] += ds * dist;
                    if constexpr (kBias == Bias::kGeometric) {
                        const float w = ds * inv;
                        for (int c = 0; c < 3; ++c) dpos[r][c] += w * diff[c];
                    }
                }
            }
            // dQ += dS·K (K rows are the keys: B row-major, ldmatrix .trans).
            mma_cb<T, kD, kBlockN>(acc, dp, s_k);
            __syncthreads();  // every warp is done with this buffer before it is refilled
        }
        pipe.wait<0>();
    }

    // dslope partial: Σ_j dS·(−dist); dpositions (query side): −slope·Σ_j dS·(p_i − p_j)/dist.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = m0 + row_local[r];
        float ds = dslope[r];
        ds += __shfl_xor_sync(0xffffffffu, ds, 1);
        ds += __shfl_xor_sync(0xffffffffu, ds, 2);
        float dpr[3];
        for (int c = 0; c < 3; ++c) {
            dpr[c] = dpos[r][c];
            dpr[c] += __shfl_xor_sync(0xffffffffu, dpr[c], 1);
            dpr[c] += __shfl_xor_sync(0xffffffffu, dpr[c], 2);
        }
        if (i >= sq) continue;
#pragma unroll
        for (int dt = 0; dt < kD / 8; ++dt) {
            *reinterpret_cast<uint32_t*>(dq + int64_t(i) * q_row + dt * 8 + 2 * t) =
                ptx::pack2<kType>(acc[dt][2 * r] * p.scale, acc[dt][2 * r + 1] * p.scale);
        }
        if (t == 0 && p.dslope_rows != nullptr) p.dslope_rows[row_base + i] = -ds;
        if (t == 0 && p.dpos_q != nullptr) {
            for (int c = 0; c < 3; ++c) p.dpos_q[(row_base + i) * 3 + c] = -slope * dpr[c];
        }
    }
}

template <typename T, int kD, Bias kBias, class Tile>
__global__ void __launch_bounds__(Tile::kThreads) dkdv_kernel(const Params p) {
    constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kStride = Row<kD>::kStride;
    constexpr int kThreads = Tile::kThreads;
    constexpr ptx::MmaType kType = kMma<T>;

    const int b = blockIdx.y, hk = blockIdx.z, n0 = blockIdx.x * kBlockN;
    int q_begin, q_end, k_begin, k_end;
    if (!sequence(p.cu_seqlens_q, b, p.total_q, q_begin, q_end)) return;
    if (!sequence(p.cu_seqlens_k, b, p.total_k, k_begin, k_end)) return;
    const int sq = q_end - q_begin, sk = k_end - k_begin;
    if (n0 >= sk) return;
    const int diag = sk - sq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int group = p.heads / p.heads_k;
    const int64_t q_row = int64_t(p.heads) * kD, k_row = int64_t(p.heads_k) * kD;
    const T* k = static_cast<const T*>(p.k) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
    const T* v = static_cast<const T*>(p.v) + int64_t(k_begin) * k_row + int64_t(hk) * kD;

    // Prefix-LM: keys [0, prefix) are visible to every query (clamped to [0, sk]).
    const int prefix = p.causal && p.prefix_len != nullptr ? imax(0, imin(sk, p.prefix_len[b])) : 0;
    // The queries that can see a key of this block: i + diag >= n0 under causal, every query
    // when the block starts inside the prefix.
    const int m_first = p.causal && n0 >= prefix ? imax(0, n0 - diag) / kBlockM * kBlockM : 0;
    // This thread's keys: the warp's 16, g and g + 8 (rows of the C fragments of Sᵀ).
    const int key_local[2] = {warp * 16 + g, warp * 16 + g + 8};
    // The first query that sees each of them (the mask as one comparison per score): none for a
    // key past sk, query j − diag under causal unless the key lies in the prefix, else all.
    int first_query[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int j = n0 + key_local[r];
        first_query[r] = j >= sk ? INT_MAX : (p.causal && j >= prefix ? j - diag : INT_MIN);
    }

    // Shared memory: K and V, then two stages of (Q, dO) rows, then two stages of the per-query
    // floats (LSE in base 2 with +inf where P = 0, D, and for geometric ALiBi the positions).
    constexpr int kStageRows = 2 * kBlockM, kStageFloats = 5 * kBlockM;
    T* s_k = dynamic_shared<T>();
    T* s_v = s_k + kBlockN * kStride;
    T* s_stage = s_v + kBlockN * kStride;
    float* s_floats = reinterpret_cast<float*>(s_stage + 2 * kStageRows * kStride);
    ptx::CpAsync pipe;
    load_rows<kBias == Bias::kGeometric, T, kD, kBlockN, kThreads>(pipe, s_k, k, k_row, n0, sk);
    load_rows<kBias == Bias::kGeometric, T, kD, kBlockN, kThreads>(pipe, s_v, v, k_row, n0, sk);
    pipe.commit();

    float pos_k[2][3] = {};
    if constexpr (kBias == Bias::kGeometric) {
        for (int r = 0; r < 2; ++r)
            for (int c = 0; c < 3; ++c)
                pos_k[r][c] = p.positions[(int64_t(k_begin) + imin(n0 + key_local[r], sk - 1)) * 3 + c];
    }

    // The steps: every (query head of the group, query tile from m_first), head-major. A step's
    // Q and dO rows are copied one step ahead with cp.async; its per-query floats are read into
    // registers one step ahead and stored to their stage after the current step's work, so no
    // load is waited for right after it is issued.
    const int tiles_per_head = sq > m_first ? (sq - m_first + kBlockM - 1) / kBlockM : 0;
    const int n_steps = group * tiles_per_head;
    // Per thread, the floats it carries for the next step: LSE and D of query c = threadIdx.x
    // (kBlockM <= kThreads), positions c = threadIdx.x and threadIdx.x + kThreads of 3·kBlockM.
    static_assert(kBlockM <= kThreads && 3 * kBlockM <= 2 * kThreads, "one pass of per-query floats");
    float next_lse = 0.0f, next_delta = 0.0f, next_pos[2] = {0.0f, 0.0f};
    auto issue = [&](int step) {
        const int h = hk * group + step / tiles_per_head, m0 = m_first + (step % tiles_per_head) * kBlockM;
        const int64_t qo = int64_t(q_begin) * q_row + int64_t(h) * kD;
        T* rows = s_stage + (step % 2) * kStageRows * kStride;
        load_rows<kBias == Bias::kGeometric, T, kD, kBlockM, kThreads>(pipe, rows, static_cast<const T*>(p.q) + qo, q_row, m0, sq);
        load_rows<kBias == Bias::kGeometric, T, kD, kBlockM, kThreads>(pipe, rows + kBlockM * kStride,
                                                             static_cast<const T*>(p.dout) + qo, q_row, m0, sq);
        pipe.commit();
        const int64_t row_base = int64_t(h) * p.total_q + q_begin;
        const int c = threadIdx.x, i = m0 + c;
        if (c < kBlockM) {
            const float l = i < sq ? p.lse[row_base + i] : -INFINITY;
            next_lse = l == -INFINITY ? INFINITY : l * kLog2e;
            next_delta = i < sq ? p.delta[row_base + i] : 0.0f;
        }
        if constexpr (kBias == Bias::kGeometric) {
#pragma unroll
            for (int pass = 0; pass < 2; ++pass) {
                const int e = c + pass * kThreads;
                if (e < 3 * kBlockM) next_pos[pass] = p.positions[(int64_t(q_begin) + imin(m0 + e / 3, sq - 1)) * 3 + e % 3];
            }
        }
    };
    auto publish = [&](int step) {  // the floats read by issue(step), into their stage
        float* f = s_floats + (step % 2) * kStageFloats;
        const int c = threadIdx.x;
        if (c < kBlockM) {
            f[c] = next_lse;
            f[kBlockM + c] = next_delta;
        }
        if constexpr (kBias == Bias::kGeometric) {
#pragma unroll
            for (int pass = 0; pass < 2; ++pass) {
                const int e = c + pass * kThreads;
                if (e < 3 * kBlockM) f[2 * kBlockM + e] = next_pos[pass];
            }
        }
    };

    float dk_acc[kD / 8][4] = {}, dv_acc[kD / 8][4] = {};
    float dpos[2][3] = {};

    if (n_steps > 0) {
        issue(0);
        publish(0);
    }
    for (int step = 0; step < n_steps; ++step) {
        const int h = hk * group + step / tiles_per_head, m0 = m_first + (step % tiles_per_head) * kBlockM;
        // The next step's copies go to the other stage: the barrier that ended the previous step
        // says every warp is done with it. An empty group at the last step keeps the count.
        if (step + 1 < n_steps) {
            issue(step + 1);
        } else {
            pipe.commit();
        }
        pipe.wait<1>();  // this step's rows (and, at step 0, K and V) have landed
        __syncthreads();
        const T* s_q = s_stage + (step % 2) * kStageRows * kStride;
        const T* s_do = s_q + kBlockM * kStride;
        const float* s_lse = s_floats + (step % 2) * kStageFloats;
        const float* s_delta = s_lse + kBlockM;
        const float* s_qpos = s_delta + kBlockM;
        float slope = 0.0f;
        if constexpr (kBias != Bias::kNone) slope = p.slopes[b * p.slope_batch_stride + h];
        const float slope_log2 = slope * kLog2e;

        // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for the warp's 16 keys (A from shared memory per k-step).
        float st[kBlockM / 8][4] = {}, dpt[kBlockM / 8][4] = {};
        {
            uint32_t kf[kD / 16][4];
#pragma unroll
            for (int ks = 0; ks < kD / 16; ++ks) load_a<kD>(kf[ks], s_k, warp * 16, ks * 16);
            mma_abt<T, kD, kBlockM>(st, kf, s_q);
#pragma unroll
            for (int ks = 0; ks < kD / 16; ++ks) load_a<kD>(kf[ks], s_v, warp * 16, ks * 16);
            mma_abt<T, kD, kBlockM>(dpt, kf, s_do);
        }

#pragma unroll
        for (int nt = 0; nt < kBlockM / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e / 2, col = nt * 8 + 2 * t + e % 2;
                const int i = m0 + col, j = n0 + key_local[r];
                float x = st[nt][e] * p.scale_log2;
                float dist = 0.0f, inv = 0.0f, diff[3] = {0.0f, 0.0f, 0.0f};
                if constexpr (kBias != Bias::kNone) {
                    float pq[3] = {0.0f, 0.0f, 0.0f};
                    if constexpr (kBias == Bias::kGeometric) {
                        const float* pi = s_qpos + col * 3;
                        pq[0] = pi[0];
                        pq[1] = pi[1];
                        pq[2] = pi[2];
                    }
                    dist = distance<kBias>(i, j, diag, pq, pos_k[r], diff, inv);  // diff = p_i − p_j
                    x -= slope_log2 * dist;
                }
                if (i >= sq || i < first_query[r]) x = -INFINITY;
                const float prob = ptx::ex2_approx_ftz(x - s_lse[col]);
                const float ds = prob * (dpt[nt][e] - s_delta[col]);
                st[nt][e] = prob;
                dpt[nt][e] = ds;
                if constexpr (kBias == Bias::kGeometric) {
                    // ∂bias_ij/∂p_j = slope·(p_i − p_j)/‖p_i − p_j‖.
                    const float w = ds * slope * inv;
                    for (int c = 0; c < 3; ++c) dpos[r][c] += w * diff[c];
                }
            }
        }
        // dV += Pᵀ·dO and dK += dSᵀ·Q (dO and Q rows are the queries: ldmatrix .trans).
        mma_cb<T, kD, kBlockM>(dv_acc, st, s_do);
        mma_cb<T, kD, kBlockM>(dk_acc, dpt, s_q);
        if (step + 1 < n_steps) publish(step + 1);
        __syncthreads();  // every warp is done with this stage before the next step refills it
    }
    pipe.wait<0>();  // no copy left in flight (a block whose keys no query sees)

    T* dk = static_cast<T*>(p.dk) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
    T* dv = static_cast<T*>(p.dv) + int64_t(k_begin) * k_row + int64_t(hk) * kD;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int j = n0 + key_local[r];
        float dpr[3];
        for (int c = 0; c < 3; ++c) {
            dpr[c] = dpos[r][c];
            dpr[c] += __shfl_xor_sync(0xffffffffu, dpr[c], 1);
            dpr[c] += __shfl_xor_sync(0xffffffffu, dpr[c], 2);
        }
        if (j >= sk) continue;
#pragma unroll
        for (int dt = 0; dt < kD / 8; ++dt) {
            const int64_t at = int64_t(j) * k_row + dt * 8 + 2 * t;
            *reinterpret_cast<uint32_t*>(dk + at) =
                ptx::pack2<kType>(dk_acc[dt][2 * r] * p.scale, dk_acc[dt][2 * r + 1] * p.scale);
            *reinterpret_cast<uint32_t*>(dv + at) = ptx::pack2<kType>(dv_acc[dt][2 * r], dv_acc[dt][2 * r + 1]);
        }
        if (t == 0 && p.dpos_k != nullptr) {
            for (int c = 0; c < 3; ++c) p.dpos_k[((int64_t(hk) * p.total_k) + k_begin + j) * 3 + c] = dpr[c];
        }
    }
}

constexpr int kReduceThreads = 256;

// dslopes[b, h] (per batch) or dslopes[h]: the per-row partials of head h summed over the rows
// of sequence b (or over every row), strided per thread, then block_sum's fixed tree.
__global__ void __launch_bounds__(kReduceThreads)
    dslopes_kernel(const float* rows, const int32_t* cu_seqlens_q, int64_t total_q, int heads, int per_batch,
                   float* dslopes) {
    const int h = blockIdx.x % heads, b = blockIdx.x / heads;
    int64_t begin = 0, end = total_q;
    if (per_batch) {
        int s, e;
        if (!sequence(cu_seqlens_q, b, total_q, s, e)) s = e = 0;
        begin = s;
        end = e;
    }
    float acc = 0.0f;
    for (int64_t i = begin + threadIdx.x; i < end; i += kReduceThreads) acc += rows[int64_t(h) * total_q + i];
    acc = block_sum<kReduceThreads>(acc);
    if (threadIdx.x == 0) dslopes[blockIdx.x] = acc;
}

// dpositions[t, c] = Σ_h dpos_q[h, t, c] + Σ_hk dpos_k[hk, t, c], heads in order.
__global__ void __launch_bounds__(kReduceThreads)
    dpositions_kernel(const float* dpos_q, const float* dpos_k, int64_t total, int heads, int heads_k,
                      float* dpositions) {
    const int64_t e = int64_t(blockIdx.x) * kReduceThreads + threadIdx.x;  // t·3 + c
    if (e >= total * 3) return;
    float acc = 0.0f;
    for (int h = 0; h < heads; ++h) acc += dpos_q[int64_t(h) * total * 3 + e];
    for (int h = 0; h < heads_k; ++h) acc += dpos_k[int64_t(h) * total * 3 + e];
    dpositions[e] = acc;
}

struct Launch {
    int64_t batch, max_seqlen_q, max_seqlen_k;
    cudaStream_t stream;
};

template <typename T, int kD, Bias kBias, class Dq = DqTiles<kD, kBias>, class Dkdv = DkdvTiles<kD, kBias>>
kiln_status launch(const Params& p, const Launch& l) {
    if (p.total_q > 0) {
        const int64_t pairs = p.total_q * p.heads;
        KILN_LAUNCH(static_cast<unsigned>((pairs + kDeltaWarps - 1) / kDeltaWarps), kDeltaWarps * 32, 0, l.stream,
                    delta_kernel<T, kD>)(p);
        if (const kiln_status s = launch_status(); s != KILN_SUCCESS) return s;
        if (l.max_seqlen_q > 0) {
            const dim3 grid(static_cast<unsigned>((l.max_seqlen_q + Dq::kBlockM - 1) / Dq::kBlockM),
                            static_cast<unsigned>(l.batch), static_cast<unsigned>(p.heads));
            // The rows, then the two buffers' key positions (geometric ALiBi).
            const size_t smem = sizeof(T) * Dq::kRows * Row<kD>::kStride + 6 * sizeof(float) * Dq::kBlockN;
            KILN_LAUNCH(grid, Dq::kThreads, smem, l.stream, dq_kernel<T, kD, kBias, Dq>)(p);
            if (const kiln_status s = launch_status(); s != KILN_SUCCESS) return s;
        }
    }
    if (p.total_k > 0 && l.max_seqlen_k > 0) {
        const dim3 grid(static_cast<unsigned>((l.max_seqlen_k + Dkdv::kBlockN - 1) / Dkdv::kBlockN),
                        static_cast<unsigned>(l.batch), static_cast<unsigned>(p.heads_k));
        const size_t smem = sizeof(T) * Dkdv::kRows * Row<kD>::kStride + sizeof(float) * Dkdv::kFloats;
        KILN_LAUNCH(grid, Dkdv::kThreads, smem, l.stream, dkdv_kernel<T, kD, kBias, Dkdv>)(p);
        if (const kiln_status s = launch_status(); s != KILN_SUCCESS) return s;
    }
    return KILN_SUCCESS;
}

template <typename T, int kD>
kiln_status dispatch_bias(const Params& p, const Launch& l) {
    if (p.slopes == nullptr) return launch<T, kD, Bias::kNone>(p, l);
    if (p.positions == nullptr) return launch<T, kD, Bias::kLinear>(p, l);
    return launch<T, kD, Bias::kGeometric>(p, l);
}

template <typename T>
kiln_status dispatch_dim(const Params& p, const Launch& l) {
    switch (p.head_dim) {
        case 32: return dispatch_bias<T, 32>(p, l);
        case 64: return dispatch_bias<T, 64>(p, l);
        case 96: return dispatch_bias<T, 96>(p, l);
        case 128: return dispatch_bias<T, 128>(p, l);
        default: return KILN_ERROR_INVALID_SIZE;
    }
}

// Tile variants of the backward for the GPU sweep (issue 23; scripts/gpu-run.sh step
// sweep-attention): bf16, no bias or linear ALiBi, at D = 64 and 128; geometric ALiBi and f16 run
// the default. A variant is a pair (dq: warps × keys per tile; dkdv: warps × queries per step),
// the two kernels timed together as the backward: every pair of 3 dq and 4 dk/dv configurations
// at D = 128, of 4 and 4 at D = 64 (the pairs reuse the kernels, so the list costs no compile
// time past its 7 and 8 kernels). None spills (tests/suite/kernels_build.rs holds every
// attention kernel to no local memory; dq 4w × 128k at D = 64 and dq 4w × 16k with ALiBi at D =
// 128 spilled and are not here). Variant 0 is the default.
using RunBwd = kiln_status (*)(const Params&, const Launch&);
struct BwdVariant {
    const char* name;
    RunBwd none, linear;
};
template <int kD, int kDqWarps, int kDqKeys, int kDkdvWarps, int kDkdvQueries>
constexpr BwdVariant bwd_variant(const char* name) {
    using T = __nv_bfloat16;
    return BwdVariant{name,
                      &launch<T, kD, Bias::kNone, DqTiles<kD, Bias::kNone, kDqWarps, kDqKeys>,
                              DkdvTiles<kD, Bias::kNone, kDkdvWarps, kDkdvQueries>>,
                      &launch<T, kD, Bias::kLinear, DqTiles<kD, Bias::kLinear, kDqWarps, kDqKeys>,
                              DkdvTiles<kD, Bias::kLinear, kDkdvWarps, kDkdvQueries>>};
}
constexpr BwdVariant kBwdVariants128[] = {
    bwd_variant<128, 4, 32, 4, 32>("dq 4w x 32k, dkdv 4w x 32q"),
    bwd_variant<128, 4, 32, 8, 32>("dq 4w x 32k, dkdv 8w x 32q"),
    bwd_variant<128, 4, 32, 8, 16>("dq 4w x 32k, dkdv 8w x 16q"),
    bwd_variant<128, 4, 32, 4, 16>("dq 4w x 32k, dkdv 4w x 16q"),
    bwd_variant<128, 8, 32, 4, 32>("dq 8w x 32k, dkdv 4w x 32q"),
    bwd_variant<128, 8, 32, 8, 32>("dq 8w x 32k, dkdv 8w x 32q"),
    bwd_variant<128, 8, 32, 8, 16>("dq 8w x 32k, dkdv 8w x 16q"),
    bwd_variant<128, 8, 32, 4, 16>("dq 8w x 32k, dkdv 4w x 16q"),
    bwd_variant<128, 8, 16, 4, 32>("dq 8w x 16k, dkdv 4w x 32q"),
    bwd_variant<128, 8, 16, 8, 32>("dq 8w x 16k, dkdv 8w x 32q"),
    bwd_variant<128, 8, 16, 8, 16>("dq 8w x 16k, dkdv 8w x 16q"),
    bwd_variant<128, 8, 16, 4, 16>("dq 8w x 16k, dkdv 4w x 16q"),
};
constexpr BwdVariant kBwdVariants64[] = {
    bwd_variant<64, 4, 64, 4, 64>("dq 4w x 64k, dkdv 4w x 64q"),
    bwd_variant<64, 4, 64, 4, 32>("dq 4w x 64k, dkdv 4w x 32q"),
    bwd_variant<64, 4, 64, 8, 64>("dq 4w x 64k, dkdv 8w x 64q"),
    bwd_variant<64, 4, 64, 8, 32>("dq 4w x 64k, dkdv 8w x 32q"),
    bwd_variant<64, 4, 32, 4, 64>("dq 4w x 32k, dkdv 4w x 64q"),
    bwd_variant<64, 4, 32, 4, 32>("dq 4w x 32k, dkdv 4w x 32q"),
    bwd_variant<64, 4, 32, 8, 64>("dq 4w x 32k, dkdv 8w x 64q"),
    bwd_variant<64, 4, 32, 8, 32>("dq 4w x 32k, dkdv 8w x 32q"),
    bwd_variant<64, 8, 64, 4, 64>("dq 8w x 64k, dkdv 4w x 64q"),
    bwd_variant<64, 8, 64, 4, 32>("dq 8w x 64k, dkdv 4w x 32q"),
    bwd_variant<64, 8, 64, 8, 64>("dq 8w x 64k, dkdv 8w x 64q"),
    bwd_variant<64, 8, 64, 8, 32>("dq 8w x 64k, dkdv 8w x 32q"),
    bwd_variant<64, 8, 32, 4, 64>("dq 8w x 32k, dkdv 4w x 64q"),
    bwd_variant<64, 8, 32, 4, 32>("dq 8w x 32k, dkdv 4w x 32q"),
    bwd_variant<64, 8, 32, 8, 64>("dq 8w x 32k, dkdv 8w x 64q"),
    bwd_variant<64, 8, 32, 8, 32>("dq 8w x 32k, dkdv 8w x 32q"),
};
static_assert(std::is_same_v<DqTiles<128, Bias::kNone>, DqTiles<128, Bias::kNone, 4, 32>> &&
                  std::is_same_v<DkdvTiles<128, Bias::kNone>, DkdvTiles<128, Bias::kNone, 4, 32>> &&
                  std::is_same_v<DqTiles<64, Bias::kLinear>, DqTiles<64, Bias::kLinear, 4, 64>> &&
                  std::is_same_v<DkdvTiles<64, Bias::kLinear>, DkdvTiles<64, Bias::kLinear, 4, 64>>,
              "variant 0 is the default configuration");

int32_t bwd_variant_count(int64_t head_dim) { return variant_count(kBwdVariants128, kBwdVariants64, head_dim); }
const BwdVariant* bwd_variant_of(int64_t head_dim, int32_t variant) {
    return variant_of(kBwdVariants128, kBwdVariants64, head_dim, variant);
}

constexpr int64_t kMaxGridYZ = 65535;

// Workspace layout: delta, dslope rows [H, total_q]; dpos_q [H, total_q, 3]; dpos_k [H_k,
// total_k, 3]; each region starts on a 16-byte boundary.
int64_t round16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

}  // namespace
}  // namespace kiln

extern "C" {

int64_t kiln_attention_alibi_bwd_workspace_bytes(int64_t total_q, int64_t total_k, int64_t heads, int64_t heads_k) {
    using kiln::round16;
    if (total_q < 0 || total_k < 0 || heads < 1 || heads_k < 1 || total_q > (int64_t(1) << 40) ||
        total_k > (int64_t(1) << 40) || heads > kiln::kMaxGridYZ || heads_k > kiln::kMaxGridYZ)
        return -1;
    const int64_t rows = heads * total_q * 4;
    return 2 * round16(rows) + round16(3 * rows) + round16(heads_k * total_k * 12);
}

}  // extern "C"

namespace kiln {
namespace {

// kiln_attention_alibi_bwd through `variant` (a tile variant: bf16, no geometric ALiBi, checked
// by the caller) or, when it is null, the default configuration of each dtype, head dim and bias.
kiln_status backward(const BwdVariant* variant, kiln_dtype dtype, const void* q, const void* k, const void* v,
                     const void* out, const float* lse, const void* dout, const int32_t* cu_seqlens_q,
                     const int32_t* cu_seqlens_k, const float* slopes, int32_t slopes_per_batch, const float* positions,
                     int64_t batch, int64_t total_q, int64_t total_k, int64_t heads, int64_t heads_k, int64_t head_dim,
                     int64_t max_seqlen_q, int64_t max_seqlen_k, int32_t causal, const int32_t* prefix_len,
                     float softmax_scale, void* dq, void* dk, void* dv, float* dslopes, float* dpositions,
                     void* workspace, int64_t workspace_bytes, void* stream) {
    const int d = static_cast<int>(dtype);
    if (d != KILN_DTYPE_F16 && d != KILN_DTYPE_BF16) return KILN_ERROR_INVALID_DTYPE;
    if (batch < 0 || total_q < 0 || total_k < 0 || max_seqlen_q < 0 || max_seqlen_k < 0 || heads < 1 || heads_k < 1 ||
        heads % heads_k != 0 || batch > kMaxGridYZ || heads > kMaxGridYZ || max_seqlen_q > INT32_MAX ||
        max_seqlen_k > INT32_MAX || !::kiln_attention_head_dim_supported(head_dim))
        return KILN_ERROR_INVALID_SIZE;
    if (!std::isfinite(softmax_scale) || (positions != nullptr && slopes == nullptr) ||
        (dslopes != nullptr && slopes == nullptr) || (dpositions != nullptr && positions == nullptr))
        return KILN_ERROR_INVALID_VALUE;
    if (positions != nullptr && total_q != total_k) return KILN_ERROR_INVALID_SIZE;
    if (cu_seqlens_q == nullptr || cu_seqlens_k == nullptr) return KILN_ERROR_NULL_POINTER;
    if (total_q > 0 && (q == nullptr || out == nullptr || lse == nullptr || dout == nullptr || dq == nullptr))
        return KILN_ERROR_NULL_POINTER;
    if (total_k > 0 && (k == nullptr || v == nullptr || dk == nullptr || dv == nullptr)) return KILN_ERROR_NULL_POINTER;
    const int64_t needed = ::kiln_attention_alibi_bwd_workspace_bytes(total_q, total_k, heads, heads_k);
    if (needed < 0) return KILN_ERROR_INVALID_SIZE;
    if (workspace == nullptr && needed > 0) return KILN_ERROR_NULL_POINTER;
    if (workspace_bytes < needed) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    // cp.async moves 16-byte chunks of q, k, v, dout rows; gradients are written in pairs.
    if (!is_aligned(q, 16) || !is_aligned(k, 16) || !is_aligned(v, 16) || !is_aligned(dout, 16) ||
        !is_aligned(out, 4) || !is_aligned(dq, 4) || !is_aligned(dk, 4) || !is_aligned(dv, 4) || !is_aligned(lse, 4) ||
        !is_aligned(slopes, 4) || !is_aligned(positions, 4) || !is_aligned(dslopes, 4) || !is_aligned(dpositions, 4) ||
        !is_aligned(cu_seqlens_q, 4) || !is_aligned(cu_seqlens_k, 4) || !is_aligned(workspace, 16) ||
        !is_aligned(prefix_len, 4))
        return KILN_ERROR_MISALIGNED;

    const int64_t rows = round16(heads * total_q * 4);
    char* ws = static_cast<char*>(workspace);
    Params p{};
    p.q = q;
    p.k = k;
    p.v = v;
    p.out = out;
    p.dout = dout;
    p.lse = lse;
    p.cu_seqlens_q = cu_seqlens_q;
    p.cu_seqlens_k = cu_seqlens_k;
    p.slopes = slopes;
    p.slope_batch_stride = slopes_per_batch ? heads : 0;
    p.positions = positions;
    p.dq = dq;
    p.dk = dk;
    p.dv = dv;
    p.delta = reinterpret_cast<float*>(ws);
    p.dslope_rows = dslopes != nullptr ? reinterpret_cast<float*>(ws + rows) : nullptr;
    p.dpos_q = dpositions != nullptr ? reinterpret_cast<float*>(ws + 2 * rows) : nullptr;
    p.dpos_k =
        dpositions != nullptr ? reinterpret_cast<float*>(ws + 2 * rows + round16(3 * heads * total_q * 4)) : nullptr;
    p.total_q = total_q;
    p.total_k = total_k;
    p.heads = static_cast<int>(heads);
    p.heads_k = static_cast<int>(heads_k);
    p.head_dim = static_cast<int>(head_dim);
    p.causal = causal != 0;
    p.prefix_len = prefix_len;
    p.scale = softmax_scale;
    p.scale_log2 = softmax_scale * kLog2e;
    const auto s = static_cast<cudaStream_t>(stream);
    const Launch l{batch, max_seqlen_q, max_seqlen_k, s};
    if (batch > 0) {
        kiln_status status;
        if (variant != nullptr) {
            status = (slopes == nullptr ? variant->none : variant->linear)(p, l);
        } else {
            status = d == KILN_DTYPE_F16 ? dispatch_dim<__half>(p, l) : dispatch_dim<__nv_bfloat16>(p, l);
        }
        if (status != KILN_SUCCESS) return status;
    }
    if (dslopes != nullptr) {
        const int64_t n = slopes_per_batch ? batch * heads : heads;
        if (n > 0) {
            KILN_LAUNCH(static_cast<unsigned>(n), kReduceThreads, 0, s, dslopes_kernel)(
                p.dslope_rows, cu_seqlens_q, total_q, p.heads, int(slopes_per_batch != 0), dslopes);
            if (const kiln_status st = launch_status(); st != KILN_SUCCESS) return st;
        }
    }
    if (dpositions != nullptr && total_q > 0) {
        KILN_LAUNCH(static_cast<unsigned>((total_q * 3 + kReduceThreads - 1) / kReduceThreads), kReduceThreads, 0, s,
                    dpositions_kernel)(p.dpos_q, p.dpos_k, total_q, p.heads, p.heads_k, dpositions);
        if (const kiln_status st = launch_status(); st != KILN_SUCCESS) return st;
    }
    return KILN_SUCCESS;
}

}  // namespace
}  // namespace kiln

extern "C" {

kiln_status kiln_attention_alibi_bwd(kiln_dtype dtype, const void* q, const void* k, const void* v, const void* out,
                                     const float* lse, const void* dout, const int32_t* cu_seqlens_q,
                                     const int32_t* cu_seqlens_k, const float* slopes, int32_t slopes_per_batch,
                                     const float* positions, int64_t batch, int64_t total_q, int64_t total_k,
                                     int64_t heads, int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q,
                                     int64_t max_seqlen_k, int32_t causal, const int32_t* prefix_len,
                                     float softmax_scale, void* dq, void* dk,
                                     void* dv, float* dslopes, float* dpositions, void* workspace,
                                     int64_t workspace_bytes, void* stream) {
    return kiln::backward(nullptr, dtype, q, k, v, out, lse, dout, cu_seqlens_q, cu_seqlens_k, slopes, slopes_per_batch,
                          positions, batch, total_q, total_k, heads, heads_k, head_dim, max_seqlen_q, max_seqlen_k,
                          causal, prefix_len, softmax_scale, dq, dk, dv, dslopes, dpositions, workspace,
                          workspace_bytes, stream);
}

int32_t kiln_attention_bwd_variants(int64_t head_dim) { return kiln::bwd_variant_count(head_dim); }

const char* kiln_attention_bwd_variant_name(int64_t head_dim, int32_t variant) {
    const kiln::BwdVariant* v = kiln::bwd_variant_of(head_dim, variant);
    return v == nullptr ? nullptr : v->name;
}

kiln_status kiln_attention_alibi_bwd_variant(int32_t variant, kiln_dtype dtype, const void* q, const void* k,
                                             const void* v, const void* out, const float* lse, const void* dout,
                                             const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k,
                                             const float* slopes, int32_t slopes_per_batch, const float* positions,
                                             int64_t batch, int64_t total_q, int64_t total_k, int64_t heads,
                                             int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q,
                                             int64_t max_seqlen_k, int32_t causal, const int32_t* prefix_len,
                                             float softmax_scale, void* dq, void* dk, void* dv, float* dslopes,
                                             float* dpositions, void* workspace, int64_t workspace_bytes, void* stream) {
    const kiln::BwdVariant* var = kiln::bwd_variant_of(head_dim, variant);
    if (var == nullptr) return KILN_ERROR_INVALID_VALUE;
    if (dtype != KILN_DTYPE_BF16) return KILN_ERROR_INVALID_DTYPE;
    if (positions != nullptr) return KILN_ERROR_INVALID_VALUE;  // geometric ALiBi: the default only
    return kiln::backward(var, dtype, q, k, v, out, lse, dout, cu_seqlens_q, cu_seqlens_k, slopes, slopes_per_batch,
                          positions, batch, total_q, total_k, heads, heads_k, head_dim, max_seqlen_q, max_seqlen_k,
                          causal, prefix_len, softmax_scale, dq, dk, dv, dslopes, dpositions, workspace,
                          workspace_bytes, stream);
}

}  // extern "C"

// Attention forward with ALiBi, FlashAttention-2 style: per (sequence, head, 64-query tile) one
// block streams the sequence's K/V tiles through shared memory, computes S = scale·Q·Kᵀ + bias on
// tensor cores (mma.sync m16n8k16, f32 accumulators), keeps an online softmax in f32 registers and
// accumulates O = P·V; no S×S matrix ever reaches memory. Varlen (cu_seqlens), MHA/GQA/MQA,
// causal (bottom-right aligned; optionally prefix-LM: keys of a per-sequence prefix visible to
// every query) or bidirectional, linear ALiBi −slope·|i + sk − sq − j| or
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
#include "common/variants.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln {
namespace {

// The bias, a compile-time switch so that each costs nothing where it is off.
enum class Bias { kNone, kLinear, kGeometric };

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
constexpr ptx::MmaType kMma = std::is_same_v<T, __half> ? ptx::MmaType::kF16 : ptx::MmaType::kBF16;

// One tile configuration of the forward kernel: kWarps warps each own kMTiles × 16 query rows
// (mma M tiles), so a block owns kBlockM = kWarps · 16 · kMTiles queries and streams the keys in
// tiles of kBlockN through a ring of kStages K/V buffers (two by default: the next tile's
// cp.async runs while this one is computed; three keep two tiles in flight). Rows are padded by one 16-byte chunk: the row stride is then an odd
// number of 16-byte units modulo 128 bytes, so the 8 row addresses of an ldmatrix phase fall in 8
// different bank groups (no conflicts) for every supported D.
template <int kD_, int kWarps_, int kMTiles_, int kBlockN_, int kStages_ = 2>
struct FwdTiles {
    static constexpr int kD = kD_, kWarps = kWarps_, kMTiles = kMTiles_, kBlockN = kBlockN_, kStages = kStages_;
    static_assert(kStages == 2 || kStages == 3, "a ring of two or three K/V stages");
    static_assert(kD % 32 == 0 && kD <= 128, "head dims 32, 64, 96, 128");
    static_assert(kBlockN % 16 == 0 && kMTiles >= 1, "key tiles of whole mma k-steps");
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kWarpM = 16 * kMTiles;  // query rows per warp
    static constexpr int kBlockM = kWarps * kWarpM;
    static constexpr int kStride = kD + 8;  // elements per shared-memory row
    static constexpr int kChunks = kD / 8;  // 16-byte chunks per row
    static constexpr int kStage = 2 * kBlockN * kStride;  // one K tile and one V tile
    // Q, then kStages stages of (K, V).
    static constexpr int kSmemElems = kBlockM * kStride + kStages * kStage;
};

// The configuration each head dimension and bias runs: 4 warps of 32 query rows (128 queries per
// block, FlashAttention-2's D = 128 shape), whose 32 × D accumulators and 32 × kBlockN scores
// must fit 255 registers without spills: 64 keys per tile up to D = 64, 32 above. Geometric ALiBi
// holds each row's position too, so from D = 64 up it runs 8 warps of 16 rows. Shared memory (Q
// and two K/V stages: 68 KiB at D = 128) is above the 48 KiB default and opted into at launch
// (KILN_LAUNCH).
template <int kD, Bias kBias>
struct DefaultFwdOf {
    using type = std::conditional_t<(kBias == Bias::kGeometric && kD >= 64), FwdTiles<kD, 8, 1, 64>,
                                    FwdTiles<kD, 4, 2, (kD <= 64 ? 64 : 32)>>;
};
template <int kD, Bias kBias>
using DefaultFwd = typename DefaultFwdOf<kD, kBias>::type;

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
    const int32_t* prefix_len;     // [B] or NULL; causal: key j < prefix_len[b] is visible to all
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

template <typename T, typename Cfg, Bias kBias>
__global__ void __launch_bounds__(Cfg::kThreads) attention_fwd_kernel(const Params p) {
    constexpr int kD = Cfg::kD, kBlockN = Cfg::kBlockN, kStride = Cfg::kStride, kChunks = Cfg::kChunks;
    constexpr int kMT = Cfg::kMTiles, kWarpM = Cfg::kWarpM, kBlockM = Cfg::kBlockM, kThreads = Cfg::kThreads;
    constexpr int kRows = 2 * kMT;  // query rows this thread holds: g and g + 8 of each M tile
    constexpr ptx::MmaType kType = kMma<T>;

    const int b = blockIdx.y, h = blockIdx.z;
    // Causal: the last query tiles see the most keys; they get the lowest block indices, which
    // the GPU starts first, so the longest blocks do not run last on an otherwise idle device.
    const int m_block = p.causal ? int(gridDim.x) - 1 - int(blockIdx.x) : int(blockIdx.x);
    const int m0 = m_block * kBlockM;
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
    const int warp_row0 = warp * kWarpM;  // the warp's first row in the block

    // Prefix-LM (causal only): keys [0, prefix) are visible to every query, as are keys the
    // causal rule shows (query i sees key j iff j <= i + diag or j < prefix: "both in the
    // prefix, or j <= i"). Clamped to [0, sk].
    const int prefix = p.causal && p.prefix_len != nullptr ? imax(0, imin(sk, p.prefix_len[b])) : 0;
    // Keys [0, kv_end) can be visible to this tile's rows; tiles past it are skipped (causal).
    int kv_end = sk;
    if (p.causal) kv_end = imax(prefix, imax(0, imin(sk, m0 + kBlockM + diag)));
    const int n_tiles = (kv_end + kBlockN - 1) / kBlockN;

    // Row rr of this thread (rr = 2·mt + half): block row warp_row0 + 16·mt + g + 8·half.
    auto row_of = [&](int rr) { return warp_row0 + 16 * (rr / 2) + g + 8 * (rr % 2); };

    if (n_tiles == 0) {
        // Every row of the tile is fully masked: output 0 (whole 16-byte chunks), lse −inf.
        Pack<T, 8> zeros;
#pragma unroll
        for (int j = 0; j < 8; ++j) zeros.v[j] = from_float<T>(0.0f);
        for (int c = lane; c < kWarpM * kChunks; c += 32) {
            const int i = m0 + warp_row0 + c / kChunks;
            if (i < sq) store_pack<T, 8>(out + int64_t(i) * q_row + (c % kChunks) * 8, zeros);
        }
        for (int rr = 0; rr < kRows; ++rr) {
            const int i = m0 + row_of(rr);
            if (i < sq && t == 0) lse[i] = -INFINITY;
        }
        return;
    }

    T* s_q = dynamic_shared<T>();           // (kBlockM, kStride)
    T* s_kv = s_q + kBlockM * kStride;       // kStages stages of K (kBlockN, kStride) then V
    ptx::CpAsync pipe;

    // Copies kRows rows of D elements starting at row `first` of a sequence with `len` rows into
    // shared memory; rows past `len` become zeros (so masked keys contribute 0·0, never NaN). The
    // chunks are dealt out to the threads in a fixed number of passes, which the compiler unrolls.
    auto load_tile = [&](T* dst, const T* src, int64_t row_stride, int first, int len, auto rows) {
        constexpr int kRows = decltype(rows)::value;
        static_assert(kRows * kChunks % kThreads == 0, "every thread copies the same number of chunks");
#pragma unroll
        for (int pass = 0; pass < kRows * kChunks / kThreads; ++pass) {
            const int c = int(threadIdx.x) + pass * kThreads;
            const int r = c / kChunks, col = (c % kChunks) * 8;
            const bool valid = first + r < len;
            // A row inside the tensor even when invalid: no byte of it is read then.
            const int src_row = valid ? first + r : 0;
            pipe.copy16(dst + r * kStride + col, src + int64_t(src_row) * row_stride + col, valid);
        }
    };
    using QRows = std::integral_constant<int, kBlockM>;
    using KRows = std::integral_constant<int, kBlockN>;
    auto load_kv = [&](int tile) {
        T* s_k = s_kv + (tile % Cfg::kStages) * Cfg::kStage;
        load_tile(s_k, k, k_row, tile * kBlockN, sk, KRows{});
        load_tile(s_k + kBlockN * kStride, v, k_row, tile * kBlockN, sk, KRows{});
    };

    // Geometric ALiBi: each K tile's key positions go through shared memory (a ring of two, next
    // to the K/V ring), loaded with the tile, so that a score reads 3 floats from shared memory.
    __shared__ float s_pos[kBias == Bias::kGeometric ? 2 : 1][kBlockN][3];
    auto load_positions = [&](int tile) {
        if constexpr (kBias == Bias::kGeometric) {
            for (int c = threadIdx.x; c < kBlockN * 3; c += kThreads) {
                const int j = imin(tile * kBlockN + c / 3, sk - 1);  // keys past sk are masked
                s_pos[tile & 1][c / 3][c % 3] = p.positions[(int64_t(k_begin) + j) * 3 + c % 3];
            }
        }
    };

    // Geometric ALiBi's position ring has two stages: it runs the two-stage configurations only.
    static_assert(kBias != Bias::kGeometric || Cfg::kStages == 2, "geometric ALiBi: two stages");
    load_tile(s_q, q, q_row, m0, sq, QRows{});
    load_kv(n_tiles - 1);
    pipe.commit();
    load_positions(n_tiles - 1);
    // A three-stage ring starts two tiles ahead (the second group empty for a one-tile row).
    if constexpr (Cfg::kStages == 3) {
        if (n_tiles >= 2) load_kv(n_tiles - 2);
        pipe.commit();
    }

    // Linear ALiBi also runs softmax scales ≤ 0 without a bias (slopes NULL: slope 0; see
    // dispatch_bias).
    float neg_slope_log2 = 0.0f;
    if constexpr (kBias != Bias::kNone) {
        if (p.slopes != nullptr) neg_slope_log2 = -p.slopes[b * p.slope_batch_stride + h] * kLog2e;
    }
    // Without a bias the scores stay raw (unscaled) until the exponent: max and row_max are then
    // in raw units, and `to_log2` (the scale, > 0 there) turns them into base-2 units; 2^(s·c −
    // max·c) is one FMA and the SFU's exp2 (FlashAttention-2's trick). With a bias the scores are
    // scaled and biased first, in base 2.
    constexpr bool kRaw = kBias == Bias::kNone;
    const float to_log2 = kRaw ? p.scale_log2 : 1.0f;
    float pos_q[kRows][3] = {};
    if constexpr (kBias == Bias::kGeometric) {
        for (int rr = 0; rr < kRows; ++rr) {
            const int i = imin(m0 + row_of(rr), sq - 1);  // rows past sq are computed, never stored
            for (int d = 0; d < 3; ++d) pos_q[rr][d] = p.positions[(int64_t(q_begin) + i) * 3 + d];
        }
    }

    float o[kMT][kD / 8][4] = {};      // O accumulators: (kWarpM rows, D) of this warp
    float row_max[kRows];              // running max of the base-2 scores
    float row_sum[kRows];              // this thread's part of Σ 2^(s − max)
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) {
        row_max[rr] = -INFINITY;
        row_sum[rr] = 0.0f;
    }

    // One K/V tile. Tiles are taken from the last to the first, the ones that need a mask (the
    // last, partial one; under causal those crossing the diagonal of the block's first row)
    // first, in their own loop, so that the main loop carries no masking code at all.
    auto step = [&](int tile, auto masked) {
        constexpr bool kMask = decltype(masked)::value;
        const int n0 = tile * kBlockN;
        const T* s_k = s_kv + (tile % Cfg::kStages) * Cfg::kStage;
        const T* s_v = s_k + kBlockN * kStride;
        // This tile's K/V (and Q, positions) have landed for every thread (the kStages − 2 groups
        // issued after it may still be in flight), and every warp is done with the previous tile:
        // its buffers take the load kStages − 1 tiles ahead.
        pipe.wait<Cfg::kStages - 2>();
        __syncthreads();
        if (tile - (Cfg::kStages - 1) >= 0) {
            load_kv(tile - (Cfg::kStages - 1));
            load_positions(tile - (Cfg::kStages - 1));
        }
        pipe.commit();

        // S = Q·K_tileᵀ: (kWarpM, kBlockN) per warp. Q's A fragments come from shared memory per
        // k-step (ldmatrix.x4: matrices (rows +0/+8) × (columns +0/+8) of a 16x16 tile). K rows are
        // B's columns ("col" layout), so ldmatrix without .trans; one x4 covers 32 head dims (two
        // k-steps) of 8 keys, shared by the warp's M tiles.
        float s[kMT][kBlockN / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kD / 32; ++kk) {
            uint32_t a[kMT][2][4];
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                const T* qa = s_q + (warp_row0 + 16 * mt + lane % 8 + 8 * ((lane / 8) % 2)) * kStride + 8 * (lane / 16);
                ptx::ldmatrix<4, false>(a[mt][0], qa + kk * 32);
                ptx::ldmatrix<4, false>(a[mt][1], qa + kk * 32 + 16);
            }
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) {
                uint32_t kb[4];
                ptx::ldmatrix<4, false>(kb, s_k + (nt * 8 + lane % 8) * kStride + kk * 32 + 8 * (lane / 8));
                const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
#pragma unroll
                for (int mt = 0; mt < kMT; ++mt) {
                    ptx::mma_m16n8k16<kType>(s[mt][nt], a[mt][0], b0, s[mt][nt]);
                    ptx::mma_m16n8k16<kType>(s[mt][nt], a[mt][1], b1, s[mt][nt]);
                }
            }
        }

        // Scores in base 2: scale and bias in one FMA. Linear ALiBi −slope·|i + diag − j|: the
        // row part i + diag − n0 − 2t is converted once per row and tile, the column part is a
        // constant of the unrolled loop, so a score costs a subtraction, a multiply and the FMA.
        // Masking (kMask) is needed only where the tile runs past the sequence or crosses the
        // causal diagonal of the block's first row.
        float row_base[kRows];
#pragma unroll
        for (int rr = 0; rr < kRows; ++rr) row_base[rr] = float(m0 + row_of(rr) + diag - n0 - 2 * t);
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                const int col = nt * 8 + c;  // + 2t: this thread's key column within the tile
                [[maybe_unused]] float pk[3] = {};  // the key's position: geometric ALiBi only
                if constexpr (kBias == Bias::kGeometric) {
                    for (int d = 0; d < 3; ++d) pk[d] = s_pos[tile & 1][col + 2 * t][d];
                }
#pragma unroll
                for (int rr = 0; rr < kRows; ++rr) {
                    float& x = s[rr / 2][nt][2 * (rr % 2) + c];
                    if constexpr (kBias == Bias::kNone) {
                        // Raw scores: the scale is applied in the exponent's FMA below.
                    } else if constexpr (kBias == Bias::kLinear) {
                        x = fmaf(x, p.scale_log2, neg_slope_log2 * fabsf(row_base[rr] - float(col)));
                    } else {
                        const float dx = pos_q[rr][0] - pk[0], dy = pos_q[rr][1] - pk[1], dz = pos_q[rr][2] - pk[2];
                        const float dist = ptx::sqrt_approx_ftz(fmaf(dx, dx, fmaf(dy, dy, dz * dz)));
                        x = fmaf(x, p.scale_log2, neg_slope_log2 * dist);
                    }
                    if constexpr (kMask) {
                        const int i = m0 + row_of(rr), j = n0 + col + 2 * t;
                        if (j >= sk || (p.causal && j > i + diag && j >= prefix)) x = -INFINITY;
                    }
                }
            }
        }

        // Online softmax. The running sums and O are rescaled by 2^(old max − new max) only when
        // a row of the warp has a new max: after the first tiles most have none, and a
        // warp-uniform branch skips the kMT·D/2 multiplies (a factor of exactly 1 otherwise). A
        // row with nothing visible yet keeps max −inf; it exponentiates against 0 so that
        // 2^(−inf) = 0.
        float base[kRows], correction[kRows];
        bool raised = false;
#pragma unroll
        for (int rr = 0; rr < kRows; ++rr) {
            float mx = row_max[rr];
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) {
                mx = fmaxf(mx, fmaxf(s[rr / 2][nt][2 * (rr % 2)], s[rr / 2][nt][2 * (rr % 2) + 1]));
            }
            // The 4 lanes of a quad share the row.
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            base[rr] = mx == -INFINITY ? 0.0f : mx;
            correction[rr] = ptx::ex2_approx_ftz((row_max[rr] - base[rr]) * to_log2);
            base[rr] *= to_log2;
            raised |= mx != row_max[rr];
            row_max[rr] = mx;
        }
        if (__any_sync(0xffffffffu, raised)) {
#pragma unroll
            for (int rr = 0; rr < kRows; ++rr) {
                row_sum[rr] *= correction[rr];
#pragma unroll
                for (int dt = 0; dt < kD / 8; ++dt) {
                    o[rr / 2][dt][2 * (rr % 2)] *= correction[rr];
                    o[rr / 2][dt][2 * (rr % 2) + 1] *= correction[rr];
                }
            }
        }
#pragma unroll
        for (int rr = 0; rr < kRows; ++rr) {
#pragma unroll
            for (int nt = 0; nt < kBlockN / 8; ++nt) {
                float* x = &s[rr / 2][nt][2 * (rr % 2)];
                if constexpr (kRaw) {
                    x[0] = ptx::ex2_approx_ftz(fmaf(x[0], p.scale_log2, -base[rr]));
                    x[1] = ptx::ex2_approx_ftz(fmaf(x[1], p.scale_log2, -base[rr]));
                } else {
                    x[0] = ptx::ex2_approx_ftz(x[0] - base[rr]);
                    x[1] = ptx::ex2_approx_ftz(x[1] - base[rr]);
                }
                row_sum[rr] += x[0] + x[1];
            }
        }

        // O += P·V_tile. The C fragments of key columns 16kk..16kk+15 are exactly the A fragment
        // of that k-step; V rows are keys (B's k), so ldmatrix .trans; one x4 covers 16 keys × 16
        // head dims: matrices (keys +0/+8) × (dims +0/+8), shared by the warp's M tiles.
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            uint32_t a[kMT][4];
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
                a[mt][0] = ptx::pack2<kType>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                a[mt][1] = ptx::pack2<kType>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                a[mt][2] = ptx::pack2<kType>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                a[mt][3] = ptx::pack2<kType>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
            const int r = kk * 16 + lane % 8 + 8 * ((lane / 8) % 2), col = 8 * (lane / 16);
#pragma unroll
            for (int dt = 0; dt < kD / 16; ++dt) {
                uint32_t vb[4];
                ptx::ldmatrix<4, true>(vb, s_v + r * kStride + dt * 16 + col);
                const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
#pragma unroll
                for (int mt = 0; mt < kMT; ++mt) {
                    ptx::mma_m16n8k16<kType>(o[mt][2 * dt], a[mt], b0, o[mt][2 * dt]);
                    ptx::mma_m16n8k16<kType>(o[mt][2 * dt + 1], a[mt], b1, o[mt][2 * dt + 1]);
                }
            }
        }
    };
    // Tiles [first_masked, n_tiles) need the mask: the condition only grows with the tile index.
    auto needs_mask = [&](int tile) {
        const int n0 = tile * kBlockN;
        return n0 + kBlockN > sk || (p.causal && n0 + kBlockN - 1 > m0 + diag && n0 + kBlockN > prefix);
    };
    int first_masked = n_tiles;
    while (first_masked > 0 && needs_mask(first_masked - 1)) --first_masked;
    int tile = n_tiles - 1;
    for (; tile >= first_masked; --tile) step(tile, std::true_type{});
    for (; tile >= 0; --tile) step(tile, std::false_type{});

    // Normalise into this warp's own rows of s_q (only this warp ever read them: Q's fragments of
    // a warp are its own rows), then store whole 16-byte chunks of each row. The C fragments hold
    // 4-byte pairs; storing them directly fills each 32-byte sector in quarters from four
    // instructions (kiln model: 51% store efficiency). A row that saw no key (sum 0) gets output
    // 0 and log-sum-exp −inf.
    __syncwarp();  // every lane's last ldmatrix of Q is done before the rows are overwritten
    T* s_o = s_q + warp_row0 * kStride;
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) {
        float sum = row_sum[rr];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const int r = row_of(rr) - warp_row0;
#pragma unroll
        for (int dt = 0; dt < kD / 8; ++dt) {
            *reinterpret_cast<uint32_t*>(s_o + r * kStride + dt * 8 + 2 * t) =
                ptx::pack2<kType>(o[rr / 2][dt][2 * (rr % 2)] * inv, o[rr / 2][dt][2 * (rr % 2) + 1] * inv);
        }
        const int i = m0 + row_of(rr);
        if (i < sq && t == 0) lse[i] = sum > 0.0f ? (row_max[rr] * to_log2 + log2f(sum)) * kLn2 : -INFINITY;
    }
    __syncwarp();
    for (int c = lane; c < kWarpM * kChunks; c += 32) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        const int i = m0 + warp_row0 + r;
        if (i < sq) store_pack<T, 8>(out + int64_t(i) * q_row + col, load_pack<T, 8>(s_o + r * kStride + col));
    }
}

template <typename T, typename Cfg, Bias kBias>
kiln_status launch(const Params& p, int64_t batch, int64_t max_seqlen_q, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((max_seqlen_q + Cfg::kBlockM - 1) / Cfg::kBlockM),
                    static_cast<unsigned>(batch), static_cast<unsigned>(p.heads));
    const size_t smem = sizeof(T) * Cfg::kSmemElems;
    KILN_LAUNCH(grid, Cfg::kThreads, smem, stream, attention_fwd_kernel<T, Cfg, kBias>)(p);
    return launch_status();
}

template <typename T, int kD>
kiln_status dispatch_bias(const Params& p, int64_t batch, int64_t max_seqlen_q, cudaStream_t stream) {
    // The raw-score path needs a positive scale (its max of raw scores is the max of scaled ones);
    // a scale ≤ 0 without a bias runs the linear path with slope 0.
    if (p.slopes == nullptr && p.scale_log2 > 0.0f) return launch<T, DefaultFwd<kD, Bias::kNone>, Bias::kNone>(p, batch, max_seqlen_q, stream);
    if (p.positions == nullptr || p.slopes == nullptr) return launch<T, DefaultFwd<kD, Bias::kLinear>, Bias::kLinear>(p, batch, max_seqlen_q, stream);
    return launch<T, DefaultFwd<kD, Bias::kGeometric>, Bias::kGeometric>(p, batch, max_seqlen_q, stream);
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

// Tile variants of the forward for the GPU sweep (issue 23; scripts/gpu-run.sh step
// sweep-attention): bf16, no bias or linear ALiBi, at D = 64 and 128; geometric ALiBi and f16 run
// the default configuration. Each runs the same kernel with another FwdTiles; none spills
// (tests/suite/kernels_build.rs holds every attention kernel to no local memory). Variant 0 is
// the default.
using RunFwd = kiln_status (*)(const Params&, int64_t, int64_t, cudaStream_t);
struct FwdVariant {
    const char* name;
    RunFwd none, linear;
};
template <int kD, int kWarps, int kMTiles, int kBlockN, int kStages = 2>
constexpr FwdVariant fwd_variant(const char* name) {
    using Cfg = FwdTiles<kD, kWarps, kMTiles, kBlockN, kStages>;
    return FwdVariant{name, &launch<__nv_bfloat16, Cfg, Bias::kNone>, &launch<__nv_bfloat16, Cfg, Bias::kLinear>};
}
// Named warps × query rows per warp × keys per tile (× K/V stages when not two).
constexpr FwdVariant kFwdVariants128[] = {
    fwd_variant<128, 4, 2, 32>("4w x 32q x 32k"),         fwd_variant<128, 8, 1, 64>("8w x 16q x 64k"),
    fwd_variant<128, 4, 1, 64>("4w x 16q x 64k"),         fwd_variant<128, 8, 2, 32>("8w x 32q x 32k"),
    fwd_variant<128, 4, 2, 16>("4w x 32q x 16k"),         fwd_variant<128, 4, 2, 32, 3>("4w x 32q x 32k x 3s"),
    fwd_variant<128, 8, 1, 64, 3>("8w x 16q x 64k x 3s"), fwd_variant<128, 4, 1, 64, 3>("4w x 16q x 64k x 3s"),
};
constexpr FwdVariant kFwdVariants64[] = {
    fwd_variant<64, 4, 2, 64>("4w x 32q x 64k"),        fwd_variant<64, 8, 1, 64>("8w x 16q x 64k"),
    fwd_variant<64, 4, 1, 64>("4w x 16q x 64k"),        fwd_variant<64, 4, 1, 128>("4w x 16q x 128k"),
    fwd_variant<64, 8, 2, 64>("8w x 32q x 64k"),        fwd_variant<64, 8, 1, 128>("8w x 16q x 128k"),
    fwd_variant<64, 4, 2, 64, 3>("4w x 32q x 64k x 3s"), fwd_variant<64, 8, 1, 64, 3>("8w x 16q x 64k x 3s"),
};
static_assert(std::is_same_v<DefaultFwd<128, Bias::kNone>, FwdTiles<128, 4, 2, 32>> &&
                  std::is_same_v<DefaultFwd<64, Bias::kNone>, FwdTiles<64, 4, 2, 64>>,
              "variant 0 is the default configuration");

// The variants of a head dimension (none for the others).
int32_t fwd_variant_count(int64_t head_dim) { return variant_count(kFwdVariants128, kFwdVariants64, head_dim); }
const FwdVariant* fwd_variant_of(int64_t head_dim, int32_t variant) {
    return variant_of(kFwdVariants128, kFwdVariants64, head_dim, variant);
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
        // Indices come from unpad; one out of range is skipped; equal ones store atomically (no race).
        if (t >= 0 && t < tokens) atomicExch(&lse[h * tokens + t], packed[i]);
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

namespace kiln {
namespace {

// Checks the forward's arguments and fills its parameters; KILN_SUCCESS with *run false when
// there is nothing to compute.
kiln_status prepare_fwd(kiln_dtype dtype, const void* q, const void* k, const void* v, const int32_t* cu_seqlens_q,
                        const int32_t* cu_seqlens_k, const float* slopes, int32_t slopes_per_batch,
                        const float* positions, int64_t batch, int64_t total_q, int64_t total_k, int64_t heads,
                        int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q, int32_t causal,
                        const int32_t* prefix_len, float softmax_scale,
                        void* out, float* lse, Params& p, bool* run) {
    *run = false;
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
        !is_aligned(cu_seqlens_k, 4) || !is_aligned(prefix_len, 4))
        return KILN_ERROR_MISALIGNED;
    if (batch == 0 || max_seqlen_q == 0 || total_q == 0) return KILN_SUCCESS;

    p = Params{};
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
    p.prefix_len = prefix_len;
    p.scale_log2 = softmax_scale * kLog2e;
    *run = true;
    return KILN_SUCCESS;
}

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
                                     int64_t head_dim, int64_t max_seqlen_q, int32_t causal,
                                     const int32_t* prefix_len, float softmax_scale,
                                     void* out, float* lse, void* stream) {
    using namespace kiln;
    Params p{};
    bool run = false;
    const kiln_status st = prepare_fwd(dtype, q, k, v, cu_seqlens_q, cu_seqlens_k, slopes, slopes_per_batch, positions,
                                       batch, total_q, total_k, heads, heads_k, head_dim, max_seqlen_q, causal,
                                       prefix_len, softmax_scale, out, lse, p, &run);
    if (st != KILN_SUCCESS || !run) return st;
    const auto s = static_cast<cudaStream_t>(stream);
    if (dtype == KILN_DTYPE_F16) return dispatch_dim<__half>(head_dim, p, batch, max_seqlen_q, s);
    return dispatch_dim<__nv_bfloat16>(head_dim, p, batch, max_seqlen_q, s);
}

int32_t kiln_attention_fwd_variants(int64_t head_dim) { return kiln::fwd_variant_count(head_dim); }

const char* kiln_attention_fwd_variant_name(int64_t head_dim, int32_t variant) {
    const kiln::FwdVariant* v = kiln::fwd_variant_of(head_dim, variant);
    return v == nullptr ? nullptr : v->name;
}

kiln_status kiln_attention_alibi_fwd_variant(int32_t variant, kiln_dtype dtype, const void* q, const void* k,
                                             const void* v, const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k,
                                             const float* slopes, int32_t slopes_per_batch, const float* positions,
                                             int64_t batch, int64_t total_q, int64_t total_k, int64_t heads,
                                             int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q, int32_t causal,
                                             const int32_t* prefix_len, float softmax_scale, void* out, float* lse,
                                             void* stream) {
    using namespace kiln;
    const FwdVariant* var = fwd_variant_of(head_dim, variant);
    if (var == nullptr) return KILN_ERROR_INVALID_VALUE;
    if (dtype != KILN_DTYPE_BF16) return KILN_ERROR_INVALID_DTYPE;
    if (positions != nullptr) return KILN_ERROR_INVALID_VALUE;  // geometric ALiBi: the default only
    Params p{};
    bool run = false;
    const kiln_status st = prepare_fwd(dtype, q, k, v, cu_seqlens_q, cu_seqlens_k, slopes, slopes_per_batch, positions,
                                       batch, total_q, total_k, heads, heads_k, head_dim, max_seqlen_q, causal,
                                       prefix_len, softmax_scale, out, lse, p, &run);
    if (st != KILN_SUCCESS || !run) return st;
    // As dispatch_bias: the raw-score path needs a positive scale.
    const RunFwd f = slopes == nullptr && p.scale_log2 > 0.0f ? var->none : var->linear;
    return f(p, batch, max_seqlen_q, static_cast<cudaStream_t>(stream));
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

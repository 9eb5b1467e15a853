// Activation family: y = f(x) elementwise, dx = dy·f'(x), and the deterministic gradients of
// the trainable parameters (expanded-gating α, PReLU slope, JumpReLU θ). Formulas:
// shared/REFERENCE.md §1. Layout of this file: the ops (one small functor each), the kernels
// (generic over storage type T and op), the launch plans, validation, and the C ABI.
//
// Every op is a struct with fwd(x) -> y and bwd(x, dy) -> dx; ops with a trainable parameter
// add dparam(x, dy) -> dy·∂f/∂p. Math is f32 whatever the storage type.
//
// NaN and ±inf (the convention src/families/activation/cpu.rs follows element for element): fwd(NaN) is
// NaN for every op (the piecewise ops test x < 0, x <= θ, ... and return x or a product with
// it); ±inf go through the formulas in IEEE arithmetic (0·∞ = NaN: gelu(−∞) = silu(−∞) = NaN,
// as PyTorch). bwd is dy·f'(x) as a product except where an op selects: Relu and JumpRelu
// (dy or exactly 0), Smelu (0 | dy·slope | dy), and the dparam of Prelu (x < 0) and JumpRelu
// (the window), where an unselected NaN or ∞ dy adds nothing; a NaN x takes the branch whose
// comparison is false (Relu/JumpRelu 0, Prelu slope·dy, Smelu dy, GSmelu g₊·dy).

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/math.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln::activation {

// ------------------------------------------------------------------------------------------
// Launch constants
// ------------------------------------------------------------------------------------------

// 8 warps per block: at ≤ 32 registers, 8 blocks fill the 2048 threads of an sm_80/sm_90 SM,
// and small blocks leave little idle at the tail of a grid.
constexpr int kThreads = 256;

// Packs a thread of a forward kernel loads before it uses the first: 2 × 512 bytes per warp in
// flight, 48 KiB per SM at the 75% occupancy their 33-40 registers give (kiln model's latency
// column holds ≥ 32 KiB; one pack per step at full occupancy was exactly 32, and below full
// occupancy short of it). Asking ptxas for 32 registers instead spilled 8-48 bytes.
constexpr int kFwdInFlight = 2;

// Grid cap of the elementwise kernels (they grid-stride): about 31 full waves of 256-thread
// blocks on an H100 (132 SMs × 8); more blocks would only add scheduling work.
constexpr int64_t kMaxGridBlocks = int64_t(1) << 15;

// The total block count aimed at by the per-channel partition (KILN_REDUCE_MAX_BLOCKS of the
// design notes): 1024 blocks of 256 threads is about one full wave on an H100 at ≤ 32 registers.
constexpr int64_t kReduceMaxBlocks = 1024;

// Partial sums of a scalar parameter gradient: one per block of the fused backward kernel, the
// fixed partition that makes dα/dslope/dθ bitwise reproducible on any device. The fused
// kernels use 30–48 registers, so an SM holds 5–8 of their blocks (660–1056 on an H100 or
// H200): 1024 blocks took two waves where 792 fit, the second a third full. 8192 smaller
// blocks quantize to ≤ 6% at any of those residencies (ceil(8192/r)/(8192/r)), for 32 KiB of
// partials written and read once. Sizing the grid from the occupancy at run time instead would
// change the partition with the device (and so dα's bits); a fixed partition run by fewer
// resident blocks keeps the same waves.
constexpr int64_t kScalarPartials = 8192;

// Per-channel partials cost 8 bytes (written, then read) per (row chunk, channel) against at
// least 6 bytes per element of data (bf16 x, dy, dx): 64 rows per chunk bound that at 2%.
constexpr int64_t kMinRowsPerChunk = 64;

// Column groups (of kW channels) per block of the per-channel kernels, and channels per block
// of their finalize: a warp row then reads ≥ 64 contiguous bytes (whole 32-byte sectors), and
// the block's other threads become row lanes whose sums combine in shared memory, so even wide
// rows get many rows per block (few partials) without giving up blocks.
constexpr int kTileColumns = 32;

// The reduction partitions are planned in groups of kGroup<T> elements (flat) or channels (per
// channel): one 16-byte pack of the storage type (4 for f32, 8 for f16/bf16), whatever pack
// width a launch then uses. The vector path's step is then exactly one pack, so each warp
// load/store moves 512 contiguous bytes (whole sectors), and the scalar path (a misaligned
// pointer) walks the same groups element by element, so both sum every term in the same order
// and give bitwise the same parameter gradient. The partition depends on (n, channels, dtype).
template <typename T>
constexpr int kGroup = kVecWidth<T>;

// Largest channel count whose grids fit CUDA's grid.x limit: a block then holds ≥ 16 column
// groups (see channel_plan), so grid.x ≤ channels / 16.
constexpr int64_t kMaxChannels = int64_t(INT_MAX) * 16;

// ------------------------------------------------------------------------------------------
// Ops
// ------------------------------------------------------------------------------------------

// Which parameter gradient an op has, which decides the kernels that run it.
enum class Grad {
    kNone,        // no trainable parameter (host scalars such as β are fixed)
    kScalar,      // one host scalar α; dα is a sum over all n elements
    kPerChannel,  // a device f32 array p[channels] read as p[i % channels]; dp per channel
};

struct Relu {
    static constexpr Grad kGrad = Grad::kNone;
    template <typename M>
    __device__ float fwd(float x) const { return x < 0.0f ? 0.0f : x; }  // NaN propagates
    template <typename M>
    __device__ float bwd(float x, float dy) const { return x > 0.0f ? dy : 0.0f; }
};

struct Gelu {
    static constexpr Grad kGrad = Grad::kNone;
    template <typename M>
    __device__ float fwd(float x) const { return x * normal_cdf<M>(x); }
    template <typename M>
    __device__ float bwd(float x, float dy) const { return dy * (normal_cdf<M>(x) + x * normal_pdf<M>(x)); }
};

// ½x(1 + tanh u) computed as x·σ(2u), which is the same function: σ(2u) and
// 1 − tanh²u = 4σ(2u)σ(−2u) then keep their precision in both tails.
struct GeluTanh {
    static constexpr Grad kGrad = Grad::kNone;
    static constexpr float kCoeff = 0.044715f;
    // σ(2u)σ(−2u) is exactly 0 once |x| > 12, so capping x² at 1e4 in du/dx changes nothing
    // except that 0·inf can no longer turn the derivative into NaN for |x| > 1.8e19.
    static constexpr float kSquareCap = 1.0e4f;
    __device__ float two_u(float x) const { return 2.0f * kSqrt2OverPi * x * fmaf(kCoeff * x, x, 1.0f); }
    template <typename M>
    __device__ float fwd(float x) const { return x * sigmoid_pair<M>(two_u(x)).pos; }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const SigmoidPair s = sigmoid_pair<M>(two_u(x));
        const float du_dx = kSqrt2OverPi * fmaf(3.0f * kCoeff, fminf(x * x, kSquareCap), 1.0f);
        return dy * (s.pos + 2.0f * (x * (s.pos * s.neg)) * du_dx);
    }
};

struct QuickGelu {
    static constexpr Grad kGrad = Grad::kNone;
    static constexpr float kScale = 1.702f;
    template <typename M>
    __device__ float fwd(float x) const { return x * sigmoid_pair<M>(kScale * x).pos; }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const SigmoidPair s = sigmoid_pair<M>(kScale * x);
        return dy * (s.pos + x * (kScale * (s.pos * s.neg)));
    }
};

struct Silu {
    static constexpr Grad kGrad = Grad::kNone;
    template <typename M>
    __device__ float fwd(float x) const { return x * sigmoid_pair<M>(x).pos; }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const SigmoidPair s = sigmoid_pair<M>(x);
        return dy * (s.pos + x * (s.pos * s.neg));  // σ(1 + x(1 − σ))
    }
};

struct Sigmoid {
    static constexpr Grad kGrad = Grad::kNone;
    template <typename M>
    __device__ float fwd(float x) const { return sigmoid_pair<M>(x).pos; }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const SigmoidPair s = sigmoid_pair<M>(x);
        return dy * (s.pos * s.neg);
    }
};

struct SquaredRelu {
    static constexpr Grad kGrad = Grad::kNone;
    template <typename M>
    __device__ float fwd(float x) const {
        const float r = x < 0.0f ? 0.0f : x;
        return r * r;
    }
    template <typename M>
    __device__ float bwd(float x, float dy) const { return dy * (2.0f * (x < 0.0f ? 0.0f : x)); }
};

// x/(π(1 + x²)), the derivative of x·atan(x)/π minus the gate; 0 (not NaN) once x² overflows.
__device__ __forceinline__ float atan_gate_slope(float x) { return x * kInvPi / fmaf(x, x, 1.0f); }

struct Atlu {
    static constexpr Grad kGrad = Grad::kNone;
    template <typename M>
    __device__ float fwd(float x) const { return x * atan_gate(x).gate; }
    template <typename M>
    __device__ float bwd(float x, float dy) const { return dy * (atan_gate(x).gate + atan_gate_slope(x)); }
};

// Expanded gates g_α = (1 + 2α)·g − α with one trainable scalar α; `widen` is 1 + 2α.
// An op whose dx and ∂/∂α share work defines bwd_dparam (both from one evaluation), which the dα
// kernels call instead of bwd and dparam: ptxas did not merge XAtlu's two atan gates (each holds
// slow-path division calls), so its dα loop issued 888 instructions per 8 bf16 elements against
// 533 without dα (sm_90a SASS).
struct XAtlu {
    static constexpr Grad kGrad = Grad::kScalar;
    float alpha;
    float widen;
    template <typename M>
    __device__ float fwd(float x) const { return x * fmaf(widen, atan_gate(x).gate, -alpha); }
    template <typename M>
    __device__ float bwd(float x, float dy) const { return bwd_of(x, dy, atan_gate(x)); }
    template <typename M>
    __device__ float bwd_dparam(float x, float dy, float& dparam) const {
        const AtanGate a = atan_gate(x);
        dparam = dy * (2.0f * x * a.atan_pi);
        return bwd_of(x, dy, a);
    }

private:
    __device__ float bwd_of(float x, float dy, const AtanGate& a) const {
        return dy * (fmaf(widen, a.gate, -alpha) + widen * atan_gate_slope(x));
    }
};

struct XGelu {
    static constexpr Grad kGrad = Grad::kScalar;
    float alpha;
    float widen;
    template <typename M>
    __device__ float fwd(float x) const { return x * fmaf(widen, normal_cdf<M>(x), -alpha); }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const float g = fmaf(widen, normal_cdf<M>(x), -alpha);
        return dy * (g + x * (widen * normal_pdf<M>(x)));
    }
    // ∂/∂α = x(2Φ − 1) = x·erf(x/√2), with Φ from the same evaluation (normal_cdf_erf).
    template <typename M>
    __device__ float bwd_dparam(float x, float dy, float& dparam) const {
        const NormalCdfErf c = normal_cdf_erf<M>(x);
        dparam = dy * (x * c.erf);
        return dy * (fmaf(widen, c.cdf, -alpha) + x * (widen * normal_pdf<M>(x)));
    }
};

struct XSilu {
    static constexpr Grad kGrad = Grad::kScalar;
    float alpha;
    float widen;
    template <typename M>
    __device__ float fwd(float x) const { return x * fmaf(widen, sigmoid_pair<M>(x).pos, -alpha); }
    template <typename M>
    __device__ float bwd(float x, float dy) const { return bwd_of(x, dy, sigmoid_pair<M>(x)); }
    template <typename M>
    __device__ float bwd_dparam(float x, float dy, float& dparam) const {
        const SigmoidPair s = sigmoid_pair<M>(x);
        dparam = dy * (x * (s.pos - s.neg));  // x(2σ − 1)
        return bwd_of(x, dy, s);
    }

private:
    __device__ float bwd_of(float x, float dy, const SigmoidPair& s) const {
        return dy * (fmaf(widen, s.pos, -alpha) + x * (widen * (s.pos * s.neg)));
    }
};

// SmeLU: 0 | (x+β)²/(4β) | x. The quadratic divides by β instead of multiplying by a
// precomputed 1/(4β), which would overflow for a subnormal β; u/(4β) ≤ ½ in its region.
struct Smelu {
    static constexpr Grad kGrad = Grad::kNone;
    float beta;
    template <typename M>
    __device__ float fwd(float x) const {
        const float u = x + beta;
        return x <= -beta ? 0.0f : (x < beta ? u * (0.25f * u / beta) : x);
    }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const float u = x + beta;
        return x <= -beta ? 0.0f : (x < beta ? dy * (0.5f * u / beta) : dy);
    }
};

// Generalized SmeLU. The middle piece Ax² + Bx + C is evaluated as A·u² + g₋·u + t with
// u = x + α: the same polynomial (value t and slope g₋ at −α), without the cancellation of
// Ax² + Bx + C near x = −α. `right` is the offset of the linear right piece,
// t + (α+β)g₋/2 + (α−β)g₊/2. A and right are computed on the host in f64.
struct GSmelu {
    static constexpr Grad kGrad = Grad::kNone;
    float alpha, beta, g_neg, g_pos, t;
    float quad;  // A = (g₊ − g₋) / (2(α + β))
    float right;
    template <typename M>
    __device__ float fwd(float x) const {
        const float u = x + alpha;
        return x <= -alpha ? fmaf(g_neg, u, t) : (x <= beta ? fmaf(fmaf(quad, u, g_neg), u, t) : fmaf(g_pos, x, right));
    }
    template <typename M>
    __device__ float bwd(float x, float dy) const {
        const float u = x + alpha;
        return dy * (x <= -alpha ? g_neg : (x <= beta ? fmaf(2.0f * quad, u, g_neg) : g_pos));
    }
};

// PReLU with the slope of one channel; at() binds the slope read from the device array.
struct Prelu {
    static constexpr Grad kGrad = Grad::kPerChannel;
    float slope;
    __device__ Prelu at(float p) const { return Prelu{p}; }
    template <typename M>
    __device__ float fwd(float x) const { return x < 0.0f ? slope * x : x; }
    template <typename M>
    __device__ float bwd(float x, float dy) const { return x > 0.0f ? dy : slope * dy; }
    template <typename M>
    __device__ float dparam(float x, float dy) const { return x < 0.0f ? dy * x : 0.0f; }
};

// JumpReLU with the threshold θ of one channel and the straight-through bandwidth ε.
struct JumpRelu {
    static constexpr Grad kGrad = Grad::kPerChannel;
    float theta;
    float half_eps;  // ε/2 (exact for a normal ε)
    float inv_eps;   // 1/ε from the host: a division per channel in at() (a slow-path call) spilled
    __device__ JumpRelu at(float p) const { return JumpRelu{p, half_eps, inv_eps}; }
    template <typename M>
    __device__ float fwd(float x) const { return x <= theta ? 0.0f : x; }  // H(0) = 0; NaN propagates
    template <typename M>
    __device__ float bwd(float x, float dy) const { return x > theta ? dy : 0.0f; }
    // K((x−θ)/ε) = 1 on the OPEN window −ε/2 < x − θ < ε/2 (the JumpReLU paper's pseudo-code,
    // SAELens), decided exactly: an f32 (x−θ)/ε can round across a window edge, and each such
    // element moves dθ by |dy·θ/ε|. With x − θ = diff + err exactly, rounding is monotone, so
    // diff alone decides unless diff lands on the edge itself; there the sign of err does (an
    // exact edge, err = 0, is outside). NaN or infinite x is outside (0, whatever dy is).
    template <typename M>
    __device__ float dparam(float x, float dy) const {
        const ExactDiff d = exact_diff(x, theta);
        const bool above_low = d.diff > -half_eps || (d.diff == -half_eps && d.err > 0.0f);
        const bool below_high = d.diff < half_eps || (d.diff == half_eps && d.err < 0.0f);
        return (above_low && below_high) ? dy * (-theta * inv_eps) : 0.0f;
    }
};

// A shared parameter (channels == 1) is read once per thread; other ops are used as given.
template <typename Op>
__device__ __forceinline__ Op bind_shared(const Op& op, const float* param) {
    if constexpr (Op::kGrad == Grad::kPerChannel) {
        return op.at(param[0]);
    } else {
        return op;
    }
}

// dx of one element, and dy·∂f/∂p into `dparam`: through the op's bwd_dparam where it has one
// (the work the two share done once), else its bwd and dparam.
template <typename Op, typename M, typename = void>
struct HasBwdDparam : std::false_type {};
template <typename Op, typename M>
struct HasBwdDparam<Op, M,
                    std::void_t<decltype(std::declval<const Op&>().template bwd_dparam<M>(
                        0.0f, 0.0f, std::declval<float&>()))>> : std::true_type {};

template <typename M, typename Op>
__device__ __forceinline__ float bwd_with_dparam(const Op& f, float x, float dy, float& dparam) {
    if constexpr (HasBwdDparam<Op, M>::value) {
        return f.template bwd_dparam<M>(x, dy, dparam);
    } else {
        dparam = f.template dparam<M>(x, dy);
        return f.template bwd<M>(x, dy);
    }
}

// The streaming loops are not unrolled (#pragma unroll 1). Outputs may alias inputs, so an unrolled
// copy could not issue its loads before the previous copy's stores anyway; unrolling would only
// add 64-bit address registers (and a 64-bit division for the trip count).

// ------------------------------------------------------------------------------------------
// Kernels. kW is the pack width: kVecWidth<T> (16-byte accesses, every pointer 16-byte aligned)
// or 1 (any alignment). Outputs may alias inputs: each pack is read before it is written.
// ------------------------------------------------------------------------------------------

// y = f(x) over n elements (x, y: [n]); a shared per-channel parameter is param[0].
// Reads sizeof(T), writes sizeof(T) per element; FLOPs per element: Op's (1 for relu, ~40 for gelu).
template <typename T, typename Op, int kW>
__global__ void __launch_bounds__(kThreads) flat_fwd_kernel(const T* x, T* y, int64_t n, Op op, const float* param) {
    using M = MathFor<T>;  // the math policy of the storage type (common/math.cuh)
    const Op f = bind_shared(op, param);
    const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    const int64_t packs = n / kW;
    // kFwdInFlight packs a stride apart per step: their loads are all issued before the first
    // is used, so a warp keeps kFwdInFlight · 512 bytes in flight (kiln model's latency column).
#pragma unroll 1
    for (int64_t i = first; i < packs; i += kFwdInFlight * stride) {
        Pack<T, kW> px[kFwdInFlight];
#pragma unroll
        for (int u = 0; u < kFwdInFlight; ++u) {
            if (i + u * stride < packs) px[u] = load_pack<T, kW>(x + (i + u * stride) * kW);
        }
#pragma unroll
        for (int u = 0; u < kFwdInFlight; ++u) {
            if (i + u * stride >= packs) continue;
            Pack<T, kW> py;
#pragma unroll
            for (int j = 0; j < kW; ++j) py.v[j] = from_float<T>(f.template fwd<M>(to_float(px[u].v[j])));
            store_pack<T, kW>(y + (i + u * stride) * kW, py);
        }
    }
    if constexpr (kW > 1) {
        // The < kW elements past the last whole pack go to the first threads of the grid.
        const int64_t t = packs * kW + first;
        if (t < n) y[t] = from_float<T>(f.template fwd<M>(to_float(x[t])));
    }
}

// dx = dy·f'(x) over n elements (x, dy, dx: [n]); with kReduce also the partial sum of
// dy·∂f/∂p over this block's elements into partials[blockIdx.x] (partials: [gridDim.x]).
// Reads 2·sizeof(T), writes sizeof(T) per element; FLOPs: Op's bwd (+ dparam with kReduce).
// With kReduce the grid is the fixed partition of the sum (scalar_partials), not a free choice,
// and a thread's step is a group of kGroup<T> consecutive elements (one pack on the vector
// path, kGroup<T> scalars on the scalar path) instead of one pack: group g goes to thread
// g mod (grid threads), which sums its elements in index order, and the n mod kGroup<T>
// elements past the last group go to the first threads of the grid; so the partition and every
// partial's order of additions depend on (n, dtype) alone.
template <typename T, typename Op, int kW, bool kReduce>
__global__ void __launch_bounds__(kThreads)
    flat_bwd_kernel(const T* x, const T* dy, T* dx, int64_t n, Op op, const float* param, float* partials) {
    using M = MathFor<T>;  // the math policy of the storage type (common/math.cuh)
    static_assert(kW == 1 || kW == kGroup<T>, "a group is one pack or kGroup<T> scalars");
    constexpr int kUnit = kReduce ? kGroup<T> : kW;  // elements per step of a thread
    constexpr int kPacks = kUnit / kW;
    const Op f = bind_shared(op, param);
    const int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x;
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    const int64_t units = n / kUnit;
    float acc = 0.0f;
#pragma unroll 1
    for (int64_t i = first; i < units; i += stride) {
        Pack<T, kW> px[kPacks];
        Pack<T, kW> pdy[kPacks];
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            px[q] = load_pack<T, kW>(x + i * kUnit + q * kW);
            pdy[q] = load_pack<T, kW>(dy + i * kUnit + q * kW);
        }
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            Pack<T, kW> pdx;
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                const float xf = to_float(px[q].v[j]);
                const float dyf = to_float(pdy[q].v[j]);
                if constexpr (kReduce) {
                    float dp;
                    pdx.v[j] = from_float<T>(bwd_with_dparam<M>(f, xf, dyf, dp));
                    acc += dp;
                } else {
                    pdx.v[j] = from_float<T>(f.template bwd<M>(xf, dyf));
                }
            }
            store_pack<T, kW>(dx + i * kUnit + q * kW, pdx);
        }
    }
    if constexpr (kUnit > 1) {
        const int64_t t = units * kUnit + first;
        if (t < n) {
            const float xf = to_float(x[t]);
            const float dyf = to_float(dy[t]);
            if constexpr (kReduce) {
                float dp;
                dx[t] = from_float<T>(bwd_with_dparam<M>(f, xf, dyf, dp));
                acc += dp;
            } else {
                dx[t] = from_float<T>(f.template bwd<M>(xf, dyf));
            }
        }
    }
    if constexpr (kReduce) {
        acc = block_sum<kThreads>(acc);
        if (threadIdx.x == 0) partials[blockIdx.x] = acc;
    }
}

// x viewed as [rows, channels]; block (bx, by) covers column groups [bx·blockDim.x, +blockDim.x)
// and rows [by·rows_per_chunk, +rows_per_chunk); each thread owns one group of kW channels and
// visits the chunk's rows threadIdx.y, threadIdx.y + blockDim.y, ...
struct ChannelShape {
    int64_t rows;
    int64_t channels;
    int64_t rows_per_chunk;
};

// One past the last row of this block's chunk.
__device__ __forceinline__ int64_t chunk_end(const ChannelShape& shape) {
    const int64_t end = (int64_t(blockIdx.y) + 1) * shape.rows_per_chunk;
    return end < shape.rows ? end : shape.rows;
}

// The block's per-channel parameters, staged through shared memory: the block's blockDim.x·kW
// channels are read with consecutive threads on consecutive floats (whole sectors; a thread
// reading its own kW floats directly would use 1/kW of each sector it touches), into records
// of lane_record_floats<kW>() floats so that each thread's reads of its own are conflict-free.
// Every thread of the block must call it; `stage` holds blockDim.x·lane_record_floats<kW>()
// floats. Returns through `f` the op bound to each of the thread's channels, when it has any.
template <typename Op, int kW>
__device__ __forceinline__ void bind_channel_params(const Op& op, const float* param, int64_t channels, float* stage,
                                                    Op (&f)[kW]) {
    constexpr int kRecord = lane_record_floats<kW>();
    const int64_t base = int64_t(blockIdx.x) * blockDim.x * kW;
    const int64_t left = channels - base;  // > 0: the grid covers the channels exactly
    const int count = left < int64_t(blockDim.x) * kW ? static_cast<int>(left) : int(blockDim.x) * kW;
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < count; i += blockDim.x * blockDim.y)
        stage[(i / kW) * kRecord + i % kW] = param[base + i];
    __syncthreads();
    if (base + int64_t(threadIdx.x) * kW >= channels) return;
#pragma unroll
    for (int j = 0; j < kW; ++j) f[j] = op.at(stage[threadIdx.x * kRecord + j]);
}

// y[r, c] = f_c(x[r, c]) with the op bound to param[c] (x, y: [rows, channels]; param: [channels]).
// Reads sizeof(T), writes sizeof(T) per element (params once per block, staged); FLOPs: 1-2 per element.
template <typename T, typename Op, int kW>
__global__ void __launch_bounds__(kThreads)
    channel_fwd_kernel(const T* x, T* y, const float* param, ChannelShape shape, Op op) {
    using M = MathFor<T>;  // the math policy of the storage type (common/math.cuh)
    __shared__ float stage[kThreads * lane_record_floats<kW>()];
    const int64_t col = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kW;
    Op f[kW];
    bind_channel_params(op, param, shape.channels, stage, f);
    if (col >= shape.channels) return;  // no block-wide step follows
    const int64_t row_end = chunk_end(shape);
    // kFwdInFlight rows per step, all loaded before the first is used (as flat_fwd_kernel).
    const int64_t lanes = blockDim.y;
#pragma unroll 1
    for (int64_t r = int64_t(blockIdx.y) * shape.rows_per_chunk + threadIdx.y; r < row_end;
         r += kFwdInFlight * lanes) {
        Pack<T, kW> px[kFwdInFlight];
#pragma unroll
        for (int u = 0; u < kFwdInFlight; ++u) {
            if (r + u * lanes < row_end) px[u] = load_pack<T, kW>(x + (r + u * lanes) * shape.channels + col);
        }
#pragma unroll
        for (int u = 0; u < kFwdInFlight; ++u) {
            if (r + u * lanes >= row_end) continue;
            Pack<T, kW> py;
#pragma unroll
            for (int j = 0; j < kW; ++j) py.v[j] = from_float<T>(f[j].template fwd<M>(to_float(px[u].v[j])));
            store_pack<T, kW>(y + (r + u * lanes) * shape.channels + col, py);
        }
    }
}

// dx[r, c] = dy·f_c'(x[r, c]); with kReduce also partials[by, c] = Σ over the chunk's rows of
// dy·∂f/∂p_c (partials: [gridDim.y, channels]), combined across row lanes by a fixed tree.
// Reads 2·sizeof(T), writes sizeof(T) per element; 4 bytes per (chunk, channel) of partials.
template <typename T, typename Op, int kW, bool kReduce>
__global__ void __launch_bounds__(kThreads)
    channel_bwd_kernel(const T* x, const T* dy, T* dx, const float* param, float* partials, ChannelShape shape, Op op) {
    using M = MathFor<T>;  // the math policy of the storage type (common/math.cuh)
    const int64_t col = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kW;
    const bool active = col < shape.channels;  // idle threads still join the lane tree
    float acc[kW] = {};
    __shared__ float stage[kThreads * lane_record_floats<kW>()];
    Op f[kW];
    bind_channel_params(op, param, shape.channels, stage, f);
    if (active) {
        const int64_t row_end = chunk_end(shape);
#pragma unroll 1
        for (int64_t r = int64_t(blockIdx.y) * shape.rows_per_chunk + threadIdx.y; r < row_end; r += blockDim.y) {
            const int64_t off = r * shape.channels + col;
            const Pack<T, kW> px = load_pack<T, kW>(x + off);
            const Pack<T, kW> pdy = load_pack<T, kW>(dy + off);
            Pack<T, kW> pdx;
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                const float xf = to_float(px.v[j]);
                const float dyf = to_float(pdy.v[j]);
                if constexpr (kReduce) {
                    float dp;
                    pdx.v[j] = from_float<T>(bwd_with_dparam<M>(f[j], xf, dyf, dp));
                    acc[j] += dp;
                } else {
                    pdx.v[j] = from_float<T>(f[j].template bwd<M>(xf, dyf));
                }
            }
            store_pack<T, kW>(dx + off, pdx);
        }
    }
    if constexpr (kReduce) {
        __shared__ float lanes[kThreads * lane_record_floats<kW>()];
        sum_over_lanes<kW>(acc, lanes);
        // The totals of the block's blockDim.x·kW channels are lane 0's records, in channel
        // order (lane_total): the whole block writes them, consecutive threads to
        // consecutive channels, so each warp store covers whole sectors (lane 0 storing its kW
        // totals itself would leave kW-float gaps between lanes).
        __syncthreads();
        const int64_t base = int64_t(blockIdx.x) * blockDim.x * kW;
        float* out = partials + int64_t(blockIdx.y) * shape.channels + base;
        const int64_t left = shape.channels - base;  // > 0: the block has an active column
        const int count = left < int64_t(blockDim.x) * kW ? static_cast<int>(left) : int(blockDim.x) * kW;
        for (int t = threadIdx.y * blockDim.x + threadIdx.x; t < count; t += blockDim.x * blockDim.y)
            out[t] = lane_total<kW>(lanes, t);
    }
}

// out[c] = Σ_k partials[k, c] over k = 0..chunks in a fixed order (partials: [chunks, channels]).
// A block covers blockDim.x channels; its blockDim.y lanes take chunks ty, ty + blockDim.y, ...
// and a fixed tree combines the lanes. Reads 4 bytes per partial, writes 4 per channel.
__global__ void __launch_bounds__(kThreads)
    finalize_channels_kernel(const float* partials, int64_t chunks, int64_t channels, float* out) {
    __shared__ float lanes[kThreads];
    const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    float acc[1] = {0.0f};
    if (c < channels) {
        for (int64_t k = threadIdx.y; k < chunks; k += blockDim.y) acc[0] += partials[k * channels + c];
    }
    sum_over_lanes<1>(acc, lanes);
    if (threadIdx.y == 0 && c < channels) out[c] = acc[0];
}

// ------------------------------------------------------------------------------------------
// Launch plans. The reduction partition (which terms each partial sums, in which order, and
// how partials combine) depends only on (n, channels) and the dtype's group (kGroup<T>), not
// on the pack width, so a parameter gradient is bitwise the same across runs and across
// pointer alignments (vector or scalar path), as norm's dγ/dβ.
// ------------------------------------------------------------------------------------------

namespace {

// a ≥ 0, b > 0; no overflow for any a.
int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// Blocks of the elementwise kernels: `per_thread` packs per thread, capped (they grid-stride);
// at least one block, which also handles a tail shorter than a pack.
int64_t flat_blocks(int64_t n, int width, int per_thread = 1) {
    return std::clamp(ceil_div(n / width, int64_t(kThreads) * per_thread), int64_t(1), kMaxGridBlocks);
}

// Blocks = partial sums of a scalar gradient (n ≥ 1): the whole grid covers kThreads groups of
// `group` (kGroup<T>) elements per step of its grid-stride loop (flat_bwd_kernel), whatever
// the pack width.
int64_t scalar_partials(int64_t n, int group) {
    return std::min(kScalarPartials, ceil_div(n, int64_t(kThreads) * group));
}

// The 2-D partition of x as [rows, channels] (see ChannelShape). The reduction's part is planned
// for column groups of `group` (kGroup<T>) channels whatever the launch's width (kGroup<T>
// exactly when channels % kGroup<T> == 0, 1 otherwise): those groups split into
// near-equal tiles of ≤ kTileColumns groups, the rest of a block's threads become ty row lanes
// (so a small channel count (3, 64) still fills the block), and row chunks bring the grid to
// about kReduceMaxBlocks blocks with at least kMinRowsPerChunk rows (and one row per lane) each.
// ty and the chunks fix each channel's order of additions (lane l of chunk k sums rows
// k·rows_per_chunk + l, + ty, …; sum_over_lanes then combines the ty lanes by a fixed tree);
// they depend on (n, channels, group) only. The launch's own column groups of `width` channels then
// fill each block's kThreads / ty columns (tx), in as many tiles as that takes.
struct ChannelPlan {
    int64_t rows;
    int64_t tiles;  // grid.x
    int tx;         // block.x: column groups per block
    int ty;         // block.y: row lanes
    int64_t rows_per_chunk;
    int64_t chunks;  // grid.y: partial sums per channel
};

ChannelPlan channel_plan(int64_t n, int64_t channels, int group, int width) {
    ChannelPlan p;
    p.rows = n / channels;
    // The reduction's partition, from (n, channels, group) alone.
    const int64_t plan_groups = ceil_div(channels, group);
    const int64_t plan_tiles = ceil_div(plan_groups, kTileColumns);
    p.ty = static_cast<int>(kThreads / ceil_div(plan_groups, plan_tiles));  // ≥ kThreads / kTileColumns
    const int64_t wanted = std::max(int64_t(1), kReduceMaxBlocks / plan_tiles);
    const int64_t min_rows = std::max(int64_t(p.ty), kMinRowsPerChunk);
    const int64_t chunks = std::min(wanted, ceil_div(p.rows, min_rows));
    p.rows_per_chunk = ceil_div(p.rows, chunks);
    p.chunks = ceil_div(p.rows, p.rows_per_chunk);  // no empty chunk
    // This launch's columns: groups of `width` channels, at most kThreads / ty per block.
    const int64_t groups = channels / width;
    p.tiles = ceil_div(groups, kThreads / p.ty);
    p.tx = static_cast<int>(ceil_div(groups, p.tiles));
    return p;
}

bool valid_sizes(int64_t n, int64_t channels) {
    return n >= 0 && channels >= 1 && channels <= kMaxChannels && n % channels == 0;
}

// The group of a storage dtype: kGroup<T> of the T it stores.
int group_of(kiln_dtype dtype) { return kVecBytes / static_cast<int>(storage_bytes(dtype)); }

// Bytes of partials for a dtype's group: the partition depends on (n, channels, group) only,
// not on the pointers.
int64_t partial_bytes(int64_t n, int64_t channels, int group) {
    if (n == 0) return 0;
    if (channels == 1) return scalar_partials(n, group) * int64_t(sizeof(float));
    return channel_plan(n, channels, group, 1).chunks * channels * int64_t(sizeof(float));
}

// Bytes of partials enough for every dtype (the workspace query has no dtype argument). The
// flat count only grows as the group shrinks, but the per-channel chunk count does not move
// monotonically with it (more column tiles aim at fewer chunks), so take the larger of the two
// groups there are (4: f32; 8: f16, bf16).
int64_t workspace_bytes(int64_t n, int64_t channels) {
    static_assert(kGroup<__half> == kGroup<__nv_bfloat16>, "two groups in all");
    return std::max(partial_bytes(n, channels, kGroup<float>), partial_bytes(n, channels, kGroup<__half>));
}

// ------------------------------------------------------------------------------------------
// Validation and dispatch
// ------------------------------------------------------------------------------------------

enum class Pass { kForward, kBackward };

// One launcher call as given through the C ABI.
struct Problem {
    kiln_dtype dtype;
    const void* x;   // [n]
    const void* dy;  // [n], backward only
    void* out;       // y or dx, [n]
    int64_t n;
    const float* param;  // [channels], Grad::kPerChannel ops only
    int64_t channels;    // 1 unless the op has a per-channel parameter
    float* dparam;       // [channels]; NULL skips the parameter gradient
    void* workspace;     // partial sums, used only with dparam
    int64_t workspace_bytes;
    bool scalars_ok;  // the op's host scalars are in their domain
    void* stream;
};

Problem forward(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream) {
    Problem p{};
    p.dtype = dtype;
    p.x = x;
    p.out = y;
    p.n = n;
    p.channels = 1;
    p.scalars_ok = true;
    p.stream = stream;
    return p;
}

Problem backward(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream) {
    Problem p = forward(dtype, x, dx, n, stream);
    p.dy = dy;
    return p;
}

// Checks in the order of the ABI: dtype, size, empty, pointers, channels, scalars, alignment,
// workspace. Sets *empty (and returns success) when n == 0: nothing may be launched or read.
kiln_status validate(const Problem& p, Pass pass, bool needs_param, bool* empty) {
    *empty = false;
    if (!valid_dtype(p.dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (p.n < 0) return KILN_ERROR_INVALID_SIZE;
    if (p.n == 0) {
        *empty = true;
        return KILN_SUCCESS;
    }
    if (p.x == nullptr || p.out == nullptr || (pass == Pass::kBackward && p.dy == nullptr) ||
        (needs_param && p.param == nullptr) || (p.dparam != nullptr && p.workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (!valid_sizes(p.n, p.channels)) return KILN_ERROR_INVALID_SIZE;
    if (!p.scalars_ok) return KILN_ERROR_INVALID_VALUE;
    const int64_t elem = storage_bytes(p.dtype);
    const int64_t f32 = sizeof(float);
    if (!is_aligned(p.x, elem) || !is_aligned(p.dy, elem) || !is_aligned(p.out, elem) || !is_aligned(p.param, f32) ||
        !is_aligned(p.dparam, f32) || (p.dparam != nullptr && !is_aligned(p.workspace, f32))) {
        return KILN_ERROR_MISALIGNED;
    }
    if (p.dparam != nullptr && p.workspace_bytes < partial_bytes(p.n, p.channels, group_of(p.dtype))) {
        return KILN_ERROR_WORKSPACE_TOO_SMALL;
    }
    return KILN_SUCCESS;
}

// channels == 1: the flat kernels; a scalar gradient reduces over the kernel's fixed grid.
template <typename T, int kW, typename Op>
kiln_status launch_flat(const Problem& p, const Op& op, Pass pass) {
    const auto stream = static_cast<cudaStream_t>(p.stream);
    const T* x = static_cast<const T*>(p.x);
    T* out = static_cast<T*>(p.out);
    if (pass == Pass::kForward) {
        KILN_LAUNCH(flat_blocks(p.n, kW, kFwdInFlight), kThreads, 0, stream, flat_fwd_kernel<T, Op, kW>)(x, out, p.n, op,
                                                                                                  p.param);
        return launch_status();
    }
    const T* dy = static_cast<const T*>(p.dy);
    if constexpr (Op::kGrad != Grad::kNone) {
        if (p.dparam != nullptr) {
            const int64_t blocks = scalar_partials(p.n, kGroup<T>);
            // A single partial is the total: write it in place and skip the second pass.
            float* partials = blocks == 1 ? p.dparam : static_cast<float*>(p.workspace);
            KILN_LAUNCH(blocks, kThreads, 0, stream, flat_bwd_kernel<T, Op, kW, true>)(x, dy, out, p.n, op, p.param,
                                                                                       partials);
            const kiln_status status = launch_status();
            if (status != KILN_SUCCESS || blocks == 1) return status;
            KILN_LAUNCH(1, kThreads, 0, stream, sum_partials_kernel<kThreads>)(partials, blocks, p.dparam);
            return launch_status();
        }
    }
    KILN_LAUNCH(flat_blocks(p.n, kW), kThreads, 0, stream, flat_bwd_kernel<T, Op, kW, false>)(x, dy, out, p.n, op,
                                                                                              p.param, nullptr);
    return launch_status();
}

// channels > 1: the 2-D kernels over [rows, channels]; the gradient reduces over row chunks.
template <typename T, int kW, typename Op>
kiln_status launch_channels(const Problem& p, const Op& op, Pass pass) {
    const auto stream = static_cast<cudaStream_t>(p.stream);
    const T* x = static_cast<const T*>(p.x);
    T* out = static_cast<T*>(p.out);
    const ChannelPlan plan = channel_plan(p.n, p.channels, kGroup<T>, kW);
    const ChannelShape shape{plan.rows, p.channels, plan.rows_per_chunk};
    const dim3 grid(static_cast<unsigned>(plan.tiles), static_cast<unsigned>(plan.chunks));
    const dim3 block(static_cast<unsigned>(plan.tx), static_cast<unsigned>(plan.ty));
    if (pass == Pass::kForward) {
        KILN_LAUNCH(grid, block, 0, stream, channel_fwd_kernel<T, Op, kW>)(x, out, p.param, shape, op);
        return launch_status();
    }
    const T* dy = static_cast<const T*>(p.dy);
    if (p.dparam == nullptr) {
        KILN_LAUNCH(grid, block, 0, stream, channel_bwd_kernel<T, Op, kW, false>)(x, dy, out, p.param, nullptr, shape,
                                                                                  op);
        return launch_status();
    }
    float* partials = plan.chunks == 1 ? p.dparam : static_cast<float*>(p.workspace);
    KILN_LAUNCH(grid, block, 0, stream, channel_bwd_kernel<T, Op, kW, true>)(x, dy, out, p.param, partials, shape, op);
    const kiln_status status = launch_status();
    if (status != KILN_SUCCESS || plan.chunks == 1) return status;
    const int64_t columns = std::min(p.channels, int64_t(kTileColumns));
    const dim3 finalize_grid(static_cast<unsigned>(ceil_div(p.channels, columns)));
    const dim3 finalize_block(static_cast<unsigned>(columns), static_cast<unsigned>(kThreads / columns));
    KILN_LAUNCH(finalize_grid, finalize_block, 0, stream, finalize_channels_kernel)(partials, plan.chunks, p.channels,
                                                                                    p.dparam);
    return launch_status();
}

// The vector path needs every tensor pointer 16-byte aligned (and, per channel, whole packs
// per row); otherwise the scalar path, correct for any element-aligned pointer.
template <typename T, typename Op>
kiln_status launch(const Problem& p, const Op& op, Pass pass) {
    constexpr int kV = kVecWidth<T>;
    const bool vec = is_aligned(p.x, kVecBytes) && is_aligned(p.dy, kVecBytes) && is_aligned(p.out, kVecBytes);
    if constexpr (Op::kGrad == Grad::kPerChannel) {
        if (p.channels > 1) {
            return vec && p.channels % kV == 0 ? launch_channels<T, kV>(p, op, pass)
                                               : launch_channels<T, 1>(p, op, pass);
        }
    }
    return vec ? launch_flat<T, kV>(p, op, pass) : launch_flat<T, 1>(p, op, pass);
}

// n == 0: no element is read, but a requested parameter gradient is an empty sum: zero it, so
// a caller's buffer never keeps stale values.
kiln_status zero_empty_gradient(const Problem& p) {
    if (p.dparam == nullptr) return KILN_SUCCESS;
    if (!valid_sizes(0, p.channels)) return KILN_ERROR_INVALID_SIZE;
    if (!is_aligned(p.dparam, sizeof(float))) return KILN_ERROR_MISALIGNED;
    const cudaError_t err =
        cudaMemsetAsync(p.dparam, 0, size_t(p.channels) * sizeof(float), static_cast<cudaStream_t>(p.stream));
    if (err == cudaSuccess) return KILN_SUCCESS;
    t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

template <typename Op>
kiln_status run(const Problem& p, const Op& op, Pass pass) {
    bool empty = false;
    const kiln_status status = validate(p, pass, Op::kGrad == Grad::kPerChannel, &empty);
    if (status != KILN_SUCCESS) return status;
    if (empty) return zero_empty_gradient(p);
    return with_storage_type(p.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        return launch<T>(p, op, pass);
    });
}

// Ops with host scalars, built in f64 where a derived constant needs it.
template <typename Op>
Op expanded(float alpha) {
    return Op{alpha, static_cast<float>(1.0 + 2.0 * double(alpha))};
}

GSmelu gsmelu(float alpha, float beta, float g_neg, float g_pos, float t) {
    const double a = alpha, b = beta, gn = g_neg, gp = g_pos;
    const double width = a + b;
    const double quad = (gp - gn) / (2.0 * width);
    const double right = t + width * gn / 2.0 + (a - b) * gp / 2.0;
    return GSmelu{alpha, beta, g_neg, g_pos, t, static_cast<float>(quad), static_cast<float>(right)};
}

// Scalar domains, the same as the Rust API's (src/families/activation/spec.rs): finite, no subnormal
// knee or divisor, and every constant derived from them in f32 finite, so that no 1/ε, 1 + 2α
// or A = (g₊ − g₋)/(2(α + β)) overflows into an ∞ (and then a NaN) inside the kernels.
bool zero_or_normal(float v) { return v == 0.0f || std::isnormal(v); }

bool finite_as_float(double v) { return std::isfinite(static_cast<float>(v)); }

bool gsmelu_ok(float alpha, float beta, float g_neg, float g_pos, float t) {
    if (!zero_or_normal(alpha) || !zero_or_normal(beta) || !std::isfinite(g_neg) || !std::isfinite(g_pos) ||
        !std::isfinite(t)) {
        return false;
    }
    const double width = double(alpha) + double(beta);
    if (!(width >= double(FLT_MIN)) || !finite_as_float(width)) return false;
    const GSmelu op = gsmelu(alpha, beta, g_neg, g_pos, t);
    return std::isfinite(op.quad) && std::isfinite(op.right);
}

// ε of JumpReLU and β of SmeLU: positive normal divisors (1/ε of a subnormal ε overflows).
bool positive_normal(float v) { return v > 0.0f && std::isnormal(v); }

// An expansion α: finite with 1 + 2α finite in f32. A subnormal α is harmless (nothing divides
// by it) and a trained α may drift there, so it is accepted.
bool expansion_ok(float alpha) { return std::isfinite(alpha) && finite_as_float(1.0 + 2.0 * double(alpha)); }

// A Problem for a backward with a parameter gradient.
Problem backward_grad(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float* dparam,
                      void* workspace, int64_t workspace_bytes, void* stream) {
    Problem p = backward(dtype, x, dy, dx, n, stream);
    p.dparam = dparam;
    p.workspace = workspace;
    p.workspace_bytes = workspace_bytes;
    return p;
}

}  // namespace
}  // namespace kiln::activation

// ------------------------------------------------------------------------------------------
// C ABI (kernels/include/kiln.h)
// ------------------------------------------------------------------------------------------

using kiln::activation::Pass;
using kiln::activation::Problem;
namespace act = kiln::activation;

extern "C" {

int64_t kiln_activation_workspace_bytes(int64_t n, int64_t channels) {
    return act::valid_sizes(n, channels) ? act::workspace_bytes(n, channels) : -1;
}

// Parameter-free activations.
#define KILN_PLAIN_ACTIVATION(name, Op)                                                                            \
    kiln_status kiln_activation_##name##_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream) {  \
        return act::run(act::forward(dtype, x, y, n, stream), act::Op{}, Pass::kForward);                          \
    }                                                                                                              \
    kiln_status kiln_activation_##name##_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, \
                                             void* stream) {                                                       \
        return act::run(act::backward(dtype, x, dy, dx, n, stream), act::Op{}, Pass::kBackward);                   \
    }

KILN_PLAIN_ACTIVATION(relu, Relu)
KILN_PLAIN_ACTIVATION(gelu, Gelu)
KILN_PLAIN_ACTIVATION(gelu_tanh, GeluTanh)
KILN_PLAIN_ACTIVATION(quick_gelu, QuickGelu)
KILN_PLAIN_ACTIVATION(silu, Silu)
KILN_PLAIN_ACTIVATION(sigmoid, Sigmoid)
KILN_PLAIN_ACTIVATION(squared_relu, SquaredRelu)
KILN_PLAIN_ACTIVATION(atlu, Atlu)
#undef KILN_PLAIN_ACTIVATION

// Expanded gating with a trainable scalar α.
#define KILN_EXPANDED_ACTIVATION(name, Op)                                                                         \
    kiln_status kiln_activation_##name##_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float alpha,     \
                                             void* stream) {                                                       \
        Problem p = act::forward(dtype, x, y, n, stream);                                                          \
        p.scalars_ok = act::expansion_ok(alpha);                                                                   \
        return act::run(p, act::expanded<act::Op>(alpha), Pass::kForward);                                         \
    }                                                                                                              \
    kiln_status kiln_activation_##name##_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, \
                                             float alpha, float* dalpha, void* workspace, int64_t workspace_bytes, \
                                             void* stream) {                                                       \
        Problem p = act::backward_grad(dtype, x, dy, dx, n, dalpha, workspace, workspace_bytes, stream);           \
        p.scalars_ok = act::expansion_ok(alpha);                                                                   \
        return act::run(p, act::expanded<act::Op>(alpha), Pass::kBackward);                                        \
    }

KILN_EXPANDED_ACTIVATION(xatlu, XAtlu)
KILN_EXPANDED_ACTIVATION(xgelu, XGelu)
KILN_EXPANDED_ACTIVATION(xsilu, XSilu)
#undef KILN_EXPANDED_ACTIVATION

kiln_status kiln_activation_smelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float beta, void* stream) {
    Problem p = act::forward(dtype, x, y, n, stream);
    p.scalars_ok = act::positive_normal(beta);
    return act::run(p, act::Smelu{beta}, Pass::kForward);
}

kiln_status kiln_activation_smelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float beta,
                                      void* stream) {
    Problem p = act::backward(dtype, x, dy, dx, n, stream);
    p.scalars_ok = act::positive_normal(beta);
    return act::run(p, act::Smelu{beta}, Pass::kBackward);
}

kiln_status kiln_activation_gsmelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float alpha, float beta,
                                       float g_neg, float g_pos, float t, void* stream) {
    Problem p = act::forward(dtype, x, y, n, stream);
    p.scalars_ok = act::gsmelu_ok(alpha, beta, g_neg, g_pos, t);
    return act::run(p, act::gsmelu(alpha, beta, g_neg, g_pos, t), Pass::kForward);
}

kiln_status kiln_activation_gsmelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                       float alpha, float beta, float g_neg, float g_pos, float t, void* stream) {
    Problem p = act::backward(dtype, x, dy, dx, n, stream);
    p.scalars_ok = act::gsmelu_ok(alpha, beta, g_neg, g_pos, t);
    return act::run(p, act::gsmelu(alpha, beta, g_neg, g_pos, t), Pass::kBackward);
}

kiln_status kiln_activation_prelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, const float* slope,
                                      int64_t channels, void* stream) {
    Problem p = act::forward(dtype, x, y, n, stream);
    p.param = slope;
    p.channels = channels;
    return act::run(p, act::Prelu{}, Pass::kForward);
}

kiln_status kiln_activation_prelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                      const float* slope, int64_t channels, float* dslope, void* workspace,
                                      int64_t workspace_bytes, void* stream) {
    Problem p = act::backward_grad(dtype, x, dy, dx, n, dslope, workspace, workspace_bytes, stream);
    p.param = slope;
    p.channels = channels;
    return act::run(p, act::Prelu{}, Pass::kBackward);
}

kiln_status kiln_activation_jumprelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, const float* theta,
                                         int64_t channels, void* stream) {
    Problem p = act::forward(dtype, x, y, n, stream);
    p.param = theta;
    p.channels = channels;
    return act::run(p, act::JumpRelu{}, Pass::kForward);
}

kiln_status kiln_activation_jumprelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                         const float* theta, int64_t channels, float eps, float* dtheta,
                                         void* workspace, int64_t workspace_bytes, void* stream) {
    Problem p = act::backward_grad(dtype, x, dy, dx, n, dtheta, workspace, workspace_bytes, stream);
    p.param = theta;
    p.channels = channels;
    p.scalars_ok = act::positive_normal(eps);
    return act::run(p, act::JumpRelu{0.0f, 0.5f * eps, static_cast<float>(1.0 / double(eps))}, Pass::kBackward);
}

}  // extern "C"

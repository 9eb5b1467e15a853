// Special functions for activations, in f32, in two precisions chosen by the storage type a
// kernel reads and writes (MathFor<T>):
// - PreciseMath (f32 storage): CUDA's accurate library calls, no fast-math intrinsics; results
//   are checked at f32 rtol 1.3e-6 against an f64 reference.
// - StorageMath16 (f16/bf16 storage): built on the SFU's approximate ex2 and rcp, with a
//   relative error that stays far below the storage's rounding: ≤ 4e-6 (1/100 of an f16 ulp)
//   wherever an f16 result is nonzero, ≤ 2.1e-5 (1/180 of a bf16 ulp) over bf16's whole range
//   (tests/suite/math.rs holds each helper to its bound, on the emulator and on a GPU). The precise forms cost
//   36–67 instructions per element where a 16-bit kernel has ~32 to stay memory-bound on an
//   H100/H200 (perf/nvidia-h200-2026-11-30.md: GELU at 38% of copy in bf16, instruction-bound).
// Each helper stays finite (or exactly 0/1) for large |x| and propagates NaN in both precisions.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "common/ptx.cuh"

namespace kiln {

struct PreciseMath {};
struct StorageMath16 {};

template <typename T>
struct MathForStorage {
    using type = StorageMath16;
};
template <>
struct MathForStorage<float> {
    using type = PreciseMath;
};
// The math policy of a kernel whose storage type is T.
template <typename T>
using MathFor = typename MathForStorage<T>::type;

template <typename M>
constexpr bool kFastMath = std::is_same<M, StorageMath16>::value;

constexpr float kInvPi = 0.318309886183790671538f;
constexpr float kInvSqrt2 = 0.707106781186547524401f;
constexpr float kInvSqrt2Pi = 0.398942280401432677940f;  // 1/√(2π)
constexpr float kSqrt2OverPi = 0.797884560802865355880f;  // √(2/π)
constexpr float kLog2e = 1.442695040888963407360f;        // log2(e)

// exp(x) for x ≤ 0 (or −inf) in the 16-bit policy: ex2 of the rounded x·log2(e). The rounding
// of the product is the error that grows with |x| (|x|·2^-24 relative), as in CUDA's __expf
// (2 + 1.173|x| ulp); results below the normal floats are 0.
__device__ __forceinline__ float exp_nonpositive_fast(float x) { return ptx::ex2_approx_ftz(x * kLog2e); }

// ½·erfc(|x|/√2) = Φ(−|x|) for the 16-bit policy, from the Chebyshev fit of erfc in Numerical
// Recipes (Press et al., 2nd ed., §6.2, `erfcc`): for z ≥ 0, t = 1/(1 + z/2) and
// erfc(z) ≈ t·exp(−z² − 1.26551223 + t·P(t)), relative error below 1.2e-7 for every z (so the
// lower tail keeps its relative precision, unlike ½(1 + erf)). In f32 the roundings of z, of the
// exponent's argument (≈ −z²) and of the exponential add about 1.2e-7·x² + 3e-7 relative: 4e-6 at
// |x| = 5.6 (below which an f16 GELU is nonzero), 2e-5 at |x| = 13, past which Φ(−|x|)
// leaves the normal floats and underflows towards 0 as it should.
// Φ(±inf) is 0/1 (t = 0, exp(−inf) = 0); NaN stays NaN.
__device__ __forceinline__ float half_erfc_fast(float x) {
    const float z = fabsf(x) * kInvSqrt2;
    const float t = ptx::rcp_approx_ftz(fmaf(0.5f, z, 1.0f));  // of a value ≥ 1: rcp(inf) = 0
    float p = 0.17087277f;
    p = fmaf(p, t, -0.82215223f);
    p = fmaf(p, t, 1.48851587f);
    p = fmaf(p, t, -1.13520398f);
    p = fmaf(p, t, 0.27886807f);
    p = fmaf(p, t, -0.18628806f);
    p = fmaf(p, t, 0.09678418f);
    p = fmaf(p, t, 0.37409196f);
    p = fmaf(p, t, 1.00002368f);
    p = fmaf(p, t, -1.26551223f);
    return 0.5f * t * exp_nonpositive_fast(fmaf(-z, z, p));
}

// Φ(x), the standard normal CDF. Precise: normcdff is erfc-based (≤ 5 ulp), so the lower tail
// keeps its relative precision where 0.5·(1 + erf(x/√2)) would cancel. 16-bit: half_erfc_fast,
// Φ(x) = 1 − Φ(−x) for x ≥ 0 (≥ ½: no cancellation).
template <typename M = PreciseMath>
__device__ __forceinline__ float normal_cdf(float x) {
    if constexpr (kFastMath<M>) {
        const float lower = half_erfc_fast(x);
        return x < 0.0f ? lower : 1.0f - lower;
    } else {
        return normcdff(x);
    }
}

// Φ(x) and erf(x/√2) = 2Φ(x) − 1, the x-GELUs' gate and its ∂/∂α, from one evaluation.
struct NormalCdfErf {
    float cdf;  // Φ(x)
    float erf;  // erf(x/√2) ∈ [−1, 1]
};

// Precise: normcdff and erff (both CUDA's accurate calls). 16-bit: half_erfc_fast once, Φ as
// normal_cdf, erf(|x|/√2) = 1 − 2Φ(−|x|) (one FMA): absolute error at most 2·Φ(−|x|)·4e-6
// ≤ 4e-6 (relative below |x| ≈ 0.5, where erf → 0). The ∂/∂α terms dy·x·erf(x/√2) are summed
// over a tensor: each then carries at most 4e-6·|dy·x| absolute, far inside the reduction's
// tolerance (4 16-bit roundings of the terms' root sum of squares), for ~5 instructions an
// element instead of erff's ~40 or a series near 0 that would cost the loop its issue budget.
template <typename M = PreciseMath>
__device__ __forceinline__ NormalCdfErf normal_cdf_erf(float x) {
    if constexpr (kFastMath<M>) {
        const float lower = half_erfc_fast(x);  // Φ(−|x|)
        const float magnitude = fmaf(-2.0f, lower, 1.0f);
        return x < 0.0f ? NormalCdfErf{lower, -magnitude} : NormalCdfErf{1.0f - lower, magnitude};
    } else {
        return {normcdff(x), erff(x * kInvSqrt2)};
    }
}

// φ(x) = exp(−x²/2)/√(2π); the exponential underflows to 0 for large |x|, never NaN. Both
// forms take the exponential of a rounded −x²/2, which makes the precise one 3e-8·x² + 3e-7
// relative; the 16-bit exponential's x·log2(e) rounding and ex2's 2 ulp, like __expf's documented
// 2 + 1.173·x²/2 ulp, make at most 1.3e-5.
template <typename M = PreciseMath>
__device__ __forceinline__ float normal_pdf(float x) {
    if constexpr (kFastMath<M>) {
        return kInvSqrt2Pi * exp_nonpositive_fast(-0.5f * x * x);
    } else {
        return kInvSqrt2Pi * expf(-0.5f * x * x);
    }
}

// σ(x) and σ(−x) = 1 − σ(x).
struct SigmoidPair {
    float pos;  // σ(x)
    float neg;  // σ(−x)
};

// Both from one exp(−|x|) ∈ [0, 1]: nothing overflows for any x, and 1 − σ is never formed by a
// subtraction, so both tails keep full relative precision (σ(x)σ(−x) is accurate everywhere).
// 16-bit: the SFU exponential (as __expf, at most 2 + 1.173|x| ulp: 2.6e-6 where σ(−|x|) is a
// nonzero f16, 1.3e-5 at worst) and the approximate reciprocal of 1 + e ∈ [1, 2] (1 ulp).
template <typename M = PreciseMath>
__device__ __forceinline__ SigmoidPair sigmoid_pair(float x) {
    float e, big;
    if constexpr (kFastMath<M>) {
        e = exp_nonpositive_fast(-fabsf(x));
        big = ptx::rcp_approx_ftz(1.0f + e);
    } else {
        e = expf(-fabsf(x));
        big = 1.0f / (1.0f + e);  // σ(|x|) ∈ [½, 1]
    }
    const float small = e * big;  // σ(−|x|) = e / (1 + e)
    return x >= 0.0f ? SigmoidPair{big, small} : SigmoidPair{small, big};
}

// atan(x)/π and the arctan gate atan(x)/π + ½.
struct AtanGate {
    float gate;     // atan(x)/π + ½ ∈ [0, 1]
    float atan_pi;  // atan(x)/π ∈ [−½, ½]
};

// For x < −1 the gate is atan(−1/x)/π (equal there) instead of ½ plus a value near −½, which
// would cancel and lose relative precision like |x|; elsewhere neither output cancels.
__device__ __forceinline__ AtanGate atan_gate(float x) {
    const bool far_left = x < -1.0f;
    const float a = atanf(far_left ? -1.0f / x : x) * kInvPi;
    return far_left ? AtanGate{a, a - 0.5f} : AtanGate{a + 0.5f, a};
}

// x − y = diff + err exactly (Knuth's TwoDiff; needs round-to-nearest and no overflow). Lets a
// comparison of x − y against a float be decided exactly without f64.
struct ExactDiff {
    float diff;  // x − y rounded to nearest
    float err;   // the rounding error, exactly
};

__device__ __forceinline__ ExactDiff exact_diff(float x, float y) {
    const float diff = x - y;
    const float y_part = x - diff;  // the part of y that made it into diff
    const float x_part = diff + y_part;
    const float err = (x - x_part) - (y - y_part);
    return ExactDiff{diff, err};
}

}  // namespace kiln

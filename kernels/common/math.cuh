// Special functions for activations, in f32 with the accurate CUDA library calls (no
// fast-math intrinsics): results are checked at f32 rtol 1.3e-6 against an f64 reference.
// Each helper stays finite (or exactly 0/1) for large |x| and propagates NaN.
#pragma once

#include <cuda_runtime.h>

namespace kiln {

constexpr float kInvPi = 0.318309886183790671538f;
constexpr float kInvSqrt2 = 0.707106781186547524401f;
constexpr float kInvSqrt2Pi = 0.398942280401432677940f;  // 1/√(2π)
constexpr float kSqrt2OverPi = 0.797884560802865355880f;  // √(2/π)

// Φ(x), the standard normal CDF. normcdff is erfc-based (≤ 5 ulp), so the lower tail keeps its
// relative precision where 0.5·(1 + erf(x/√2)) would cancel.
__device__ __forceinline__ float normal_cdf(float x) { return normcdff(x); }

// φ(x) = exp(−x²/2)/√(2π); the exponential underflows to 0 for large |x|, never NaN.
__device__ __forceinline__ float normal_pdf(float x) { return kInvSqrt2Pi * expf(-0.5f * x * x); }

// σ(x) and σ(−x) = 1 − σ(x).
struct SigmoidPair {
    float pos;  // σ(x)
    float neg;  // σ(−x)
};

// Both from one exp(−|x|) ∈ [0, 1]: nothing overflows for any x, and 1 − σ is never formed by a
// subtraction, so both tails keep full relative precision (σ(x)σ(−x) is accurate everywhere).
__device__ __forceinline__ SigmoidPair sigmoid_pair(float x) {
    const float e = expf(-fabsf(x));
    const float big = 1.0f / (1.0f + e);  // σ(|x|) ∈ [½, 1]
    const float small = e * big;          // σ(−|x|) = e / (1 + e)
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

// The gates h(a) of the GLU family, y = h(a)·b (shared/REFERENCE.md §2): for each gate its
// value, its slope h'(a) and, for the expanded gates, ∂h/∂α, in f32 with the accurate forms of
// common/math.cuh. Apart from kernels/glu.cu so that a fused GLU MLP epilogue can share the math.
#pragma once

#include <cuda_runtime.h>

#include "common/math.cuh"

namespace kiln::glu {

// h, h' and ∂h/∂α at one a (∂h/∂α = 0 for a gate without α). Kernels inline bwd(), so fields a
// kernel never reads (∂h/∂α without a parameter gradient) cost nothing.
struct GateGrad {
    float value;   // h(a)
    float slope;   // h'(a)
    float dalpha;  // ∂h/∂α
};

// Every gate has fwd(a) -> h(a) and bwd(a) -> GateGrad; kHasAlpha says whether ∂h/∂α exists.
//
// NaN and ±inf (the convention src/families/glu/cpu.rs follows): h(NaN) is NaN for every gate (ReLU's
// a < 0 ? 0 : a keeps it), and y = h(a)·b, da = (dy·b)·h'(a), db = dy·h(a), dα += (dy·b)·∂h/∂α
// are plain products, so NaN in a, b or dy reaches each output it multiplies, and 0·∞ is NaN
// (e.g. GEGLU/SwiGLU at a = −∞, any h(a) = 0 against b = ±∞). The one select is ReLU's slope,
// h'(a) = a > 0 ? 1 : 0, which is 0 for a NaN a (da = dy·b·0, NaN only if dy·b is).

// GLU: h = σ(a), h' = σ(a)σ(−a).
struct SigmoidGate {
    static constexpr bool kHasAlpha = false;
    template <typename M>
    __device__ float fwd(float a) const { return sigmoid_pair<M>(a).pos; }
    template <typename M>
    __device__ GateGrad bwd(float a) const {
        const SigmoidPair s = sigmoid_pair<M>(a);
        return {s.pos, s.pos * s.neg, 0.0f};
    }
};

// Bilinear: h = a, h' = 1.
struct IdentityGate {
    static constexpr bool kHasAlpha = false;
    template <typename M>
    __device__ float fwd(float a) const { return a; }
    template <typename M>
    __device__ GateGrad bwd(float a) const { return {a, 1.0f, 0.0f}; }
};

// ReGLU: h = max(0, a) (NaN propagates), h' = 1[a > 0] (0 at a = 0).
struct ReluGate {
    static constexpr bool kHasAlpha = false;
    template <typename M>
    __device__ float fwd(float a) const { return a < 0.0f ? 0.0f : a; }
    template <typename M>
    __device__ GateGrad bwd(float a) const { return {a < 0.0f ? 0.0f : a, a > 0.0f ? 1.0f : 0.0f, 0.0f}; }
};

// GEGLU: h = a·Φ(a), h' = Φ(a) + a·φ(a).
struct GeluGate {
    static constexpr bool kHasAlpha = false;
    template <typename M>
    __device__ float fwd(float a) const { return a * normal_cdf<M>(a); }
    template <typename M>
    __device__ GateGrad bwd(float a) const {
        const float cdf = normal_cdf<M>(a);
        return {a * cdf, cdf + a * normal_pdf<M>(a), 0.0f};
    }
};

// GEGLU (tanh): h = ½a(1 + tanh u), u = √(2/π)(a + 0.044715a³), computed as a·σ(2u) like the
// gelu_tanh activation: σ(2u) and 1 − tanh²u = 4σ(2u)σ(−2u) keep their precision in both tails.
struct GeluTanhGate {
    static constexpr bool kHasAlpha = false;
    static constexpr float kCoeff = 0.044715f;
    // σ(2u)σ(−2u) is exactly 0 once |a| > 12, so capping a² at 1e4 in du/da changes nothing
    // except that 0·inf can no longer turn the slope into NaN for |a| > 1.8e19.
    static constexpr float kSquareCap = 1.0e4f;
    __device__ static float two_u(float a) { return 2.0f * kSqrt2OverPi * a * fmaf(kCoeff * a, a, 1.0f); }
    template <typename M>
    __device__ float fwd(float a) const { return a * sigmoid_pair<M>(two_u(a)).pos; }
    template <typename M>
    __device__ GateGrad bwd(float a) const {
        const SigmoidPair s = sigmoid_pair<M>(two_u(a));
        const float du_da = kSqrt2OverPi * fmaf(3.0f * kCoeff, fminf(a * a, kSquareCap), 1.0f);
        return {a * s.pos, s.pos + 2.0f * (a * (s.pos * s.neg)) * du_da, 0.0f};
    }
};

// SwiGLU: h = a·σ(a), h' = σ(a)(1 + a·σ(−a)).
struct SiluGate {
    static constexpr bool kHasAlpha = false;
    template <typename M>
    __device__ float fwd(float a) const { return a * sigmoid_pair<M>(a).pos; }
    template <typename M>
    __device__ GateGrad bwd(float a) const {
        const SigmoidPair s = sigmoid_pair<M>(a);
        return {a * s.pos, s.pos + a * (s.pos * s.neg), 0.0f};
    }
};

// A base gate g0 ∈ [0, 1] of the expanded gates, its slope g0' and 2·g0 − 1, the last formed
// without the cancellation of the subtraction near g0 = ½.
struct BaseGate {
    float value;     // g0(a)
    float slope;     // g0'(a)
    float centered;  // 2·g0(a) − 1 ∈ [−1, 1]
};

// g0 = atan(a)/π + ½, g0' = 1/(π(1 + a²)) (0, not NaN, once a² overflows), 2g0 − 1 = 2atan(a)/π.
struct AtanBase {
    template <typename M>
    __device__ static float value(float a) { return atan_gate(a).gate; }
    template <typename M>
    __device__ static BaseGate eval(float a) {
        const AtanGate t = atan_gate(a);
        return {t.gate, kInvPi / fmaf(a, a, 1.0f), 2.0f * t.atan_pi};
    }
};

// g0 = Φ(a), g0' = φ(a), 2Φ(a) − 1 = erf(a/√2).
struct NormalBase {
    template <typename M>
    __device__ static float value(float a) { return normal_cdf<M>(a); }
    template <typename M>
    __device__ static BaseGate eval(float a) {
        const NormalCdfErf c = normal_cdf_erf<M>(a);
        return {c.cdf, normal_pdf<M>(a), c.erf};
    }
};

// g0 = σ(a), g0' = σ(a)σ(−a), 2σ(a) − 1 = σ(a) − σ(−a).
struct SigmoidBase {
    template <typename M>
    __device__ static float value(float a) { return sigmoid_pair<M>(a).pos; }
    template <typename M>
    __device__ static BaseGate eval(float a) {
        const SigmoidPair s = sigmoid_pair<M>(a);
        return {s.pos, s.pos * s.neg, s.pos - s.neg};
    }
};

// Expanded gate g_α = (1 + 2α)·g0 − α (arXiv 2405.20768) with the trainable scalar α, used as
// h = g_α (order 1: h' = (1 + 2α)g0', ∂h/∂α = 2g0 − 1) or h = a·g_α (order 2: h' = g_α +
// a(1 + 2α)g0', ∂h/∂α = a(2g0 − 1)). α = 0 with widen = 1 gives g0 itself exactly (ATGLU).
// The order is a runtime flag (uniform across the grid) to halve the instantiations.
template <typename Base>
struct ExpandedGate {
    static constexpr bool kHasAlpha = true;
    float alpha;
    float widen;   // 1 + 2α, rounded once from f64 on the host
    bool times_a;  // order 2
    template <typename M>
    __device__ float fwd(float a) const {
        const float g = fmaf(widen, Base::template value<M>(a), -alpha);
        return times_a ? a * g : g;
    }
    template <typename M>
    __device__ GateGrad bwd(float a) const {
        const BaseGate b = Base::template eval<M>(a);
        const float g = fmaf(widen, b.value, -alpha);
        const float g_slope = widen * b.slope;
        if (times_a) return {a * g, g + a * g_slope, a * b.centered};
        return {g, g_slope, b.centered};
    }
};

}  // namespace kiln::glu

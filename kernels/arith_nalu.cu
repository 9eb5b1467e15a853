// The NALU's fused elementwise passes (issue 26; Trask et al. 2018 as stable-nalu implements it,
// one NAC weight shared by both paths; src/families/arith/cpu.rs is the f64 reference):
//
//   W = tanh(Ŵ)·σ(M̂);  a = x·Wᵀ;  m = exp(log(|x| + ε)·Wᵀ);  g = σ(x·Gᵀ + b);  y = g·a + (1 − g)·m
//
// The three products are library GEMMs (kiln's Rust API runs them in cuBLASLt with IEEE f32
// math); the passes around them are here, each one read of its inputs and one write:
//   nalu_weights     W (f32) from Ŵ, M̂, and G converted to f32 in the same pass (16-bit storage)
//   nalu_log         log(|x| + ε) (f32), and x converted to f32 in the same pass (16-bit storage)
//   nalu_combine     y from the GEMMs' a, log-space m and gate logit (bias added here)
//   nalu_combine_bwd the gradients through the combine: da = g·dy, dm_log = (1 − g)·m·dy,
//                    dgate = (a − m)·g·(1 − g)·dy (all f32, the backward GEMMs' operands)
//   nalu_dx          dx = (the GEMMs' dx terms) + dlog·sign(x)/(|x| + ε)
//   nalu_dweights    dŴ = dW·σ(M̂)·(1 − tanh²Ŵ), dM̂ = dW·tanh(Ŵ)·σ(M̂)(1 − σ(M̂)), dG and db converted
// The GEMMs' operands and results stay f32 whatever the storage (an exponent rounded to bf16
// would carry a relative error of |exponent|·2^-8 into m). x [B, I], Ŵ, M̂, G [O, I], b [O],
// y [B, O], row-major; math in f32.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "common/compute.cuh"
#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln::arith_nalu {

constexpr int kThreads = 256;
// Grid-stride passes: at most this many blocks (a few waves of any GPU).
constexpr int64_t kMaxBlocks = int64_t(1) << 15;
// Elements a pass may take: n·sizeof stays far inside int64.
constexpr int64_t kMaxElems = int64_t(1) << 52;

// σ(v) and 1 − σ(v) = σ(−v), each from its own exponential (no cancellation in either tail).
__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

__device__ __forceinline__ float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }

// W = tanh(Ŵ)·σ(M̂) in f32; G in f32 when `g32` is given (16-bit storage).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nalu_weights_kernel(const T* __restrict__ w_hat, const T* __restrict__ m_hat, const T* __restrict__ g, int64_t n,
                        float* __restrict__ w, float* __restrict__ g32) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += stride) {
        w[e] = tanhf(to_compute(w_hat[e])) * sigmoid(to_compute(m_hat[e]));
        if (g32 != nullptr) g32[e] = to_compute(g[e]);
    }
}

// log(|x| + ε) in f32; x in f32 when `x32` is given.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nalu_log_kernel(const T* __restrict__ x, int64_t n, float eps, float* __restrict__ log_x,
                    float* __restrict__ x32) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += stride) {
        const float v = to_compute(x[e]);
        log_x[e] = logf(fabsf(v) + eps);
        if (x32 != nullptr) x32[e] = v;
    }
}

// y = g·a + (1 − g)·exp(lm), g = σ(gl + b[o]).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nalu_combine_kernel(const float* __restrict__ a, const float* __restrict__ lm, const float* __restrict__ gl,
                        const T* __restrict__ bias, int64_t n, int64_t out, T* __restrict__ y) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += stride) {
        const float logit = gl[e] + to_compute(bias[e % out]);
        const float g = sigmoid(logit);
        const float one_minus_g = sigmoid(-logit);
        y[e] = from_compute<T>(g * a[e] + one_minus_g * expf(lm[e]));
    }
}

// The combine's gradients for the backward GEMMs: da = g·dy, dlm = (1 − g)·m·dy,
// dgl = (a − m)·g·(1 − g)·dy.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nalu_combine_bwd_kernel(const float* __restrict__ a, const float* __restrict__ lm, const float* __restrict__ gl,
                            const T* __restrict__ bias, const T* __restrict__ dy, int64_t n, int64_t out,
                            float* __restrict__ da, float* __restrict__ dlm, float* __restrict__ dgl) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += stride) {
        const float logit = gl[e] + to_compute(bias[e % out]);
        const float g = sigmoid(logit);
        const float one_minus_g = sigmoid(-logit);
        const float m = expf(lm[e]);
        const float d = to_compute(dy[e]);
        da[e] = g * d;
        dlm[e] = one_minus_g * m * d;
        dgl[e] = (a[e] - m) * g * one_minus_g * d;
    }
}

// dx = dsum + dlog·sign(x)/(|x| + ε) (dsum: the GEMMs' da·W + dgl·G).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nalu_dx_kernel(const T* __restrict__ x, int64_t n, float eps, const float* __restrict__ dsum,
                   const float* __restrict__ dlog, T* __restrict__ dx) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n; e += stride) {
        const float v = to_compute(x[e]);
        dx[e] = from_compute<T>(dsum[e] + dlog[e] * sign_of(v) / (fabsf(v) + eps));
    }
}

// dŴ, dM̂ from dW (f32); dG and db converted from f32 to the storage dtype. The loop covers
// max(n, out) entries: entries past n (I = 0) only convert db.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nalu_dweights_kernel(const T* __restrict__ w_hat, const T* __restrict__ m_hat, const float* __restrict__ dw,
                         const float* __restrict__ dg32, const float* __restrict__ dbias32, int64_t n, int64_t out,
                         T* __restrict__ dw_hat, T* __restrict__ dm_hat, T* __restrict__ dg, T* __restrict__ dbias) {
    const int64_t stride = int64_t(gridDim.x) * kThreads;
    const int64_t total = n > out ? n : out;
    for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += stride) {
        if (e < n) {
            const float th = tanhf(to_compute(w_hat[e]));
            const float mh = to_compute(m_hat[e]);
            const float s = sigmoid(mh);
            const float d = dw[e];
            dw_hat[e] = from_compute<T>(d * s * (1.0f - th * th));
            dm_hat[e] = from_compute<T>(d * th * s * sigmoid(-mh));
            dg[e] = from_compute<T>(dg32[e]);
        }
        if (e < out) dbias[e] = from_compute<T>(dbias32[e]);
    }
}

namespace {

unsigned blocks_for(int64_t n) {
    int64_t blocks = (n + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

bool aligned_all(int64_t bytes, std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs) {
        if (!is_aligned(p, bytes)) return false;
    }
    return true;
}

bool valid_eps(float eps) { return eps > 0.0f && eps <= 1.0f; }

}  // namespace

}  // namespace kiln::arith_nalu

namespace kn = kiln::arith_nalu;

extern "C" {

kiln_status kiln_arith_nalu_weights(kiln_dtype dtype, const void* w_hat, const void* m_hat, const void* g, int64_t n,
                                    float* w, float* g32, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (n < 0 || n > kn::kMaxElems) return KILN_ERROR_INVALID_SIZE;
    if (n == 0) return KILN_SUCCESS;
    if (w_hat == nullptr || m_hat == nullptr || w == nullptr || (g32 != nullptr && g == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (!kn::aligned_all(kiln::storage_bytes(dtype), {w_hat, m_hat, g}) || !kn::aligned_all(sizeof(float), {w, g32})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(kn::blocks_for(n), kn::kThreads, 0, s, kn::nalu_weights_kernel<T>)(
            static_cast<const T*>(w_hat), static_cast<const T*>(m_hat), static_cast<const T*>(g), n, w, g32);
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nalu_log(kiln_dtype dtype, const void* x, int64_t n, float eps, float* log_x, float* x32,
                                void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!kn::valid_eps(eps)) return KILN_ERROR_INVALID_VALUE;
    if (n < 0 || n > kn::kMaxElems) return KILN_ERROR_INVALID_SIZE;
    if (n == 0) return KILN_SUCCESS;
    if (x == nullptr || log_x == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!kn::aligned_all(kiln::storage_bytes(dtype), {x}) || !kn::aligned_all(sizeof(float), {log_x, x32})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(kn::blocks_for(n), kn::kThreads, 0, s, kn::nalu_log_kernel<T>)(static_cast<const T*>(x), n, eps,
                                                                                   log_x, x32);
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nalu_combine_fwd(kiln_dtype dtype, const float* a, const float* lm, const float* gl,
                                        const void* bias, int64_t batch, int64_t out, void* y, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (batch < 0 || out < 0 || (out > 0 && batch > kn::kMaxElems / out)) return KILN_ERROR_INVALID_SIZE;
    const int64_t n = batch * out;
    if (n == 0) return KILN_SUCCESS;
    if (a == nullptr || lm == nullptr || gl == nullptr || bias == nullptr || y == nullptr) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (!kn::aligned_all(kiln::storage_bytes(dtype), {bias, y}) || !kn::aligned_all(sizeof(float), {a, lm, gl})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(kn::blocks_for(n), kn::kThreads, 0, s, kn::nalu_combine_kernel<T>)(
            a, lm, gl, static_cast<const T*>(bias), n, out, static_cast<T*>(y));
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nalu_combine_bwd(kiln_dtype dtype, const float* a, const float* lm, const float* gl,
                                        const void* bias, const void* dy, int64_t batch, int64_t out, float* da,
                                        float* dlm, float* dgl, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (batch < 0 || out < 0 || (out > 0 && batch > kn::kMaxElems / out)) return KILN_ERROR_INVALID_SIZE;
    const int64_t n = batch * out;
    if (n == 0) return KILN_SUCCESS;
    if (a == nullptr || lm == nullptr || gl == nullptr || bias == nullptr || dy == nullptr || da == nullptr ||
        dlm == nullptr || dgl == nullptr) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (!kn::aligned_all(kiln::storage_bytes(dtype), {bias, dy}) ||
        !kn::aligned_all(sizeof(float), {a, lm, gl, da, dlm, dgl})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(kn::blocks_for(n), kn::kThreads, 0, s, kn::nalu_combine_bwd_kernel<T>)(
            a, lm, gl, static_cast<const T*>(bias), static_cast<const T*>(dy), n, out, da, dlm, dgl);
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nalu_dx(kiln_dtype dtype, const void* x, int64_t n, float eps, const float* dsum,
                               const float* dlog, void* dx, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!kn::valid_eps(eps)) return KILN_ERROR_INVALID_VALUE;
    if (n < 0 || n > kn::kMaxElems) return KILN_ERROR_INVALID_SIZE;
    if (n == 0) return KILN_SUCCESS;
    if (x == nullptr || dsum == nullptr || dlog == nullptr || dx == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!kn::aligned_all(kiln::storage_bytes(dtype), {x, dx}) || !kn::aligned_all(sizeof(float), {dsum, dlog})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(kn::blocks_for(n), kn::kThreads, 0, s, kn::nalu_dx_kernel<T>)(static_cast<const T*>(x), n, eps,
                                                                                  dsum, dlog, static_cast<T*>(dx));
        return kiln::launch_status();
    });
}

kiln_status kiln_arith_nalu_dweights(kiln_dtype dtype, const void* w_hat, const void* m_hat, const float* dw,
                                     const float* dg32, const float* dbias32, int64_t n, int64_t out, void* dw_hat,
                                     void* dm_hat, void* dg, void* dbias, void* stream) {
    if (!kiln::valid_dtype(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (n < 0 || n > kn::kMaxElems || out < 0 || out > kn::kMaxElems) return KILN_ERROR_INVALID_SIZE;
    if (n == 0 && out == 0) return KILN_SUCCESS;
    const bool weights = n > 0;
    const bool bias = out > 0;
    if ((weights && (w_hat == nullptr || m_hat == nullptr || dw == nullptr || dg32 == nullptr ||
                     dw_hat == nullptr || dm_hat == nullptr || dg == nullptr)) ||
        (bias && (dbias32 == nullptr || dbias == nullptr))) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (!kn::aligned_all(kiln::storage_bytes(dtype), {w_hat, m_hat, dw_hat, dm_hat, dg, dbias}) ||
        !kn::aligned_all(sizeof(float), {dw, dg32, dbias32})) {
        return KILN_ERROR_MISALIGNED;
    }
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(kn::blocks_for(n > out ? n : out), kn::kThreads, 0, s, kn::nalu_dweights_kernel<T>)(
            static_cast<const T*>(w_hat), static_cast<const T*>(m_hat), dw, dg32, dbias32, n, out,
            static_cast<T*>(dw_hat), static_cast<T*>(dm_hat), static_cast<T*>(dg), static_cast<T*>(dbias));
        return kiln::launch_status();
    });
}

}  // extern "C"

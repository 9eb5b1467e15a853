// Test kernels of the inline-PTX wrappers (kernels/include/kiln_selftest.h): each feeds one
// wrapper operands laid out by the PTX ISA's definition and stores what it returns, so that the
// host can compare with the scalar definition. Tiny: one warp or two, one launch each.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "common/vec.cuh"
#include "kiln.h"
#include "kiln_selftest.h"

namespace kiln {
namespace {

// Two 16-bit elements as one register, the first in the low half.
__device__ __forceinline__ uint32_t pair(const uint16_t* m, int first, int second) {
    return uint32_t(m[first]) | (uint32_t(m[second]) << 16);
}

template <ptx::MmaType kType>
__global__ void mma_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    // a: [16][16], b: [16][8] (k, n), c and d: [16][8].
    const uint32_t af[4] = {pair(a, g * 16 + 2 * t, g * 16 + 2 * t + 1),
                            pair(a, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1),
                            pair(a, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9),
                            pair(a, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9)};
    const uint32_t bf[2] = {pair(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g),
                            pair(b, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g)};
    float cf[4], df[4];
    for (int i = 0; i < 4; ++i) cf[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    ptx::mma_m16n8k16<kType>(df, af, bf, cf);
    for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = df[i];
}

// a: [8][4], b: [4][8] (k, n), c and d: [8][8], all f64 row-major.
__global__ void mma_f64_kernel(const double* a, const double* b, const double* c, double* d) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    const double cf[2] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1]};
    double df[2];
    ptx::mma_m8n8k4_f64(df, a[g * 4 + t], b[t * 8 + g], cf);
    d[g * 8 + 2 * t] = df[0];
    d[g * 8 + 2 * t + 1] = df[1];
}

constexpr int kLdRows = 32, kLdCols = 16;

template <int kN, bool kTrans>
__global__ void ldmatrix_kernel(const int32_t* src, int32_t* out) {
    __shared__ __align__(16) uint16_t tile[kLdRows * kLdCols];
    const int lane = threadIdx.x;
    for (int i = lane; i < kLdRows * kLdCols; i += 32) tile[i] = static_cast<uint16_t>(src[i]);
    __syncwarp();
    const int row = (7 * lane + 3) % kLdRows, col = 8 * ((lane / 8) % 2);
    uint32_t r[kN];
    ptx::ldmatrix<kN, kTrans>(r, tile + row * kLdCols + col);
    for (int i = 0; i < kN; ++i) out[4 * lane + i] = static_cast<int32_t>(r[i]);
}

constexpr int kCpThreads = 64;

__global__ void cp_async_kernel(const int32_t* src, int32_t* out, int skip_wait) {
    __shared__ __align__(16) int32_t staged[2 * kCpThreads * 4];
    const int t = threadIdx.x, next = (t + 1) % kCpThreads;
    ptx::CpAsync pipe;
    pipe.copy16(staged + 4 * t, src + 4 * t);
    pipe.commit();
    pipe.copy16(staged + 4 * (kCpThreads + t), src + 4 * (kCpThreads + t), t % 3 != 0);
    pipe.commit();
    pipe.wait<1>();
    __syncthreads();
    for (int e = 0; e < 4; ++e) out[4 * next + e] = staged[4 * next + e];
    if (!skip_wait) pipe.wait<0>();
    __syncthreads();
    for (int e = 0; e < 4; ++e) out[4 * (kCpThreads + next) + e] = staged[4 * (kCpThreads + next) + e];
}

template <int kN>
kiln_status launch_ldmatrix(bool trans, const int32_t* src, int32_t* out, cudaStream_t s) {
    if (trans) {
        KILN_LAUNCH(1, 32, 0, s, ldmatrix_kernel<kN, true>)(src, out);
    } else {
        KILN_LAUNCH(1, 32, 0, s, ldmatrix_kernel<kN, false>)(src, out);
    }
    return launch_status();
}

}  // namespace
}  // namespace kiln

extern "C" {

kiln_status kiln_selftest_mma(kiln_dtype dtype, const void* a, const void* b, const float* c, float* d,
                              void* stream) {
    using namespace kiln;
    if (a == nullptr || b == nullptr || c == nullptr || d == nullptr) return KILN_ERROR_NULL_POINTER;
    const auto s = static_cast<cudaStream_t>(stream);
    const auto* a16 = static_cast<const uint16_t*>(a);
    const auto* b16 = static_cast<const uint16_t*>(b);
    switch (static_cast<int>(dtype)) {
        case KILN_DTYPE_F16: KILN_LAUNCH(1, 32, 0, s, mma_kernel<ptx::MmaType::kF16>)(a16, b16, c, d); break;
        case KILN_DTYPE_BF16: KILN_LAUNCH(1, 32, 0, s, mma_kernel<ptx::MmaType::kBF16>)(a16, b16, c, d); break;
        default: return KILN_ERROR_INVALID_DTYPE;
    }
    return launch_status();
}

kiln_status kiln_selftest_mma_f64(const double* a, const double* b, const double* c, double* d, void* stream) {
    using namespace kiln;
    if (a == nullptr || b == nullptr || c == nullptr || d == nullptr) return KILN_ERROR_NULL_POINTER;
    KILN_LAUNCH(1, 32, 0, static_cast<cudaStream_t>(stream), mma_f64_kernel)(a, b, c, d);
    return launch_status();
}

kiln_status kiln_selftest_ldmatrix(int32_t count, int32_t trans, const int32_t* src, int32_t* out, void* stream) {
    using namespace kiln;
    if (src == nullptr || out == nullptr) return KILN_ERROR_NULL_POINTER;
    const auto s = static_cast<cudaStream_t>(stream);
    switch (count) {
        case 1: return launch_ldmatrix<1>(trans != 0, src, out, s);
        case 2: return launch_ldmatrix<2>(trans != 0, src, out, s);
        case 4: return launch_ldmatrix<4>(trans != 0, src, out, s);
        default: return KILN_ERROR_INVALID_VALUE;
    }
}

kiln_status kiln_selftest_cp_async(const int32_t* src, int32_t* out, int32_t skip_wait, void* stream) {
    using namespace kiln;
    if (src == nullptr || out == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!is_aligned(src, 16)) return KILN_ERROR_MISALIGNED;
    KILN_LAUNCH(1, kCpThreads, 0, static_cast<cudaStream_t>(stream), cp_async_kernel)(src, out, skip_wait);
    return launch_status();
}

}  // extern "C"

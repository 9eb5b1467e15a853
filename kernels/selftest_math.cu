// Test kernel of the special functions of common/math.cuh (kernels/include/kiln_selftest.h):
// evaluates one helper in one precision policy over an array, so the host can measure its
// relative error against an f64 reference: on the emulator (whose __expf and __fdividef model
// the hardware's roundings) in CI, and on a GPU, where the MUFU units themselves answer.

#include <cstdint>

#include "common/launch.cuh"
#include "common/math.cuh"
#include "kiln.h"
#include "kiln_selftest.h"

namespace kiln {
namespace {

constexpr int kMathThreads = 256;

template <typename M>
__global__ void __launch_bounds__(kMathThreads) math_kernel(int32_t function, const float* x, float* y, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * kMathThreads + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    switch (function) {
        case KILN_SELFTEST_NORMAL_CDF: y[i] = normal_cdf<M>(v); break;
        case KILN_SELFTEST_NORMAL_PDF: y[i] = normal_pdf<M>(v); break;
        case KILN_SELFTEST_SIGMOID: y[i] = sigmoid_pair<M>(v).pos; break;
        case KILN_SELFTEST_SIGMOID_NEG: y[i] = sigmoid_pair<M>(v).neg; break;
        default: y[i] = normal_cdf_erf<M>(v).erf; break;  // KILN_SELFTEST_NORMAL_ERF
    }
}

}  // namespace
}  // namespace kiln

extern "C" {

kiln_status kiln_selftest_math(int32_t function, int32_t fast, const float* x, float* y, int64_t n, void* stream) {
    using namespace kiln;
    if (function < KILN_SELFTEST_NORMAL_CDF || function > KILN_SELFTEST_NORMAL_ERF) return KILN_ERROR_INVALID_VALUE;
    if (n < 0) return KILN_ERROR_INVALID_SIZE;
    if (n == 0) return KILN_SUCCESS;
    if (x == nullptr || y == nullptr) return KILN_ERROR_NULL_POINTER;
    const auto s = static_cast<cudaStream_t>(stream);
    const int64_t blocks = (n + kMathThreads - 1) / kMathThreads;
    if (blocks > INT32_MAX) return KILN_ERROR_INVALID_SIZE;
    if (fast != 0) {
        KILN_LAUNCH(blocks, kMathThreads, 0, s, math_kernel<StorageMath16>)(function, x, y, n);
    } else {
        KILN_LAUNCH(blocks, kMathThreads, 0, s, math_kernel<PreciseMath>)(function, x, y, n);
    }
    return launch_status();
}

}  // extern "C"

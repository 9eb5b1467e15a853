// Microbenchmarks of the three resources attention's tiles trade against each other
// (kernels/include/kiln_selftest.h): mma.sync throughput, ldmatrix (shared memory) bandwidth and
// L2 read bandwidth. Each leaves a checksum the host can predict exactly, so a run proves the
// work was done (and on the emulator, in CI, that the kernels are right); their timings come from
// `kiln sweep` on a GPU, where they are the ceilings the attention variants are read against.

#include <cuda_bf16.h>

#include <cstdint>

#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "common/vec.cuh"
#include "kiln.h"
#include "kiln_selftest.h"

namespace kiln {
namespace {

constexpr int kMicroThreads = 128;
// Independent accumulator chains per warp: enough to cover the tensor pipe's latency.
constexpr int kChains = 8;

// Every warp runs `iterations` rounds of kChains mma.sync.m16n8k16 (bf16, f32 accumulators) on
// fragments of ones: each product is 1, each k-step adds 16 to every accumulator element.
__global__ void __launch_bounds__(kMicroThreads) mma_peak_kernel(int iterations, float* sink) {
    constexpr uint32_t kOnes = 0x3f803f80u;  // two bf16 1.0
    const uint32_t a[4] = {kOnes, kOnes, kOnes, kOnes};
    const uint32_t b[2] = {kOnes, kOnes};
    float acc[kChains][4] = {};
    for (int it = 0; it < iterations; ++it) {
#pragma unroll
        for (int c = 0; c < kChains; ++c) ptx::mma_m16n8k16<ptx::MmaType::kBF16>(acc[c], a, b, acc[c]);
    }
    float total = 0.0f;
#pragma unroll
    for (int c = 0; c < kChains; ++c) total += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
    atomicAdd(sink, total);
}

constexpr int kLdRows = 64, kLdStride = 72;  // 64 rows of 64 elements, padded: conflict-free

// Every warp runs `iterations` ldmatrix.x4 (512 bytes each) over a shared tile whose element e
// holds e's low 16 bits; the 32-bit words it receives are summed (mod 2^32) into the sink.
__global__ void __launch_bounds__(kMicroThreads) ldmatrix_bw_kernel(int iterations, uint32_t* sink) {
    __shared__ __align__(16) uint16_t tile[kLdRows * kLdStride];
    for (int e = threadIdx.x; e < kLdRows * kLdStride; e += kMicroThreads) tile[e] = uint16_t(e);
    __syncthreads();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    uint32_t acc = 0;
    for (int it = 0; it < iterations; ++it) {
        // Lane l names row l of a 32-row half (matrix l / 8, its row l % 8) and a 16-byte column.
        const int row = ((it + warp) % 2) * 32 + lane, col = 8 * (it % 8);
        uint32_t r[4];
        ptx::ldmatrix<4, false>(r, tile + row * kLdStride + col);
        acc += r[0] + r[1] + r[2] + r[3];
    }
    atomicAdd(sink, acc);
}

// `passes` grid-stride reads of a buffer of 16-byte words (sized to stay in L2 after the first
// pass); their 32-bit lanes are summed (mod 2^32) into the sink.
__global__ void __launch_bounds__(kMicroThreads) l2_read_kernel(const uint4* buf, int64_t n, int passes,
                                                                uint32_t* sink) {
    uint32_t acc = 0;
    const int64_t stride = int64_t(gridDim.x) * kMicroThreads;
    for (int pass = 0; pass < passes; ++pass) {
        for (int64_t i = int64_t(blockIdx.x) * kMicroThreads + threadIdx.x; i < n; i += stride) {
            const uint4 v = buf[i];
            acc += v.x + v.y + v.z + v.w;
        }
    }
    atomicAdd(sink, acc);
}

// Grid x is limited to 2^31 − 1 blocks.
constexpr int64_t kMaxBlocks = 0x7fffffff;

}  // namespace
}  // namespace kiln

extern "C" {

kiln_status kiln_selftest_mma_peak(int64_t blocks, int32_t iterations, float* sink, void* stream) {
    using namespace kiln;
    if (blocks < 1 || blocks > kMaxBlocks || iterations < 1) return KILN_ERROR_INVALID_SIZE;
    if (sink == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!is_aligned(sink, 4)) return KILN_ERROR_MISALIGNED;
    KILN_LAUNCH(static_cast<unsigned>(blocks), kMicroThreads, 0, static_cast<cudaStream_t>(stream),
                mma_peak_kernel)(iterations, sink);
    return launch_status();
}

kiln_status kiln_selftest_ldmatrix_bandwidth(int64_t blocks, int32_t iterations, uint32_t* sink, void* stream) {
    using namespace kiln;
    if (blocks < 1 || blocks > kMaxBlocks || iterations < 1) return KILN_ERROR_INVALID_SIZE;
    if (sink == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!is_aligned(sink, 4)) return KILN_ERROR_MISALIGNED;
    KILN_LAUNCH(static_cast<unsigned>(blocks), kMicroThreads, 0, static_cast<cudaStream_t>(stream),
                ldmatrix_bw_kernel)(iterations, sink);
    return launch_status();
}

kiln_status kiln_selftest_l2_bandwidth(const void* buf, int64_t bytes, int32_t passes, int64_t blocks,
                                       uint32_t* sink, void* stream) {
    using namespace kiln;
    if (bytes < 16 || bytes % 16 != 0 || passes < 1 || blocks < 1 || blocks > kMaxBlocks)
        return KILN_ERROR_INVALID_SIZE;
    if (buf == nullptr || sink == nullptr) return KILN_ERROR_NULL_POINTER;
    if (!is_aligned(buf, 16) || !is_aligned(sink, 4)) return KILN_ERROR_MISALIGNED;
    KILN_LAUNCH(static_cast<unsigned>(blocks), kMicroThreads, 0, static_cast<cudaStream_t>(stream), l2_read_kernel)(
        static_cast<const uint4*>(buf), bytes / 16, passes, sink);
    return launch_status();
}

}  // extern "C"

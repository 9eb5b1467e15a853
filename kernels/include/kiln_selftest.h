/*
 * kiln_selftest.h: test kernels of the inline-PTX wrappers (kernels/common/ptx.cuh), each
 * checked against the instruction's scalar definition (PTX ISA) by tests/suite/ptx.rs, and of
 * the special functions (kernels/common/math.cuh), checked against f64 by tests/suite/math.rs.
 * They are built into both libraries, so one binary runs each on the emulator and on a GPU
 * and the first GPU run proves the emulator's fragment layouts. Not part of the stable C ABI.
 * Conventions as in kiln.h: device pointers, the stream last, NULL stream on the emulator.
 */
#ifndef KILN_SELFTEST_H
#define KILN_SELFTEST_H

#include <stdint.h>

#include "kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * One warp runs mma.sync.m16n8k16 with f32 accumulators: d = a * b + c. a: [16, 16] and
 * b: [16, 8] (k, n), row-major, f16 or bf16 (dtype); c, d: f32 [16, 8], row-major. Each lane
 * builds its fragments from these by the PTX ISA's layout and stores d by the same layout.
 */
kiln_status kiln_selftest_mma(kiln_dtype dtype, const void* a, const void* b, const float* c, float* d, void* stream);

/**
 * One warp runs mma.sync.m8n8k4 in f64 (DMMA, sm_80+): d = a * b + c. a: [8, 4], b: [4, 8]
 * (k, n), c and d: [8, 8], all f64 row-major; fragments by the PTX ISA's layout.
 */
kiln_status kiln_selftest_mma_f64(const double* a, const double* b, const double* c, double* d, void* stream);

/**
 * One warp stages src (int32 [32, 16], the low 16 bits of each element) in shared memory and
 * runs ldmatrix.x{count} (count 1, 2 or 4), with .trans when trans != 0. Lane l names the row
 * address (row (7 l + 3) % 32, column 8 ((l / 8) % 2)); out (int32 [32, 4]) receives lane l's
 * registers 0..count-1 in out[4 l ..] (the rest is left unwritten).
 */
kiln_status kiln_selftest_ldmatrix(int32_t count, int32_t trans, const int32_t* src, int32_t* out, void* stream);

/**
 * 64 threads copy src (int32 [512], 128 chunks of 16 bytes) to shared memory with cp.async in
 * two groups: chunk t (group 0) and chunk 64 + t (group 1, zero-filled when t % 3 == 0). After
 * wait_group 1 and a barrier, thread t copies chunk (t + 1) % 64 to out (int32 [512]); after
 * wait_group 0 and a barrier, chunk 64 + (t + 1) % 64. skip_wait != 0 leaves out the
 * wait_group 0 (a planted bug the emulator must report; never run it on a GPU).
 */
kiln_status kiln_selftest_cp_async(const int32_t* src, int32_t* out, int32_t skip_wait, void* stream);

/** The helpers kiln_selftest_math evaluates. */
typedef enum kiln_selftest_function {
    KILN_SELFTEST_NORMAL_CDF = 0, /**< Φ(x) */
    KILN_SELFTEST_NORMAL_PDF = 1, /**< φ(x) */
    KILN_SELFTEST_SIGMOID = 2,    /**< σ(x), sigmoid_pair(x).pos */
    KILN_SELFTEST_SIGMOID_NEG = 3, /**< σ(−x), sigmoid_pair(x).neg */
    KILN_SELFTEST_NORMAL_ERF = 4   /**< erf(x/√2) = 2Φ(x) − 1, normal_cdf_erf(x).erf */
} kiln_selftest_function;

/**
 * y[i] = function(x[i]) for i < n (x, y: f32 [n]), in the f16/bf16 kernels' precision policy
 * when fast != 0 (StorageMath16), else in the f32 kernels' (PreciseMath).
 */
kiln_status kiln_selftest_math(int32_t function, int32_t fast, const float* x, float* y, int64_t n, void* stream);

/**
 * Microbenchmarks (kernels/microbench.cu; timed by `kiln sweep` on a GPU), 128-thread blocks,
 * each adding a checksum to its sink (which the caller zeroes first):
 * - kiln_selftest_mma_peak: every warp runs `iterations` x 8 independent mma.sync.m16n8k16 (bf16,
 *   f32 accumulators) on operands of ones; sink (f32) += 512 * iterations per thread, exactly
 *   while the total stays below 2^24. 2 * 16 * 8 * 16 flops per mma.
 * - kiln_selftest_ldmatrix_bandwidth: every warp runs `iterations` ldmatrix.x4 (512 bytes) over a shared
 *   tile of 64 rows of 72 elements, element e holding (uint16) e; lane l names row
 *   ((it + warp) % 2) * 32 + l, column 8 * (it % 8); sink (u32) += every word received, mod 2^32.
 * - kiln_selftest_l2_bandwidth: `passes` grid-stride reads of buf (`bytes`, a multiple of 16, 16-byte
 *   aligned) as 16-byte loads; sink (u32) += passes * (the sum of buf's 32-bit words), mod 2^32.
 * Sizes < 1 (and bytes not a multiple of 16) give KILN_ERROR_INVALID_SIZE.
 */
kiln_status kiln_selftest_mma_peak(int64_t blocks, int32_t iterations, float* sink, void* stream);
kiln_status kiln_selftest_ldmatrix_bandwidth(int64_t blocks, int32_t iterations, uint32_t* sink, void* stream);
kiln_status kiln_selftest_l2_bandwidth(const void* buf, int64_t bytes, int32_t passes, int64_t blocks, uint32_t* sink,
                                       void* stream);

#ifdef __cplusplus
}
#endif

#endif /* KILN_SELFTEST_H */

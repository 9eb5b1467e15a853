/*
 * kiln.h: the C ABI of kiln, the one interface for other frameworks.
 *
 * Conventions (shared/DESIGN.md):
 *  - every launcher is kiln_<family>_<op>_<fwd|bwd>, returns a kiln_status and never exits;
 *  - pointers are raw device pointers, sizes are int64_t element counts, the stream
 *    (a cudaStream_t or CUstream, NULL for the legacy default stream) comes last;
 *  - storage is f32, f16 or bf16 (kiln_dtype); math inside kernels is f32;
 *  - trainable parameters (slope, theta) and their gradients are always f32;
 *  - n == 0 is a valid size: no kernel runs and x, y, dy, dx are not touched; a requested
 *    parameter gradient (non-NULL dalpha, dslope, dtheta) is set to 0, an empty sum;
 *  - a launcher validates its arguments before launching anything, so on an argument
 *    error nothing has been written;
 *  - elementwise outputs may alias their inputs (y == x, dx == x or dx == dy): every
 *    element is read before it is written by the same thread. Other partial overlaps are
 *    undefined;
 *  - gradients of parameters (dalpha, dslope, dtheta) are reduced deterministically
 *    (fixed partition, f32 partial sums in the caller's workspace, a second pass in a
 *    fixed order; no float atomics). Pass NULL to skip a parameter gradient; then the
 *    workspace is not used and may be NULL.
 */
#ifndef KILN_H
#define KILN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI version returned by kiln_version(); bumped on any incompatible change. */
#define KILN_ABI_VERSION 1

/** Status codes. Argument errors and CUDA errors are distinct. */
typedef enum kiln_status {
    KILN_SUCCESS = 0,
    /** A required pointer is NULL. */
    KILN_ERROR_NULL_POINTER = 1,
    /** A size is negative, or sizes disagree (n not a multiple of channels). */
    KILN_ERROR_INVALID_SIZE = 2,
    /** The dtype is not one of kiln_dtype. */
    KILN_ERROR_INVALID_DTYPE = 3,
    /** A scalar parameter is outside its domain (NaN alpha, beta <= 0, eps <= 0, ...). */
    KILN_ERROR_INVALID_VALUE = 4,
    /** A pointer is not aligned to its element size. */
    KILN_ERROR_MISALIGNED = 5,
    /** The workspace is smaller than the *_workspace_bytes query asked for. */
    KILN_ERROR_WORKSPACE_TOO_SMALL = 6,
    /** The CUDA runtime reported an error when launching; see kiln_last_cuda_error(). */
    KILN_ERROR_CUDA = 7
} kiln_status;

/** Storage dtype of tensors. */
typedef enum kiln_dtype {
    KILN_DTYPE_F32 = 0,
    KILN_DTYPE_F16 = 1,
    KILN_DTYPE_BF16 = 2
} kiln_dtype;

/** A static, human-readable explanation of a status code. */
const char* kiln_status_string(kiln_status status);

/** The ABI version of the compiled library (KILN_ABI_VERSION). */
int32_t kiln_version(void);

/** The cudaError_t of the last launch on this thread that returned KILN_ERROR_CUDA (0 if none). */
int32_t kiln_last_cuda_error(void);

/* ------------------------------------------------------------------------------------------
 * Activation family: y = f(x) elementwise over n elements; backward dx = dy * f'(x).
 * Formulas: shared/REFERENCE.md section 1.
 * ---------------------------------------------------------------------------------------- */

/**
 * Bytes of workspace a backward launcher needs to reduce a parameter gradient over n
 * elements with `channels` channels (1 for a scalar parameter such as alpha or a shared
 * slope). Returns -1 if the sizes are invalid (n < 0, channels < 1, n % channels != 0).
 */
int64_t kiln_activation_workspace_bytes(int64_t n, int64_t channels);

/* Parameter-free activations. */
kiln_status kiln_activation_relu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_relu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_gelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_gelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_gelu_tanh_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_gelu_tanh_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_quick_gelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_quick_gelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_silu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_silu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_sigmoid_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_sigmoid_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_squared_relu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_squared_relu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);
kiln_status kiln_activation_atlu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, void* stream);
kiln_status kiln_activation_atlu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, void* stream);

/*
 * Expanded gating (arXiv 2405.20768): y = x * g_alpha(x) with one trainable scalar alpha
 * (not NaN). Backward writes dx and, when dalpha is not NULL, dalpha[0] = sum(dy * df/dalpha),
 * using a workspace of kiln_activation_workspace_bytes(n, 1) bytes.
 */
kiln_status kiln_activation_xatlu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float alpha, void* stream);
kiln_status kiln_activation_xatlu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float alpha,
                                      float* dalpha, void* workspace, int64_t workspace_bytes, void* stream);
kiln_status kiln_activation_xgelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float alpha, void* stream);
kiln_status kiln_activation_xgelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float alpha,
                                      float* dalpha, void* workspace, int64_t workspace_bytes, void* stream);
kiln_status kiln_activation_xsilu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float alpha, void* stream);
kiln_status kiln_activation_xsilu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float alpha,
                                      float* dalpha, void* workspace, int64_t workspace_bytes, void* stream);

/* SmeLU (arXiv 2010.09931) with half-width beta > 0. */
kiln_status kiln_activation_smelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float beta, void* stream);
kiln_status kiln_activation_smelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float beta,
                                      void* stream);

/* Generalized SmeLU (arXiv 2010.09931 eq. 11); needs alpha + beta > 0, all values finite. */
kiln_status kiln_activation_gsmelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float alpha, float beta,
                                       float g_neg, float g_pos, float t, void* stream);
kiln_status kiln_activation_gsmelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                       float alpha, float beta, float g_neg, float g_pos, float t, void* stream);

/*
 * PReLU: y = max(0,x) + slope[c] * min(0,x) where c = i % channels (the last dimension);
 * channels == 1 shares one slope. slope and dslope are f32 [channels]. Backward writes
 * dslope[c] = sum over rows of dy * min(0,x) when dslope is not NULL, using a workspace of
 * kiln_activation_workspace_bytes(n, channels) bytes.
 */
kiln_status kiln_activation_prelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, const float* slope,
                                      int64_t channels, void* stream);
kiln_status kiln_activation_prelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                      const float* slope, int64_t channels, float* dslope, void* workspace,
                                      int64_t workspace_bytes, void* stream);

/*
 * JumpReLU (arXiv 2407.14435): y = x * H(x - theta[c]) (H(0) = 0), c = i % channels.
 * Backward: dx = dy * H(x - theta[c]); when dtheta is not NULL, the straight-through
 * dtheta[c] = sum over rows of dy * (-theta[c]/eps) * K((x - theta[c])/eps) with K the
 * rectangle K(u) = 1 for -1/2 <= u < 1/2, else 0; eps > 0. theta, dtheta: f32 [channels].
 */
kiln_status kiln_activation_jumprelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, const float* theta,
                                         int64_t channels, void* stream);
kiln_status kiln_activation_jumprelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                         const float* theta, int64_t channels, float eps, float* dtheta,
                                         void* workspace, int64_t workspace_bytes, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */

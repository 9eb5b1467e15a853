/*
 * kiln.h: the C ABI of kiln, the one interface for other frameworks.
 *
 * Conventions (shared/DESIGN.md):
 *  - every launcher is kiln_<family>_<op>_<fwd|bwd>, returns a kiln_status and never exits;
 *  - pointers are raw device pointers, sizes are int64_t element counts, the stream
 *    (a cudaStream_t or CUstream, NULL for the legacy default stream) comes last;
 *  - storage is f32, f16 or bf16 (kiln_dtype); math inside kernels is f32; the equivariant
 *    family also takes f64 storage (KILN_DTYPE_F64), computed in f64; every other family
 *    returns KILN_ERROR_INVALID_DTYPE for it;
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
    KILN_ERROR_CUDA = 7,
    /** A CUDA error from earlier work (not kiln's) was pending on this thread, so kiln launched
     * nothing and left the error pending for its owner; kiln_last_cuda_error() names it. */
    KILN_ERROR_CUDA_PENDING = 8
} kiln_status;

/** Storage dtype of tensors. */
typedef enum kiln_dtype {
    KILN_DTYPE_F32 = 0,
    KILN_DTYPE_F16 = 1,
    KILN_DTYPE_BF16 = 2,
    /** Integer data: indices, sequence lengths, masks. */
    KILN_DTYPE_I32 = 3,
    /** One byte per element: boolean masks (nonzero is true). */
    KILN_DTYPE_U8 = 4,
    /** IEEE binary64 storage with f64 math: the equivariant family only (appended after the
     * existing values, which keep their numbers). */
    KILN_DTYPE_F64 = 5
} kiln_dtype;

/**
 * Errors found in device data (indices, lengths, counts) by kernels that cannot report them
 * through the return value without a host synchronisation. Such launchers take an
 * `int32_t* status` device word; once the call's kernels have run it holds KILN_DATA_OK or
 * the code of the bad data they found (the lowest code wins). Every kernel that writes an
 * output checks the word first and writes nothing when it is not OK, so on a data error the
 * outputs are untouched unless the launcher's documentation says otherwise. (After a
 * KILN_ERROR_CUDA return the word is unspecified.)
 */
typedef enum kiln_data_status {
    KILN_DATA_OK = 0,
    /** More kept tokens than the caller's capacity. */
    KILN_DATA_CAPACITY_EXCEEDED = 1,
    /** A sequence length outside [0, seqlen]. */
    KILN_DATA_SEQLEN_OUT_OF_RANGE = 2,
    /** A token index outside [0, batch * seqlen). */
    KILN_DATA_INDEX_OUT_OF_RANGE = 3,
    /** Two packed rows with the same token index. */
    KILN_DATA_DUPLICATE_INDEX = 4,
    /** Appended: edges not sorted by receiver (dst). No call reports it any more (the graph
     * build sorts on the device); the value stays reserved. */
    KILN_DATA_UNSORTED_EDGES = 5
} kiln_data_status;

/** A static, human-readable explanation of a status code. */
const char* kiln_status_string(kiln_status status);

/** The ABI version of the compiled library (KILN_ABI_VERSION). */
int32_t kiln_version(void);

/** The cudaError_t of the last call on this thread that returned KILN_ERROR_CUDA or
 * KILN_ERROR_CUDA_PENDING (0 if none). */
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
 * (finite, with 1 + 2 alpha a finite float). Backward writes dx and, when dalpha is not NULL,
 * dalpha[0] = sum(dy * df/dalpha), using a workspace of kiln_activation_workspace_bytes(n, 1)
 * bytes.
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

/* SmeLU (arXiv 2010.09931) with half-width beta > 0, normal and finite. */
kiln_status kiln_activation_smelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, float beta, void* stream);
kiln_status kiln_activation_smelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n, float beta,
                                      void* stream);

/* Generalized SmeLU (arXiv 2010.09931 eq. 11); needs all values finite, alpha and beta 0 or
 * normal, alpha + beta a positive normal float, and its derived constants (g_pos - g_neg) /
 * (2 (alpha + beta)) and t + (alpha + beta) g_neg / 2 + (alpha - beta) g_pos / 2 finite floats. */
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
 * rectangle K(u) = 1 on the open interval -1/2 < u < 1/2, else 0; eps a positive normal
 * (not subnormal) finite float. theta, dtheta: f32 [channels].
 */
kiln_status kiln_activation_jumprelu_fwd(kiln_dtype dtype, const void* x, void* y, int64_t n, const float* theta,
                                         int64_t channels, void* stream);
kiln_status kiln_activation_jumprelu_bwd(kiln_dtype dtype, const void* x, const void* dy, void* dx, int64_t n,
                                         const float* theta, int64_t channels, float eps, float* dtheta,
                                         void* workspace, int64_t workspace_bytes, void* stream);

/* ------------------------------------------------------------------------------------------
 * Padding family (flash-attn bert_padding semantics, shared/REFERENCE.md section 3).
 * hidden is [batch, seqlen, dim] row-major, packed is [nnz, dim]; a token (b, s) has the flat
 * index b * seqlen + s. Storage dtype f32/f16/bf16; any dim >= 1. Integer tensors are int32.
 * All four launchers need batch * seqlen < 2^31 (indices are int32).
 * ---------------------------------------------------------------------------------------- */

/**
 * Bytes of workspace the padding launchers need for this batch and seqlen (-1 if invalid):
 * 4 bytes a token, or unpad's one-pass state where that is larger (one-token sequences, a few
 * tokens).
 */
int64_t kiln_padding_workspace_bytes(int64_t batch, int64_t seqlen);

/**
 * Removes padding without a host synchronisation. The kept tokens are given either by
 * `mask` [batch, seqlen] (mask_dtype KILN_DTYPE_U8 for bool/u8 masks or KILN_DTYPE_I32;
 * nonzero keeps; holes allowed) or by `seqlens` [batch] int32 (the first seqlens[b] tokens
 * of each sequence); exactly one of the two is non-NULL.
 * Writes cu_seqlens [batch + 1] (prefix sums of the per-sequence counts, cu_seqlens[0] = 0),
 * counts [2] = {nnz, max_seqlen}, indices [capacity] (the flat indices of the kept tokens in
 * mask order; the first nnz are written) and packed [capacity, dim] (packed[i] = the token
 * indices[i] of hidden; the first nnz rows are written). `packed` may be NULL: then only the
 * indices, cu_seqlens and counts are written, no row is copied (kiln's safe unpad sizes its
 * packed tensor from them and gathers the rows with kiln_padding_gather_fwd).
 * With a mask and capacity >= batch*seqlen no data error is possible: the indices,
 * cu_seqlens and counts come from one pass over the mask (a decoupled look-back scan, with
 * the workspace 8-byte aligned), then the rows are copied.
 * Data errors through `status`: SEQLEN_OUT_OF_RANGE writes counts = {0, 0} and nothing else;
 * CAPACITY_EXCEEDED (nnz > capacity) still writes cu_seqlens and counts, so the caller learns
 * the nnz it needs, but not indices or packed.
 */
kiln_status kiln_padding_unpad_fwd(kiln_dtype dtype, const void* hidden, kiln_dtype mask_dtype, const void* mask,
                                   const int32_t* seqlens, int64_t batch, int64_t seqlen, int64_t dim,
                                   int64_t capacity, void* packed, int32_t* indices, int32_t* cu_seqlens,
                                   int32_t* counts, int32_t* status, void* workspace, int64_t workspace_bytes,
                                   void* stream);

/**
 * Pads: hidden [batch, seqlen, dim] = 0 except hidden[indices[i]] = packed[i] for i < nnz.
 * nnz is `*nnz` read on the device when `nnz` is non-NULL (it must be <= capacity), else
 * capacity. indices must be in range and distinct: an INDEX_OUT_OF_RANGE or DUPLICATE_INDEX
 * data error leaves hidden untouched. Also the backward of unpad (dpacked -> dhidden).
 */
kiln_status kiln_padding_pad_fwd(kiln_dtype dtype, const void* packed, const int32_t* indices, const int32_t* nnz,
                                 int64_t capacity, int64_t batch, int64_t seqlen, int64_t dim, void* hidden,
                                 int32_t* status, void* workspace, int64_t workspace_bytes, void* stream);

/**
 * Gathers: packed[i] = hidden[indices[i]] for i < nnz (nnz as in kiln_padding_pad_fwd); rows
 * of packed from nnz to capacity are not written. An INDEX_OUT_OF_RANGE data error leaves
 * packed untouched. This is the backward of pad (dhidden -> dpacked) and the gather step of
 * unpad for indices computed elsewhere.
 */
kiln_status kiln_padding_gather_fwd(kiln_dtype dtype, const void* hidden, const int32_t* indices, const int32_t* nnz,
                                    int64_t capacity, int64_t batch, int64_t seqlen, int64_t dim, void* packed,
                                    int32_t* status, void* stream);

/* ------------------------------------------------------------------------------------------
 * Norm family: fused residual add + LayerNorm / RMSNorm over the last dimension.
 *   s = x + residual (in f32; residual optional)
 *   LayerNorm: y = (s - mean(s)) * rstd * gamma + beta,   rstd = 1 / sqrt(var(s) + eps)
 *   RMSNorm:   y = s * rstd * gamma + beta,               rstd = 1 / sqrt(mean(s^2) + eps)
 * x, residual, y, residual_out, dy, dx, dresidual, dresidual_out: [rows, dim] storage dtype;
 * gamma, beta, dgamma, dbeta: f32 [dim] (NULL gamma means 1, NULL beta means 0);
 * mean, rstd: f32 [rows] (statistics of the f32 sum s). 1 <= dim <= 65536, eps > 0.
 * ---------------------------------------------------------------------------------------- */

/** Bytes of workspace the norm backward launchers need (-1 if the sizes are invalid). */
int64_t kiln_norm_workspace_bytes(int64_t rows, int64_t dim);

/**
 * Forward. residual_out (optional) receives s rounded to the storage dtype; mean (LayerNorm
 * only) and rstd (optional) receive the row statistics backward needs.
 */
kiln_status kiln_norm_layernorm_fwd(kiln_dtype dtype, const void* x, const void* residual, const float* gamma,
                                    const float* beta, int64_t rows, int64_t dim, float eps, void* y,
                                    void* residual_out, float* mean, float* rstd, void* stream);
kiln_status kiln_norm_rmsnorm_fwd(kiln_dtype dtype, const void* x, const void* residual, const float* gamma,
                                  const float* beta, int64_t rows, int64_t dim, float eps, void* y,
                                  void* residual_out, float* rstd, void* stream);

/**
 * Backward. s is recomputed as x + residual (pass residual = NULL when x already is the sum,
 * e.g. the forward's residual_out); mean and rstd are the forward's. dresidual_out (optional)
 * is the gradient flowing into residual_out and is added to ds. Writes dx = ds, dresidual = ds
 * (optional), and the deterministic column sums dgamma = sum(dy * xhat), dbeta = sum(dy)
 * (each optional; the workspace is needed when either is requested).
 */
kiln_status kiln_norm_layernorm_bwd(kiln_dtype dtype, const void* dy, const void* x, const void* residual,
                                    const float* mean, const float* rstd, const float* gamma,
                                    const void* dresidual_out, int64_t rows, int64_t dim, void* dx,
                                    void* dresidual, float* dgamma, float* dbeta, void* workspace,
                                    int64_t workspace_bytes, void* stream);
kiln_status kiln_norm_rmsnorm_bwd(kiln_dtype dtype, const void* dy, const void* x, const void* residual,
                                  const float* rstd, const float* gamma, const void* dresidual_out, int64_t rows,
                                  int64_t dim, void* dx, void* dresidual, float* dgamma, float* dbeta,
                                  void* workspace, int64_t workspace_bytes, void* stream);

/* ------------------------------------------------------------------------------------------
 * GLU family (shared/REFERENCE.md section 2): y = h(a) * b elementwise over [rows, F], where
 * h is the gate: glu sigma(a); bilinear a; reglu relu(a); geglu a*Phi(a); geglu_tanh the tanh
 * GELU of a; swiglu a*sigma(a); and the expanded gates with a trainable scalar alpha,
 * g_alpha(a) = (1 + 2 alpha) g0(a) - alpha with g0 = atan(a)/pi + 1/2 (xatglu), Phi (xgeglu),
 * sigma (xswiglu), used as h = g_alpha(a) (order 1) or h = a g_alpha(a) (order 2); atglu is
 * g0 = atan(a)/pi + 1/2 without alpha, order 2 by default.
 * Backward: da = dy b h'(a), db = dy h(a), dalpha = sum dy b dh/dalpha (deterministic).
 *
 * Layout: a and b are [rows, F] views with a common row stride `ab_stride` (elements), so
 *   separate tensors:        a, b,                 ab_stride = F
 *   packed [rows, 2F], gate first (TransformerEngine, Megatron, MosaicBERT):
 *                            a = ab, b = ab + F,    ab_stride = 2F
 *   packed, gate second (PyTorch F.glu):  a = ab + F, b = ab,  ab_stride = 2F.
 * y and dy are contiguous [rows, F]; da and db share the row stride `dab_stride`. In place:
 * da may equal a and db equal b (same stride); every element is read before it is written.
 * Any rows >= 0 and F >= 1; ab_stride >= F and dab_stride >= F (for a packed layout the
 * halves must not overlap: |b - a| >= F elements).
 * ---------------------------------------------------------------------------------------- */

/** Bytes of workspace a backward with dalpha needs (-1 if the sizes are invalid). */
int64_t kiln_glu_workspace_bytes(int64_t rows, int64_t features);

kiln_status kiln_glu_glu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y, int64_t rows,
                             int64_t features, void* stream);
kiln_status kiln_glu_glu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                             void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_bilinear_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                                  int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_bilinear_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                                  void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_reglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                               int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_reglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                               void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_geglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                               int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_geglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                               void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_geglu_tanh_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                                    int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_geglu_tanh_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride,
                                    const void* dy, void* da, void* db, int64_t dab_stride, int64_t rows,
                                    int64_t features, void* stream);
kiln_status kiln_glu_swiglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                                int64_t rows, int64_t features, void* stream);
kiln_status kiln_glu_swiglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                                void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, void* stream);

/* atglu: order 1 or 2 (default 2 in the expanded-gating paper). */
kiln_status kiln_glu_atglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                               int64_t rows, int64_t features, int32_t order, void* stream);
kiln_status kiln_glu_atglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                               void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, int32_t order,
                               void* stream);

/* Expanded gates: alpha finite with 1 + 2 alpha a finite float, order 1 or 2; dalpha (NULL
 * skips it) uses a workspace of kiln_glu_workspace_bytes(rows, features) bytes. */
kiln_status kiln_glu_xatglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                                int64_t rows, int64_t features, float alpha, int32_t order, void* stream);
kiln_status kiln_glu_xatglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                                void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, float alpha,
                                int32_t order, float* dalpha, void* workspace, int64_t workspace_bytes, void* stream);
kiln_status kiln_glu_xgeglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                                int64_t rows, int64_t features, float alpha, int32_t order, void* stream);
kiln_status kiln_glu_xgeglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                                void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, float alpha,
                                int32_t order, float* dalpha, void* workspace, int64_t workspace_bytes, void* stream);
kiln_status kiln_glu_xswiglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                                 int64_t rows, int64_t features, float alpha, int32_t order, void* stream);
kiln_status kiln_glu_xswiglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                                 void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, float alpha,
                                 int32_t order, float* dalpha, void* workspace, int64_t workspace_bytes, void* stream);

/* ------------------------------------------------------------------------------------------
 * Attention family (shared/REFERENCE.md section 4): FlashAttention-2 forward with ALiBi.
 *   out[i] = sum_j softmax_j(softmax_scale * q_i . k_j + bias(i, j)) v_j   per sequence and head
 *   linear ALiBi:    bias = -slope * |i + sk - sq - j|   (i, j indices within the sequence)
 *   geometric ALiBi: bias = -slope * ||p_i - p_j||        (p: per-token positions, f32 [total, 3])
 *   causal: key j is visible from query i iff j <= i + sk - sq (bottom-right aligned).
 *   prefix-LM (causal with prefix_len, int32 [batch] device, or NULL): key j is also visible to
 *   every query when j < prefix_len[b] (query i sees j when both lie in the prefix, or j <= i),
 *   each length clamped to [0, sk]; ignored without causal.
 * q, out: [total_q, heads, head_dim]; k, v: [total_k, heads_k, head_dim], f16 or bf16, 16-byte
 * aligned; heads % heads_k == 0 (query head h reads key/value head h / (heads / heads_k));
 * head_dim 32, 64, 96 or 128. cu_seqlens_q/k: int32 [batch + 1] device prefix sums of the
 * sequence lengths (cu[0] = 0, non-decreasing, cu[batch] = total; zero-length sequences are
 * allowed); max_seqlen_q must be >= every query length (rows past it are not computed). A
 * sequence whose cu_seqlens entries are inconsistent (decreasing, outside [0, total]) is skipped
 * and its rows are left unwritten. slopes: NULL (no bias), f32 [heads] (slopes_per_batch = 0)
 * or [batch, heads] (slopes_per_batch = 1); positions: NULL (linear ALiBi) or f32 [total, 3]
 * (geometric; needs slopes and total_q == total_k: q and k are the same tokens). lse: f32
 * [heads, total_q], the true natural log-sum-exp of each row's scaled, biased scores; a row
 * with no visible key gets out = 0 and lse = -inf.
 * ---------------------------------------------------------------------------------------- */

/** 1 if the attention kernels take this head dimension, else 0. */
int32_t kiln_attention_head_dim_supported(int64_t head_dim);

kiln_status kiln_attention_alibi_fwd(kiln_dtype dtype, const void* q, const void* k, const void* v,
                                     const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k, const float* slopes,
                                     int32_t slopes_per_batch, const float* positions, int64_t batch,
                                     int64_t total_q, int64_t total_k, int64_t heads, int64_t heads_k,
                                     int64_t head_dim, int64_t max_seqlen_q, int32_t causal,
                                     const int32_t* prefix_len, float softmax_scale, void* out, float* lse,
                                     void* stream);

/** Tile variants of the forward, for tuning sweeps (scripts/gpu-run.sh, step sweep-attention):
 * how many a head dimension has (0: none; 64 and 128 have some), and variant `variant`'s name
 * (warps x query rows per warp x keys per tile; NULL out of range). Variant 0 is the
 * configuration kiln_attention_alibi_fwd runs. */
int32_t kiln_attention_fwd_variants(int64_t head_dim);
const char* kiln_attention_fwd_variant_name(int64_t head_dim, int32_t variant);
/** kiln_attention_alibi_fwd through tile variant `variant` of head_dim: bf16 only
 * (KILN_ERROR_INVALID_DTYPE otherwise), no bias or linear ALiBi (positions must be NULL:
 * KILN_ERROR_INVALID_VALUE, as for a variant out of range); the same arguments, checks and
 * results otherwise. */
kiln_status kiln_attention_alibi_fwd_variant(int32_t variant, kiln_dtype dtype, const void* q, const void* k,
                                             const void* v, const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k,
                                             const float* slopes, int32_t slopes_per_batch, const float* positions,
                                             int64_t batch, int64_t total_q, int64_t total_k, int64_t heads,
                                             int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q, int32_t causal,
                                             const int32_t* prefix_len, float softmax_scale, void* out, float* lse,
                                             void* stream);

/** The padded form's lse (kiln::attention::forward_padded): lse [heads, tokens] (f32) gets -inf
 * everywhere, then lse[h, indices[i]] = lse_packed[h, i] for the nnz kept tokens (lse_packed
 * [heads, nnz] f32 from kiln_attention_alibi_fwd on the unpadded tokens, indices [nnz] int32
 * from kiln_padding_unpad_fwd, so distinct; of equal ones, one value lands, unspecified which).
 * An index outside [0, tokens) is skipped. */
kiln_status kiln_attention_lse_pad_fwd(const float* lse_packed, const int32_t* indices, int64_t heads, int64_t nnz,
                                       int64_t tokens, float* lse, void* stream);

/* ----------------------------------------------------------------------------------------
 * Attention backward with ALiBi: dq, dk, dv (and optionally dslopes, dpositions) from the
 * forward's inputs, its out and lse, and dout (the gradient of out). Arguments as
 * kiln_attention_alibi_fwd, plus max_seqlen_k (>= every key length); out, dout, dq: [total_q,
 * heads, head_dim]; dk, dv: [total_k, heads_k, head_dim] (GQA: summed over the query heads that
 * share a kv head), all in dtype. dslopes (optional, needs slopes): f32 of the slopes' shape,
 * sum of dS_ij * d(bias_ij)/d(slope); dpositions (optional, needs positions): f32 [total, 3].
 * Deterministic: no float atomics, bitwise identical results run to run. The workspace of
 * kiln_attention_alibi_bwd_workspace_bytes(total_q, total_k, heads, heads_k) bytes (16-byte
 * aligned) is always needed. Rows that see no key get dq = 0; keys that no query sees get
 * dk = dv = 0.
 * ---------------------------------------------------------------------------------------- */

/** Bytes of workspace kiln_attention_alibi_bwd needs (-1 if the sizes are invalid). */
int64_t kiln_attention_alibi_bwd_workspace_bytes(int64_t total_q, int64_t total_k, int64_t heads, int64_t heads_k);

kiln_status kiln_attention_alibi_bwd(kiln_dtype dtype, const void* q, const void* k, const void* v, const void* out,
                                     const float* lse, const void* dout, const int32_t* cu_seqlens_q,
                                     const int32_t* cu_seqlens_k, const float* slopes, int32_t slopes_per_batch,
                                     const float* positions, int64_t batch, int64_t total_q, int64_t total_k,
                                     int64_t heads, int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q,
                                     int64_t max_seqlen_k, int32_t causal, const int32_t* prefix_len,
                                     float softmax_scale, void* dq, void* dk,
                                     void* dv, float* dslopes, float* dpositions, void* workspace,
                                     int64_t workspace_bytes, void* stream);

/** Tile variants of the backward, for tuning sweeps (scripts/gpu-run.sh, step sweep-attention):
 * how many a head dimension has (0: none; 64 and 128 have some), and variant `variant`'s name
 * (the dq kernel's warps x keys per tile, the dk/dv kernel's warps x queries per step; NULL out
 * of range). Variant 0 is the configuration kiln_attention_alibi_bwd runs. */
int32_t kiln_attention_bwd_variants(int64_t head_dim);
const char* kiln_attention_bwd_variant_name(int64_t head_dim, int32_t variant);
/** kiln_attention_alibi_bwd through tile variant `variant` of head_dim: bf16 only
 * (KILN_ERROR_INVALID_DTYPE otherwise), no bias or linear ALiBi (positions must be NULL:
 * KILN_ERROR_INVALID_VALUE, as for a variant out of range); the same arguments, checks and
 * results otherwise. */
kiln_status kiln_attention_alibi_bwd_variant(int32_t variant, kiln_dtype dtype, const void* q, const void* k,
                                             const void* v, const void* out, const float* lse, const void* dout,
                                             const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k,
                                             const float* slopes, int32_t slopes_per_batch, const float* positions,
                                             int64_t batch, int64_t total_q, int64_t total_k, int64_t heads,
                                             int64_t heads_k, int64_t head_dim, int64_t max_seqlen_q,
                                             int64_t max_seqlen_k, int32_t causal, const int32_t* prefix_len,
                                             float softmax_scale, void* dq, void* dk, void* dv, float* dslopes,
                                             float* dpositions, void* workspace, int64_t workspace_bytes, void* stream);

/* ------------------------------------------------------------------------------------------
 * Equivariant family (e3nn conventions, shared/REFERENCE.md section 5).
 * Spherical harmonics: sh [n, (lmax+1)^2] = Y^0..Y^lmax of vec [n, 3] in e3nn's real basis
 * (y is the polar axis; Y^1 = sqrt(3) (x, y, z) in component normalization), 0 <= lmax <= 4;
 * with normalize != 0 the vector is first divided by its norm (the zero vector maps to 0 and
 * gets a zero gradient). Backward: dvec [n, 3] = sum_d dsh[:, d] * d sh[:, d] / d vec.
 * ---------------------------------------------------------------------------------------- */

/** How each Y^l is scaled. */
typedef enum kiln_sh_normalization {
    /** |Y^l(unit x)|^2 = 2l + 1 (MACE, NequIP). */
    KILN_SH_COMPONENT = 0,
    /** |Y^l(unit x)| = 1: component / sqrt(2l + 1). */
    KILN_SH_NORM = 1,
    /** Unit integral of each (Y^l_m)^2 over the sphere: component / sqrt(4 pi). */
    KILN_SH_INTEGRAL = 2
} kiln_sh_normalization;

kiln_status kiln_equivariant_sh_fwd(kiln_dtype dtype, const void* vec, int64_t n, int32_t lmax,
                                    kiln_sh_normalization normalization, int32_t normalize, void* sh, void* stream);
kiln_status kiln_equivariant_sh_bwd(kiln_dtype dtype, const void* vec, const void* dsh, int64_t n, int32_t lmax,
                                    kiln_sh_normalization normalization, int32_t normalize, void* dvec,
                                    void* stream);

/*
 * Tensor products and the graph convolution. A plan (kiln::equivariant::TpPlan in Rust) is a
 * list of paths, each coupling block (off1, mul1, dim1 = 2 l1 + 1) of an x1 row and block
 * (off2, mul2, dim2) of an x2 row into block (off_out, mul_out, dim_out) of an output row
 * through its Clebsch-Gordan entries cg_ijk[c] = i | j << 8 | k << 16, cg_val[c] for
 * cg_start <= c < cg_start + cg_count:
 *   uvu: out[u, k] += coef * sum_v W[u, v] sum_ij C_ijk x1[u, i] x2[v, j]           (mul_out = mul1)
 *   uvw: out[w, k] += coef * sum_uv W[u, v, w] sum_ij C_ijk x1[u, i] x2[v, j]
 * with W the path's weights from weight_offset in a weight row (row-major (mul1, mul2) or
 * (mul1, mul2, mul_out)). Paths, CG tables and weights are read as given: the caller builds
 * them from a validated plan (paths inside the rows, weight ranges disjoint).
 * Weights are one shared row [weight_numel] (shared_weights != 0) or one row per edge.
 * Every float tensor has the storage dtype; math is f32, or f64 for KILN_DTYPE_F64, which reads
 * the plan's f64 tables (cg_val_f64, coef_f64) in place of cg_val and the paths' coef.
 * ---------------------------------------------------------------------------------------- */

/** How the channels of a path are connected. */
typedef enum kiln_tp_mode {
    KILN_TP_UVU = 0,
    KILN_TP_UVW = 1
} kiln_tp_mode;

/** One path of a plan (device memory). */
typedef struct kiln_tp_path {
    int32_t off1, mul1, dim1;
    int32_t off2, mul2, dim2;
    int32_t off_out, mul_out, dim_out;
    /** A kiln_tp_mode. */
    int32_t mode;
    int32_t weight_offset;
    int32_t cg_start, cg_count;
    float coef;
} kiln_tp_path;

/** A plan: paths and CG tables in device memory, row widths (host values). */
typedef struct kiln_tp_plan {
    const kiln_tp_path* paths;
    int32_t n_paths;
    const int32_t* cg_ijk;
    /** CG values for f32, f16 and bf16 storage (may be NULL for f64). */
    const float* cg_val;
    int64_t dim1, dim2, dim_out, weight_numel;
    /** Appended for KILN_DTYPE_F64 and read only for it (may be NULL otherwise, so a plan
     * built before they existed still runs every other dtype): the CG values in f64, aligned
     * with cg_ijk, and each path's coef in f64 [n_paths]. */
    const double* cg_val_f64;
    const double* coef_f64;
    /** Appended: nonzero certifies the plan is built as kiln::equivariant's TpPlan builds it:
     * every path's table is wigner_3j(l1, l2, l_out) with widths 2l + 1 and l <= 4, and paths
     * that share a block of x1, x2 or the output share its offset, mul and width. The launchers
     * then run the channel-parallel kernels, which carry those CG values compiled in (the
     * tables are not read). 0: the generic kernels read the tables as given, for any widths. */
    int32_t wigner_cg;
} kiln_tp_plan;

/** Bytes of workspace the backward launchers need for f32, f16 or bf16 storage: with shared
 * weights, f32 partial weight gradients of min(edges, 1024) fixed partitions of the edges
 * (summed in order: deterministic); 0 otherwise; -1 if the sizes are invalid. */
int64_t kiln_equivariant_workspace_bytes(int64_t edges, int64_t weight_numel, int32_t shared_weights);
/** The same for any dtype the family takes: the per-edge partials are in the compute type
 * (f64 for KILN_DTYPE_F64); -1 for an invalid dtype or sizes. */
int64_t kiln_equivariant_workspace_bytes_for(kiln_dtype dtype, int64_t edges, int64_t weight_numel,
                                             int32_t shared_weights);

/** Batched tensor product: out [batch, dim_out] = TP(x1 [batch, dim1], x2 [batch, dim2]; w). */
kiln_status kiln_equivariant_tp_fwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x1, const void* x2,
                                    const void* w, int32_t shared_weights, int64_t batch, void* out, void* stream);
/** Its gradients dx1, dx2, dw (dw summed over the batch when shared) given dout. */
kiln_status kiln_equivariant_tp_bwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x1, const void* x2,
                                    const void* w, int32_t shared_weights, const void* dout, int64_t batch,
                                    void* dx1, void* dx2, void* dw, void* workspace, int64_t workspace_bytes,
                                    void* stream);

/**
 * Fused graph convolution, deterministic: out[n] = sum over the edges e with dst_e = n of
 * TP(x[src_e], y[e]; w_e), x [nodes, dim1], y [edges, dim2], out [nodes, dim_out]. The edges
 * are read in receiver order: dst_perm [edges] (edge ids sorted by dst, as
 * kiln_equivariant_graph_build makes it), or NULL when the edges themselves are sorted by dst;
 * dst_ptr [nodes + 1] holds the CSR offsets of each receiver's edges in that order. Each
 * receiver sums its edges in order (no atomics, no per-edge message in memory). Indices are
 * not checked here: 0 <= src < nodes and valid dst_ptr, dst_perm are the caller's
 * (kiln_equivariant_graph_build's layouts always are).
 */
kiln_status kiln_equivariant_conv_fwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y,
                                      const void* w, int32_t shared_weights, const int32_t* src,
                                      const int32_t* dst_ptr, const int32_t* dst_perm, int64_t nodes, int64_t edges,
                                      void* out, void* stream);
/**
 * Its gradients: dx [nodes, dim1] summed by sender in the order of src_perm (the edges
 * stably sorted by src; src_ptr [nodes + 1] its CSR offsets), dy [edges, dim2], dw (per edge,
 * or summed over the edges in edge order when shared: then the workspace is needed).
 */
kiln_status kiln_equivariant_conv_bwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y,
                                      const void* w, int32_t shared_weights, const int32_t* src, const int32_t* dst,
                                      const int32_t* dst_ptr, const int32_t* src_perm, const int32_t* src_ptr,
                                      const void* dout, int64_t nodes, int64_t edges, void* dx, void* dy, void* dw,
                                      void* workspace, int64_t workspace_bytes, void* stream);

/**
 * Double backward (force training: energy -> forces by autograd -> a loss on the forces): the
 * gradients of L = <gdx, dx> + <gdy, dy> + <gdw, dw>, where (dx, dy, dw) is the backward above
 * given dout, with respect to x, y, w and dout: gx [nodes, dim1], gy [edges, dim2], gw (as w)
 * and gdout [nodes, dim_out]. The upstream gradients gdx, gdy, gdw are shaped as x, y and w;
 * any may be NULL, standing for zeros. The product being linear in each operand, the result
 * composes the existing passes: gdout = TP(gdx, y; w) + TP(x, gdy; w) + TP(x, y; gdw), gx = dx with
 * y := gdy plus dx with w := gdw, gy and gw likewise; each given upstream gradient costs one
 * forward and one backward pass (deterministic, as they are). Graph arguments are the
 * backward's plus the forward's dst_ptr; the workspace and its size are the backward's
 * (kiln_equivariant_workspace_bytes_for); outputs must not alias the inputs.
 */
kiln_status kiln_equivariant_conv_bwd2(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y,
                                       const void* w, int32_t shared_weights, const int32_t* src, const int32_t* dst,
                                       const int32_t* dst_ptr, const int32_t* dst_perm, const int32_t* src_perm,
                                       const int32_t* src_ptr, const void* dout, const void* gdx, const void* gdy,
                                       const void* gdw,
                                       int64_t nodes, int64_t edges, void* gx, void* gy, void* gw, void* gdout,
                                       void* workspace, int64_t workspace_bytes, void* stream);
/** The batched tensor product's double backward (kiln_equivariant_conv_bwd2 without a graph). */
kiln_status kiln_equivariant_tp_bwd2(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x1, const void* x2,
                                     const void* w, int32_t shared_weights, const void* dout, const void* gdx1,
                                     const void* gdx2, const void* gdw, int64_t batch, void* gx1, void* gx2, void* gw,
                                     void* gdout, void* workspace, int64_t workspace_bytes, void* stream);

/** Bytes of workspace kiln_equivariant_graph_build needs (8 (nodes + edges)); -1 for sizes
 * outside 0 <= nodes < INT32_MAX, 0 <= edges <= INT32_MAX, or edges without nodes. */
int64_t kiln_equivariant_graph_workspace_bytes(int64_t nodes, int64_t edges);
/**
 * The layouts the convolution reads, built on the device from an edge list src, dst [edges] in
 * any order: checked copies src_out, dst_out [edges] (the convolution reads these), dst_perm
 * [edges] (the edge ids stably sorted by dst: the identity for edges already sorted) with its
 * CSR offsets dst_ptr [nodes + 1], and src_perm [edges] (the edge ids stably sorted by src)
 * with src_ptr [nodes + 1]. No host synchronisation: the indices are checked on the device,
 * into `status` [2]: the data status word (an index outside [0, nodes):
 * KILN_DATA_INDEX_OUT_OF_RANGE), then, as uint32, the lowest 2 * edge + side of such an index
 * (side 0: src, 1: dst; 0xffffffff when none). After a data error the layouts are safe to launch a
 * convolution with (the copied indices are 0 where out of range, the permutations the
 * identity, the segments within [0, edges)), so the word may be read later, once per step;
 * such a result is meaningless. Deterministic (both permutations are the stable order on
 * every run); the work per node grows with the square of its edge count.
 */
kiln_status kiln_equivariant_graph_build(const int32_t* src, const int32_t* dst, int64_t nodes, int64_t edges,
                                         int32_t* src_out, int32_t* dst_out, int32_t* dst_ptr, int32_t* dst_perm,
                                         int32_t* src_perm, int32_t* src_ptr, int32_t* status, void* workspace,
                                         int64_t workspace_bytes, void* stream);

/*
 * Hessian assembly (HIP): per edge e = (src_e -> dst_e) a 9-vector edge_feat [edges, 9] and per
 * atom node_feat [atoms, 9] (l = 0, 1, 2 in e3nn's basis) become 3x3 blocks
 * M = sum_l sum_m wigner_3j(1, 1, l)[:, :, m] h^l_m; H[i, j] += M_e, H[j, i] += M_e^T,
 * H[i, i] += N_i + N_i^T. Molecules are consecutive atoms: atom_mol [atoms] names each atom's
 * molecule, mol_first [molecules + 1] their first atoms, mol_offset [molecules + 1] (int64)
 * where each dense [3n, 3n] row-major Hessian (row 3i + a, column 3j + b) starts in `hessian`.
 * The forward reads the edges by source: src_perm [edges] (edge ids stably sorted by src) with
 * CSR offsets src_ptr [atoms + 1]. Every element of every molecule's Hessian is written
 * (deterministic, no atomics, exactly symmetric). Indices are the caller's to validate (both
 * ends of an edge in one molecule).
 */
kiln_status kiln_equivariant_hessian_fwd(kiln_dtype dtype, const void* edge_feat, const void* node_feat,
                                         const int32_t* dst, const int32_t* src_perm, const int32_t* src_ptr,
                                         const int32_t* atom_mol, const int32_t* mol_first,
                                         const int64_t* mol_offset, int64_t atoms, int64_t edges,
                                         int64_t molecules, void* hessian, void* stream);
/** Gradients of the features given dhessian (laid out as hessian). */
kiln_status kiln_equivariant_hessian_bwd(kiln_dtype dtype, const void* dhessian, const int32_t* src,
                                         const int32_t* dst, const int32_t* atom_mol, const int32_t* mol_first,
                                         const int64_t* mol_offset, int64_t atoms, int64_t edges, int64_t molecules,
                                         void* dedge_feat, void* dnode_feat, void* stream);

/* ------------------------------------------------------------------------------------------
 * Arithmetic units (issue 26; Madsen & Johansen, ICLR 2020; stable-nalu's conventions,
 * kernels/arith.cu). x is [batch, in], W [out, in], z and dz [batch, out], all row-major, in
 * storage dtype f32/f16/bf16 (math in f32). The NMU: z_bo = prod_i (Wc_oi (x_bi - 1) + 1),
 * Wc = clamp(W, eps, 1), 0 <= eps <= 1 (KILN_ERROR_INVALID_VALUE otherwise). Sizes: batch <
 * 2^31, in and out at most 65535 * 64 (KILN_ERROR_INVALID_SIZE otherwise).
 * ---------------------------------------------------------------------------------------- */

/** Bytes of workspace kiln_arith_nmu_bwd needs for dW (0 for most shapes: the batch is split
 * into fixed partitions only when (out, in) has few 64 x 64 tiles); -1 for invalid sizes. */
int64_t kiln_arith_nmu_workspace_bytes(int64_t batch, int64_t in, int64_t out);

/**
 * NMU forward: z. With prod and zeros (both [batch, out], or both NULL) it also saves what the
 * backward needs: the product of the nonzero terms (f32) and how many terms are exactly zero
 * (int32). No [batch, in, out] buffer, no host synchronisation.
 */
kiln_status kiln_arith_nmu_fwd(kiln_dtype dtype, const void* x, const void* w, int64_t batch, int64_t in,
                               int64_t out, float eps, void* z, float* prod, int32_t* zeros, void* stream);

/**
 * NMU backward from the forward's prod and zeros: dx [batch, in] and dW [out, in] (either may
 * be NULL: not wanted); dW is 0 where W lies outside [eps, 1] (clamp's gradient, bounds
 * included). Deterministic: dW sums fixed partitions of the batch in order (workspace of
 * kiln_arith_nmu_workspace_bytes).
 */
kiln_status kiln_arith_nmu_bwd(kiln_dtype dtype, const void* x, const void* w, const void* dz, const float* prod,
                               const int32_t* zeros, int64_t batch, int64_t in, int64_t out, float eps, void* dx,
                               void* dw, void* workspace, int64_t workspace_bytes, void* stream);

/** Which unit's regularisers: the NAU's are about {-1, 0, 1} and [-1, 1], the NMU's about
 * {0, 1} and [0, 1]. */
typedef enum kiln_arith_unit {
    KILN_ARITH_NAU = 0,
    KILN_ARITH_NMU = 1
} kiln_arith_unit;

/** The regularisers' shape: LINEAR is the paper's (|.| and relu), SQUARED the code's default
 * (squares and relu^2). */
typedef enum kiln_arith_reg_shape {
    KILN_ARITH_REG_LINEAR = 0,
    KILN_ARITH_REG_SQUARED = 1
} kiln_arith_reg_shape;

/** Bytes of workspace kiln_arith_reg_fwd needs for 1 <= n <= 2^52 weights (-1 otherwise). */
int64_t kiln_arith_reg_workspace_bytes(int64_t n);

/**
 * The regularisers of n weights w (1 <= n <= 2^52, any layout; storage f32/f16/bf16): the means R_sparse
 * and R_oob and the sparsity error max min(|w|, |1 - |w||), each one f32 on the device (any may
 * be NULL: not wanted). Deterministic (fixed partitions summed in order). An unknown unit or
 * shape is KILN_ERROR_INVALID_VALUE.
 */
kiln_status kiln_arith_reg_fwd(kiln_dtype dtype, kiln_arith_unit unit, kiln_arith_reg_shape shape, const void* w,
                               int64_t n, float* sparse, float* oob, float* sparsity_error, void* workspace,
                               int64_t workspace_bytes, void* stream);

/** dw, the gradient of dsparse * R_sparse + doob * R_oob (dsparse, doob: one f32 each on the
 * device), with torch's conventions at the kinks (|.|'(0) = 0, relu'(0) = 0, a tie of min
 * halves). */
kiln_status kiln_arith_reg_bwd(kiln_dtype dtype, kiln_arith_unit unit, kiln_arith_reg_shape shape, const void* w,
                               int64_t n, const float* dsparse, const float* doob, void* dw, void* stream);

/* The NAU: z = x Wc^T, Wc = clamp(W, -1, 1), as library GEMMs around two weight passes (kiln's
 * Rust API runs the GEMMs in cuBLASLt with IEEE f32 math; TF32 would round x by 2^-11, far above
 * the success threshold's errors):
 *   forward:  kiln_arith_nau_weights (Wc, and the regularisers in the same pass), z = x Wc^T;
 *   backward: dx = dz Wc, dw = dz^T x (GEMMs), then kiln_arith_nau_dw on dw. */

/**
 * The NAU forward's weight pass over n weights (0 <= n <= 2^52): wc = clamp(w, -1, 1) (NaN
 * kept). With any of sparse, oob, sparsity_error given, the same pass computes the NAU's
 * regularisers in `shape` as kiln_arith_reg_fwd does (n >= 1, workspace of
 * kiln_arith_reg_workspace_bytes(n)); otherwise shape and workspace are not read.
 */
kiln_status kiln_arith_nau_weights(kiln_dtype dtype, const void* w, int64_t n, void* wc, kiln_arith_reg_shape shape,
                                   float* sparse, float* oob, float* sparsity_error, void* workspace,
                                   int64_t workspace_bytes, void* stream);

/**
 * The NAU backward's weight pass, in place: dw holds dz^T x; it becomes 0 where w lies outside
 * [-1, 1] (clamp's gradient, bounds included), plus the gradient of dsparse * R_sparse +
 * doob * R_oob in `shape` when dsparse and doob are given (both or neither: NULL alone is
 * KILN_ERROR_NULL_POINTER; one f32 each on the device).
 */
kiln_status kiln_arith_nau_dw(kiln_dtype dtype, const void* w, int64_t n, void* dw, kiln_arith_reg_shape shape,
                              const float* dsparse, const float* doob, void* stream);

/* The NALU (stable-nalu's defaults: one NAC weight for both paths): W = tanh(W_hat) sigmoid(M_hat),
 * a = x W^T, m = exp(log(|x| + eps) W^T), g = sigmoid(x G^T + b), y = g a + (1 - g) m; x [batch, in],
 * W_hat, M_hat, G [out, in], b [out], y [batch, out]. The three products are the caller's GEMMs,
 * in f32 (kiln's Rust API: cuBLASLt, IEEE f32); these are the elementwise passes around them
 * (kernels/arith_nalu.cu), storage f32/f16/bf16, every intermediate f32, 0 < eps <= 1:
 *   forward:  nalu_weights (W, and G in f32), nalu_log (log(|x| + eps), and x in f32),
 *             GEMMs a = x W^T, lm = log_x W^T, gl = x G^T, then nalu_combine_fwd;
 *   backward: the forward's passes and GEMMs again, nalu_combine_bwd (da, dlm, dgl),
 *             GEMMs dsum = da W + dgl G, dlog = dlm W, dW = da^T x + dlm^T log_x, dG = dgl^T x,
 *             db = column sums of dgl, then nalu_dx and nalu_dweights. */

/** W = tanh(w_hat) sigmoid(m_hat) (f32) over n entries; with g32, G converted to f32 too. */
kiln_status kiln_arith_nalu_weights(kiln_dtype dtype, const void* w_hat, const void* m_hat, const void* g, int64_t n,
                                    float* w, float* g32, void* stream);
/** log(|x| + eps) (f32) over n entries; with x32, x converted to f32 too. */
kiln_status kiln_arith_nalu_log(kiln_dtype dtype, const void* x, int64_t n, float eps, float* log_x, float* x32,
                                void* stream);
/** y [batch, out] = g a + (1 - g) exp(lm), g = sigmoid(gl + bias[o]); a, lm, gl f32 [batch, out]. */
kiln_status kiln_arith_nalu_combine_fwd(kiln_dtype dtype, const float* a, const float* lm, const float* gl,
                                        const void* bias, int64_t batch, int64_t out, void* y, void* stream);
/** The combine's gradients (f32 [batch, out]): da = g dy, dlm = (1 - g) m dy, dgl = (a - m) g (1 - g) dy. */
kiln_status kiln_arith_nalu_combine_bwd(kiln_dtype dtype, const float* a, const float* lm, const float* gl,
                                        const void* bias, const void* dy, int64_t batch, int64_t out, float* da,
                                        float* dlm, float* dgl, void* stream);
/** dx = dsum + dlog sign(x) / (|x| + eps) over n entries (dsum, dlog f32). */
kiln_status kiln_arith_nalu_dx(kiln_dtype dtype, const void* x, int64_t n, float eps, const float* dsum,
                               const float* dlog, void* dx, void* stream);
/** From dW (f32, n = out * in entries): dw_hat = dW sigmoid(m_hat) (1 - tanh^2 w_hat), dm_hat = dW tanh(w_hat)
 * sigmoid(m_hat) (1 - sigmoid(m_hat)); dg = dg32 and dbias = dbias32 ([out]) in the storage dtype. */
kiln_status kiln_arith_nalu_dweights(kiln_dtype dtype, const void* w_hat, const void* m_hat, const float* dw,
                                     const float* dg32, const float* dbias32, int64_t n, int64_t out, void* dw_hat,
                                     void* dm_hat, void* dg, void* dbias, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */

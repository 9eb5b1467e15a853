// Storage dtypes (f32, f16, bf16): conversion to and from the f32 that all kernel math uses,
// and the host-side mapping from kiln_dtype to a C++ storage type. f64 storage (the
// equivariant family only) has its own validation and dispatch below, so a family that does
// not name it keeps rejecting it; its math type is in compute.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include "kiln.h"

namespace kiln {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round-to-nearest-even, the rounding the CPU reference (half crate) uses.
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Names a storage type without constructing a value of it.
template <typename T>
struct StorageTag {
    using type = T;
};

// The value arrives through the C ABI and may be any int: compare as int, not as the enum.
inline bool valid_dtype(kiln_dtype dtype) {
    const int d = static_cast<int>(dtype);
    return d == KILN_DTYPE_F32 || d == KILN_DTYPE_F16 || d == KILN_DTYPE_BF16;
}

// Bytes per element of a valid dtype (f64 included, for the families that take it).
inline int64_t storage_bytes(kiln_dtype dtype) {
    switch (static_cast<int>(dtype)) {
        case KILN_DTYPE_F64: return 8;
        case KILN_DTYPE_F32: return 4;
        default: return 2;
    }
}

// Calls f(StorageTag<T>{}) with the storage type of dtype; INVALID_DTYPE for anything else.
template <typename F>
kiln_status with_storage_type(kiln_dtype dtype, F&& f) {
    switch (static_cast<int>(dtype)) {
        case KILN_DTYPE_F32: return f(StorageTag<float>{});
        case KILN_DTYPE_F16: return f(StorageTag<__half>{});
        case KILN_DTYPE_BF16: return f(StorageTag<__nv_bfloat16>{});
        default: return KILN_ERROR_INVALID_DTYPE;
    }
}

// valid_dtype, or f64: for the families with f64 kernels (equivariant).
inline bool valid_dtype_or_f64(kiln_dtype dtype) {
    return valid_dtype(dtype) || static_cast<int>(dtype) == KILN_DTYPE_F64;
}

// with_storage_type, plus f64 storage (double): for the families with f64 kernels.
template <typename F>
kiln_status with_storage_type_or_f64(kiln_dtype dtype, F&& f) {
    if (static_cast<int>(dtype) == KILN_DTYPE_F64) return f(StorageTag<double>{});
    return with_storage_type(dtype, std::forward<F>(f));
}

}  // namespace kiln

// The type kernel math runs in for each storage type: f32 for f32, f16 and bf16 storage
// (DESIGN.md: math in f32 whatever the 32- or 16-bit storage), f64 for f64 storage (the
// equivariant family's f64 kernels, whose checks need f64 end to end). Kernels written on
// compute_t<T> keep their f32 instructions unchanged for the 32- and 16-bit storages.
#pragma once

#include <cmath>
#include <type_traits>

#include "dtype.cuh"

namespace kiln {

template <typename T>
struct ComputeOf {
    using type = float;
};
template <>
struct ComputeOf<double> {
    using type = double;
};

// The compute type of storage T.
template <typename T>
using compute_t = typename ComputeOf<T>::type;

// A stored value in its compute type.
__device__ __forceinline__ float to_compute(float v) { return v; }
__device__ __forceinline__ float to_compute(__half v) { return to_float(v); }
__device__ __forceinline__ float to_compute(__nv_bfloat16 v) { return to_float(v); }
__device__ __forceinline__ double to_compute(double v) { return v; }

// A compute-type value rounded to storage T (round to nearest even, as from_float).
template <typename T>
__device__ __forceinline__ T from_compute(compute_t<T> v) {
    if constexpr (std::is_same_v<T, double>) {
        return v;
    } else {
        return from_float<T>(v);
    }
}

// A constant in compute type C from two spellings: f32 kernels keep the float literal they
// were written with (bit-identical results), f64 kernels get the constant to 17 digits (a
// float literal widened would put f32 error into every f64 result).
template <typename C>
__host__ __device__ constexpr C precision_constant(float f32, double f64) {
    if constexpr (std::is_same_v<C, double>) {
        return f64;
    } else {
        return f32;
    }
}

// Correctly rounded square roots in either compute type.
__device__ __forceinline__ float compute_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double compute_sqrt(double v) { return sqrt(v); }

}  // namespace kiln

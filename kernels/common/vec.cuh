// 16-byte vector access: kW consecutive elements moved by one load or store instruction
// (LDG.128 / STG.128), the widest a thread can issue, so a warp moves 512 contiguous bytes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace kiln {

constexpr int kVecBytes = 16;

// Elements of T in one 16-byte access: 4 for f32, 8 for f16/bf16.
template <typename T>
constexpr int kVecWidth = kVecBytes / static_cast<int>(sizeof(T));

// kW elements of T; kW is kVecWidth<T> (the vector path), 1 (the scalar path) or, for GLU's
// 4-byte path, 2 elements of a 16-bit type.
template <typename T, int kW>
struct alignas(sizeof(T) * kW) Pack {
    T v[kW];
};

// p must be aligned to sizeof(Pack<T, kW>). Not __ldg: outputs may alias the input.
template <typename T, int kW>
__device__ __forceinline__ Pack<T, kW> load_pack(const T* p) {
    Pack<T, kW> out;
    if constexpr (sizeof(Pack<T, kW>) == kVecBytes) {
        const uint4 raw = *reinterpret_cast<const uint4*>(p);
        memcpy(&out, &raw, kVecBytes);
    } else if constexpr (sizeof(Pack<T, kW>) == 4 && kW > 1) {
        const uint32_t raw = *reinterpret_cast<const uint32_t*>(p);
        memcpy(&out, &raw, 4);
    } else {
        static_assert(kW == 1, "a pack is one element, 4 bytes or 16 bytes");
        out.v[0] = *p;
    }
    return out;
}

template <typename T, int kW>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kW>& in) {
    if constexpr (sizeof(Pack<T, kW>) == kVecBytes) {
        uint4 raw;
        memcpy(&raw, &in, kVecBytes);
        *reinterpret_cast<uint4*>(p) = raw;
    } else if constexpr (sizeof(Pack<T, kW>) == 4 && kW > 1) {
        uint32_t raw;
        memcpy(&raw, &in, 4);
        *reinterpret_cast<uint32_t*>(p) = raw;
    } else {
        static_assert(kW == 1, "a pack is one element, 4 bytes or 16 bytes");
        *p = in.v[0];
    }
}

// Host side: is p a multiple of `bytes`? (NULL counts as aligned; null checks come first.)
inline bool is_aligned(const void* p, int64_t bytes) {
    return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

}  // namespace kiln

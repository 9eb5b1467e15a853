// Tile variants of a kernel for the GPU sweep (kiln.h's kiln_attention_{fwd,bwd}_variants): one
// list per head dimension that has them (128 and 64), none for the others. Host code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln {

// How many variants head dimension `head_dim` has.
template <typename V, size_t kN128, size_t kN64>
int32_t variant_count(const V (&)[kN128], const V (&)[kN64], int64_t head_dim) {
    return head_dim == 128 ? int32_t(kN128) : head_dim == 64 ? int32_t(kN64) : 0;
}

// Variant `variant` of head dimension `head_dim`, or nullptr out of range.
template <typename V, size_t kN128, size_t kN64>
const V* variant_of(const V (&d128)[kN128], const V (&d64)[kN64], int64_t head_dim, int32_t variant) {
    if (variant < 0 || variant >= variant_count(d128, d64, head_dim)) return nullptr;
    return head_dim == 128 ? &d128[variant] : &d64[variant];
}

}  // namespace kiln

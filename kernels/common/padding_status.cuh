// The device side of the kiln_data_status word (kiln.h): kernels that find bad data lower the
// word to their code, and the lowest nonzero code wins whatever the order of the reports.
// KILN_DATA_OK (0) means "no error", not "lowest code", so a plain atomicMin would not do.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common/reduce.cuh"
#include "kiln.h"

namespace kiln {

// The more urgent of two codes (the lower nonzero one); OK when both are OK.
__device__ __forceinline__ int32_t lower_code(int32_t a, int32_t b) {
    if (a == KILN_DATA_OK) return b;
    if (b == KILN_DATA_OK) return a;
    return a < b ? a : b;
}

// *status = lower_code(*status, code), atomically (code != OK). A CAS loop: the word only
// ever goes down, so each failed try saw a change and the loop ends after a few tries.
__device__ __forceinline__ void report_data_error(int32_t* status, int32_t code) {
    int32_t seen = KILN_DATA_OK;
    for (;;) {
        const int32_t before = atomicCAS(status, seen, code);
        if (before == seen) return;                                 // stored
        if (before != KILN_DATA_OK && before <= code) return;       // as low already
        seen = before;
    }
}

// Reports the lowest nonzero code among the 32 lanes of a warp with one atomic (lane 0); all
// lanes must call it. code == OK reports nothing.
__device__ __forceinline__ void report_warp_lowest(int32_t* status, int32_t code) {
    const unsigned key = code == KILN_DATA_OK ? UINT_MAX : static_cast<unsigned>(code);
    const unsigned lowest = __reduce_min_sync(kFullWarp, key);
    if (lowest != UINT_MAX && threadIdx.x % kWarpSize == 0) report_data_error(status, static_cast<int32_t>(lowest));
}

}  // namespace kiln

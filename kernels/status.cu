// Library-wide entry points of the C ABI: status strings, the ABI version and the last CUDA
// error of this thread (kernels/include/kiln.h).

#include <cstdint>

#include "common/launch.cuh"
#include "kiln.h"

extern "C" {

const char* kiln_status_string(kiln_status status) {
    switch (static_cast<int>(status)) {
        case KILN_SUCCESS: return "success";
        case KILN_ERROR_NULL_POINTER: return "a required pointer is NULL";
        case KILN_ERROR_INVALID_SIZE: return "a size is negative, or sizes disagree (n not a multiple of channels)";
        case KILN_ERROR_INVALID_DTYPE: return "the dtype is not one of kiln_dtype";
        case KILN_ERROR_INVALID_VALUE: return "a scalar parameter is outside its domain";
        case KILN_ERROR_MISALIGNED: return "a pointer is not aligned to its element size";
        case KILN_ERROR_WORKSPACE_TOO_SMALL: return "the workspace is smaller than the *_workspace_bytes query asked for";
        case KILN_ERROR_CUDA: return "the CUDA runtime reported an error when launching; see kiln_last_cuda_error()";
        case KILN_ERROR_CUDA_PENDING:
            return "a CUDA error from earlier work (not kiln's) was pending, so nothing was launched; the error is "
                   "left pending for its owner; see kiln_last_cuda_error()";
        default: return "unknown kiln_status";
    }
}

int32_t kiln_version(void) { return KILN_ABI_VERSION; }

int32_t kiln_last_cuda_error(void) { return static_cast<int32_t>(kiln::t_last_cuda_error); }

}  // extern "C"

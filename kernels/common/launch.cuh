// How a launcher reports a failed kernel launch through the C ABI: KILN_ERROR_CUDA, with the
// cudaError_t kept per host thread for kiln_last_cuda_error().
#pragma once

#include <cuda_runtime.h>

#include "kiln.h"

namespace kiln {

// The error of the last launch on this thread that failed; never reset by a success.
inline thread_local cudaError_t t_last_cuda_error = cudaSuccess;

// Call right after each <<<...>>>: a bad configuration is reported here, not by the launch.
inline kiln_status launch_status() {
    const cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return KILN_SUCCESS;
    t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

}  // namespace kiln

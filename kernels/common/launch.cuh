// How kernels are launched and how a launcher reports a failed launch through the C ABI.
//
// KILN_LAUNCH(grid, block, smem, stream, kernel<T, ...>)(args...) is the one way to launch a
// kernel: `kernel<<<grid, block, smem, stream>>>(args...)` under nvcc (the PTX is identical), and
// the emulator's typed launcher in emulated builds (kernels/emu/), which runs the same source on
// the CPU. A grid or block with a comma must be parenthesised or named (dim3 grid(x, y)).
#pragma once

#include <cuda_runtime.h>

#include "kiln.h"

#ifdef KILN_EMU
#define KILN_LAUNCH(grid, block, smem, stream, ...) \
    ::kiln_emu::make_launcher(grid, block, smem, stream, &__VA_ARGS__, __FILE__, __LINE__, #__VA_ARGS__)
#else
#define KILN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

namespace kiln {

// The launch's dynamic shared memory (the `smem` bytes of KILN_LAUNCH), 16-byte aligned. Kernels
// use this instead of their own `extern __shared__` array, so that the emulator can give each
// launch a buffer of exactly that size and check accesses against it.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
#ifdef KILN_EMU
    return static_cast<T*>(::kiln_emu::dynamic_shared());
#else
    extern __shared__ __align__(16) unsigned char kiln_dynamic_shared[];
    return reinterpret_cast<T*>(kiln_dynamic_shared);
#endif
}

// The error of the last launch on this thread that failed; never reset by a success.
inline thread_local cudaError_t t_last_cuda_error = cudaSuccess;

// Call right after each KILN_LAUNCH: a bad configuration is reported here, not by the launch.
inline kiln_status launch_status() {
    const cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return KILN_SUCCESS;
    t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

}  // namespace kiln

// How kernels are launched and how a launcher reports a failed launch through the C ABI.
//
// KILN_LAUNCH(grid, block, smem, stream, kernel<T, ...>)(args...) is the one way to launch a
// kernel: `kernel<<<grid, block, smem, stream>>>(args...)` under nvcc (the PTX is identical), and
// the emulator's typed launcher in emulated builds (kernels/emu/), which runs the same source on
// the CPU. A grid or block with a comma must be parenthesised or named (dim3 grid(x, y)).
#pragma once

#include <cuda_runtime.h>

#include "kiln.h"

//
// Before launching it peeks at the thread's CUDA error: one left pending by earlier work (another
// library's failed launch) is not kiln's to report or to consume, so nothing is launched and
// launch_status() returns KILN_ERROR_CUDA_PENDING with the error left in place. The `for` runs
// the launch statement at most once and, unlike an `if`, cannot capture a caller's `else`.
// A launch with more than 48 KiB of dynamic shared memory opts its kernel in first
// (allow_dynamic_shared); if the device refuses, nothing is launched and launch_status() reports
// the refusal.
#ifdef KILN_EMU
#define KILN_LAUNCH(grid, block, smem, stream, ...)                                                  \
    for (bool kiln_launch_ = ::kiln::nothing_pending() && ::kiln::allow_dynamic_shared(&__VA_ARGS__, smem); \
         kiln_launch_; kiln_launch_ = false)                                                          \
    ::kiln_emu::make_launcher(grid, block, smem, stream, &__VA_ARGS__, __FILE__, __LINE__, #__VA_ARGS__, \
                              ::kiln_emu::kernel_signature<&__VA_ARGS__>())
#else
#define KILN_LAUNCH(grid, block, smem, stream, ...)                                                  \
    for (bool kiln_launch_ = ::kiln::nothing_pending() && ::kiln::allow_dynamic_shared(&__VA_ARGS__, smem); \
         kiln_launch_; kiln_launch_ = false)                                                          \
    __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

namespace kiln {

// The error found pending by the last KILN_LAUNCH on this thread (cudaSuccess: none).
inline thread_local cudaError_t t_pending_cuda_error = cudaSuccess;

// Errors that say the runtime cannot work at all here (no driver, no device): not another
// library's leftovers but the state every launch, kiln's included, meets. The launch goes ahead,
// fails with the same error, and that error is kiln's to report (KILN_ERROR_CUDA).
inline bool unusable_runtime(cudaError_t err) {
    switch (err) {
        case cudaErrorInsufficientDriver:
        case cudaErrorNoDevice:
        case cudaErrorInitializationError:
        case cudaErrorSystemDriverMismatch:
        case cudaErrorSystemNotReady:
        case cudaErrorCompatNotSupportedOnDevice:
        case cudaErrorStubLibrary:
        case cudaErrorDevicesUnavailable: return true;
        default: return false;
    }
}

// Dynamic shared memory every kernel may use without opting in.
constexpr size_t kDefaultDynamicShared = size_t(48) << 10;

// Opts `kernel` into `smem` bytes of dynamic shared memory when that is above the default
// (cudaFuncAttributeMaxDynamicSharedMemorySize, set on every such launch: the attribute belongs
// to the current device's context, and setting it costs a driver call of about a microsecond).
// False when the device refuses (more than it has): the error is then the thread's last error.
template <typename Kernel>
inline bool allow_dynamic_shared(Kernel* kernel, size_t smem) {
    if (smem <= kDefaultDynamicShared) return true;
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(smem)) == cudaSuccess;
}

// True when no CUDA error is pending on this thread (KILN_LAUNCH then launches).
inline bool nothing_pending() {
    const cudaError_t err = cudaPeekAtLastError();
    t_pending_cuda_error = unusable_runtime(err) ? cudaSuccess : err;
    return t_pending_cuda_error == cudaSuccess;
}

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
// Nothing was pending before the launch, so an error now is the launch's own: take it.
inline kiln_status launch_status() {
    if (t_pending_cuda_error != cudaSuccess) {
        t_last_cuda_error = t_pending_cuda_error;
        t_pending_cuda_error = cudaSuccess;
        return KILN_ERROR_CUDA_PENDING;
    }
    const cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return KILN_SUCCESS;
    t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

}  // namespace kiln

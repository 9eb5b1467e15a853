// kiln's CUDA emulator: the shadow of <cuda_runtime.h> (kernels/emu/include comes first on the
// include path of emulated builds). It includes the real host header of the pinned CUDA wheels,
// which compiles host-only with the host compiler (dim3, cudaError_t, cudaStream_t, and the
// working host halves of __half / __nv_bfloat16), and then the emulation of the device side.
#pragma once

#include_next <cuda_runtime.h>

#include "kiln_emu_device.h"

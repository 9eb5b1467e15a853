// kiln's CUDA emulator, the device side: what a kernel source needs from CUDA C++ when the host
// compiler builds it. Included by the shadow cuda_runtime.h after the real host header.
//
// - Qualifiers compile away; a __shared__ variable is a function-local static, one instance for
//   the block that is running (blocks run one after another; launches are serialised).
// - threadIdx/blockIdx/blockDim/gridDim ask the runtime for the running fiber's coordinates.
// - Barriers, warp collectives and atomics call into the runtime (kernels/emu/runtime.cpp), which
//   is not instrumented: a collective's own bookkeeping is never mistaken for a kernel access.
//   Each is an object-like macro over kiln_emu::Site so that findings name the kernel's line.
// - Kernels are launched with KILN_LAUNCH (kernels/common/launch.cuh), which expands to
//   kiln_emu::make_launcher here and to <<<...>>> under nvcc.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kiln_emu.h"

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __forceinline__
#undef __noinline__
#define __global__
#define __device__
#define __host__
#define __constant__ static const
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// One instance per block: the static storage of the emulated library, which the checker treats
// as shared memory (it is what kernels touch that is neither a fiber stack nor an allocation).
#define __shared__ static

namespace kiln_emu {

constexpr int kWarpSize = 32;

// The running CUDA thread's coordinates (the scheduler's fiber).
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
// The launch's dynamic shared memory (its size is the launch's smem argument).
void* dynamic_shared();

// Warp collectives: the runtime rendezvous of the lanes named in `mask`.
enum class WarpOp : int {
    kSync,
    kShfl,
    kShflUp,
    kShflDown,
    kShflXor,
    kBallot,
    kAny,
    kAll,
    kAdd,
    kMinU,
    kMinI,
    kMaxU,
    kMaxI,
    kAnd,
    kOr,
    kXor,
    kGather,
};
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
// The building block of warp-wide instructions (the emulated bodies of mma.sync, ldmatrix in
// common/ptx.cuh): a rendezvous of the lanes in `mask` after which every one of them holds
// all[l * bytes .. (l + 1) * bytes) = lane l's `mine` for each lane l of the mask (other slots
// are left as they were). bytes <= 256.
// The operand rules of the PTX instructions kiln wraps (common/ptx.cuh), enforced by their
// emulated bodies: `p` aligned to `bytes` (always: a GPU faults) and, in checked mode, in the
// state space the instruction names. A finding names `rule` and the kernel's line.
enum class PtxSpace { kShared, kGlobal };
void ptx_operand(const void* p, size_t bytes, PtxSpace space, const char* rule);
// A cp.async into `dst` was issued: until a wait_group completes it (the write that lands it),
// a read of those bytes reads a stale value and is a finding (checked mode).
void cp_async_in_flight(void* dst, size_t bytes);
// The latency model's view of cp.async (kernels/emu/latency.cpp): a copy issued, a group
// committed, a wait_group keeping `kept` groups in flight, and the copy itself running at the
// wait (its accesses are not new requests).
void cp_async_issue_timed(const void* src, bool valid);
void cp_async_commit_timed();
void cp_async_wait_timed(int kept);
void cp_async_performing(bool on);

// __threadfence: this block's writes so far are ordered before its next atomic (see Launch).
void thread_fence();

void warp_allgather(unsigned mask, const void* mine, size_t bytes, void* all, const char* file, int line);
unsigned active_mask();

// Block barriers: op 0 plain, 1 count, 2 and, 3 or; returns the reduced predicate.
enum class BarrierOp : int { kPlain, kCount, kAnd, kOr };
int block_barrier(BarrierOp op, int pred, const char* file, int line);

// Atomics, done by the runtime so that the checker sees them as atomic accesses.
enum class AtomicType : int { kI32, kU32, kI64, kU64, kF32, kF64 };
enum class AtomicOp : int { kAdd, kExch, kMin, kMax, kCas, kAnd, kOr, kXor };
uint64_t atomic_rmw(void* addr, AtomicType type, AtomicOp op, uint64_t operand, uint64_t compare, const char* file,
                    int line);

template <typename T>
constexpr AtomicType atomic_type() {
    if constexpr (std::is_same_v<T, int>)
        return AtomicType::kI32;
    else if constexpr (std::is_same_v<T, unsigned>)
        return AtomicType::kU32;
    else if constexpr (std::is_same_v<T, long long>)
        return AtomicType::kI64;
    else if constexpr (std::is_same_v<T, unsigned long long>)
        return AtomicType::kU64;
    else if constexpr (std::is_same_v<T, float>)
        return AtomicType::kF32;
    else {
        static_assert(std::is_same_v<T, double>, "atomics on int, unsigned, (unsigned) long long, float, double");
        return AtomicType::kF64;
    }
}

template <typename T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp collectives move at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

// The call site of a barrier, collective or atomic: `__syncthreads()` is
// `kiln_emu::Site{__FILE__, __LINE__}.syncthreads()`.
struct Site {
    const char* file;
    int line;

    void syncthreads() const { block_barrier(BarrierOp::kPlain, 0, file, line); }
    int syncthreads_count(int p) const { return block_barrier(BarrierOp::kCount, p != 0, file, line); }
    int syncthreads_and(int p) const { return block_barrier(BarrierOp::kAnd, p != 0, file, line); }
    int syncthreads_or(int p) const { return block_barrier(BarrierOp::kOr, p != 0, file, line); }
    void syncwarp(unsigned mask = 0xffffffffu) const {
        warp_collective(WarpOp::kSync, mask, 0, 0, kWarpSize, file, line);
    }

    template <typename T>
    T shfl(unsigned mask, T v, int src, int width = kWarpSize) const {
        return from_bits<T>(warp_collective(WarpOp::kShfl, mask, to_bits(v), src, width, file, line));
    }
    template <typename T>
    T shfl_up(unsigned mask, T v, unsigned delta, int width = kWarpSize) const {
        return from_bits<T>(warp_collective(WarpOp::kShflUp, mask, to_bits(v), int(delta), width, file, line));
    }
    template <typename T>
    T shfl_down(unsigned mask, T v, unsigned delta, int width = kWarpSize) const {
        return from_bits<T>(warp_collective(WarpOp::kShflDown, mask, to_bits(v), int(delta), width, file, line));
    }
    template <typename T>
    T shfl_xor(unsigned mask, T v, int lane_mask, int width = kWarpSize) const {
        return from_bits<T>(warp_collective(WarpOp::kShflXor, mask, to_bits(v), lane_mask, width, file, line));
    }
    unsigned ballot(unsigned mask, int p) const {
        return unsigned(warp_collective(WarpOp::kBallot, mask, p != 0, 0, kWarpSize, file, line));
    }
    int any(unsigned mask, int p) const {
        return int(warp_collective(WarpOp::kAny, mask, p != 0, 0, kWarpSize, file, line));
    }
    int all(unsigned mask, int p) const {
        return int(warp_collective(WarpOp::kAll, mask, p != 0, 0, kWarpSize, file, line));
    }

    unsigned reduce_add(unsigned mask, unsigned v) const {
        return unsigned(warp_collective(WarpOp::kAdd, mask, v, 0, kWarpSize, file, line));
    }
    int reduce_add(unsigned mask, int v) const { return int(reduce_add(mask, unsigned(v))); }
    unsigned reduce_min(unsigned mask, unsigned v) const {
        return unsigned(warp_collective(WarpOp::kMinU, mask, v, 0, kWarpSize, file, line));
    }
    int reduce_min(unsigned mask, int v) const {
        return int(warp_collective(WarpOp::kMinI, mask, unsigned(v), 0, kWarpSize, file, line));
    }
    unsigned reduce_max(unsigned mask, unsigned v) const {
        return unsigned(warp_collective(WarpOp::kMaxU, mask, v, 0, kWarpSize, file, line));
    }
    int reduce_max(unsigned mask, int v) const {
        return int(warp_collective(WarpOp::kMaxI, mask, unsigned(v), 0, kWarpSize, file, line));
    }
    unsigned reduce_and(unsigned mask, unsigned v) const {
        return unsigned(warp_collective(WarpOp::kAnd, mask, v, 0, kWarpSize, file, line));
    }
    unsigned reduce_or(unsigned mask, unsigned v) const {
        return unsigned(warp_collective(WarpOp::kOr, mask, v, 0, kWarpSize, file, line));
    }
    unsigned reduce_xor(unsigned mask, unsigned v) const {
        return unsigned(warp_collective(WarpOp::kXor, mask, v, 0, kWarpSize, file, line));
    }

    template <typename T>
    T atomic(T* p, AtomicOp op, T v, T compare = T()) const {
        return from_bits<T>(atomic_rmw(p, atomic_type<T>(), op, to_bits(v), to_bits(compare), file, line));
    }
    template <typename T>
    T atomic_add(T* p, T v) const {
        return atomic(p, AtomicOp::kAdd, v);
    }
    template <typename T>
    T atomic_sub(T* p, T v) const {
        return atomic(p, AtomicOp::kAdd, T(0) - v);
    }
    template <typename T>
    T atomic_exch(T* p, T v) const {
        return atomic(p, AtomicOp::kExch, v);
    }
    template <typename T>
    T atomic_min(T* p, T v) const {
        return atomic(p, AtomicOp::kMin, v);
    }
    template <typename T>
    T atomic_max(T* p, T v) const {
        return atomic(p, AtomicOp::kMax, v);
    }
    template <typename T>
    T atomic_cas(T* p, T compare, T v) const {
        return atomic(p, AtomicOp::kCas, v, compare);
    }
    template <typename T>
    T atomic_and(T* p, T v) const {
        return atomic(p, AtomicOp::kAnd, v);
    }
    template <typename T>
    T atomic_or(T* p, T v) const {
        return atomic(p, AtomicOp::kOr, v);
    }
    template <typename T>
    T atomic_xor(T* p, T v) const {
        return atomic(p, AtomicOp::kXor, v);
    }
};

// ---- launches ---------------------------------------------------------------------------------

struct LaunchSite {
    const char* file;
    int line;
    const char* kernel;     // the kernel expression as written, e.g. "flat_fwd_kernel<T, Op, kW>"
    const char* signature;  // the compiler's name of the instance (kernel_signature), or NULL
};

// "… [with auto K = <the kernel instance, template arguments resolved>]": the host compiler's
// __PRETTY_FUNCTION__ names the instance a launch runs, which the traffic model matches with
// nvcc's build of the same kernel (its registers and shared memory, hence its occupancy).
template <auto K>
const char* kernel_signature() {
    return __PRETTY_FUNCTION__;
}

// Runs every thread of every block of the launch; `invoke(frame)` calls the kernel with a fresh
// copy of its arguments, which live in [frame, frame + frame_bytes) (the checker ignores that
// range: it is the parameter buffer, not device memory). Returns the launch's cudaError_t and
// records it for cudaGetLastError.
// `host_pointers`: a pointer argument is host memory (no emulated allocation holds it); without
// one, an access outside every allocation, shared memory and the library's data is a wild pointer.
using Invoke = void (*)(const void* frame);
// `kernel` identifies the kernel for its dynamic shared memory limit (cudaFuncSetAttribute).
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Invoke invoke,
                   const void* frame, size_t frame_bytes, const LaunchSite& site, bool host_pointers);

// Whether a kernel argument is a pointer into host memory: not null and inside no emulated
// allocation. A struct argument (a kernel's parameter block) is read as 8-byte words, and a word
// that is the address of mapped memory no allocation holds counts as a host pointer: a word that
// only looks like one (packed scalars) makes the launch lenient, never a false finding.
bool is_host_pointer_arg(const void* p);
bool is_host_pointer_word(uint64_t word);
template <typename T>
bool host_pointer_arg(const T& v) {
    if constexpr (std::is_pointer_v<T>) {
        return is_host_pointer_arg(static_cast<const void*>(v));
    } else if constexpr (std::is_class_v<T> && std::is_trivially_copyable_v<T>) {
        for (size_t at = 0; at + sizeof(uint64_t) <= sizeof(T); at += alignof(void*)) {
            uint64_t word;
            std::memcpy(&word, reinterpret_cast<const char*>(&v) + at, sizeof word);
            if (is_host_pointer_word(word)) return true;
        }
        return false;
    } else {
        return false;
    }
}

// KILN_LAUNCH(grid, block, smem, stream, kernel)(args...): the arguments are converted to the
// kernel's parameter types once, as CUDA copies them into the parameter buffer, and each
// thread's call copies them again, as each thread owns its parameters.
template <typename... P>
struct Launcher {
    dim3 grid;
    dim3 block;
    size_t smem;
    cudaStream_t stream;
    void (*kernel)(P...);
    LaunchSite site;

    template <typename... A>
    void operator()(A&&... args) const {
        static_assert(sizeof...(A) == sizeof...(P), "KILN_LAUNCH: wrong number of kernel arguments");
        struct Frame {
            void (*kernel)(P...);
            std::tuple<std::decay_t<P>...> params;
        };
        const Frame frame{kernel, {static_cast<std::decay_t<P>>(std::forward<A>(args))...}};
        const Invoke invoke = [](const void* f) {
            const Frame* x = static_cast<const Frame*>(f);
            std::apply(x->kernel, x->params);
        };
        const bool host = std::apply([](const auto&... p) { return (false || ... || host_pointer_arg(p)); }, frame.params);
        launch(reinterpret_cast<const void*>(kernel), grid, block, smem, stream, invoke, &frame, sizeof(frame), site,
               host);
    }
};

template <typename... P>
Launcher<P...> make_launcher(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void (*kernel)(P...),
                             const char* file, int line, const char* name, const char* signature = nullptr) {
    return Launcher<P...>{grid, block, smem, stream, kernel, LaunchSite{file, line, name, signature}};
}

}  // namespace kiln_emu

// ---- the CUDA names ---------------------------------------------------------------------------

#define threadIdx (::kiln_emu::thread_idx())
#define blockIdx (::kiln_emu::block_idx())
#define blockDim (::kiln_emu::block_dim())
#define gridDim (::kiln_emu::grid_dim())
#define warpSize 32

#define KILN_EMU_SITE \
    ::kiln_emu::Site { __FILE__, __LINE__ }
#define __syncthreads KILN_EMU_SITE.syncthreads
#define __syncthreads_count KILN_EMU_SITE.syncthreads_count
#define __syncthreads_and KILN_EMU_SITE.syncthreads_and
#define __syncthreads_or KILN_EMU_SITE.syncthreads_or
#define __syncwarp KILN_EMU_SITE.syncwarp
#define __shfl_sync KILN_EMU_SITE.shfl
#define __shfl_up_sync KILN_EMU_SITE.shfl_up
#define __shfl_down_sync KILN_EMU_SITE.shfl_down
#define __shfl_xor_sync KILN_EMU_SITE.shfl_xor
#define __ballot_sync KILN_EMU_SITE.ballot
#define __any_sync KILN_EMU_SITE.any
#define __all_sync KILN_EMU_SITE.all
#define __reduce_add_sync KILN_EMU_SITE.reduce_add
#define __reduce_min_sync KILN_EMU_SITE.reduce_min
#define __reduce_max_sync KILN_EMU_SITE.reduce_max
#define __reduce_and_sync KILN_EMU_SITE.reduce_and
#define __reduce_or_sync KILN_EMU_SITE.reduce_or
#define __reduce_xor_sync KILN_EMU_SITE.reduce_xor
#define atomicAdd KILN_EMU_SITE.atomic_add
#define atomicSub KILN_EMU_SITE.atomic_sub
#define atomicExch KILN_EMU_SITE.atomic_exch
#define atomicMin KILN_EMU_SITE.atomic_min
#define atomicMax KILN_EMU_SITE.atomic_max
#define atomicCAS KILN_EMU_SITE.atomic_cas
#define atomicAnd KILN_EMU_SITE.atomic_and
#define atomicOr KILN_EMU_SITE.atomic_or
#define atomicXor KILN_EMU_SITE.atomic_xor

inline unsigned __activemask() { return ::kiln_emu::active_mask(); }
// The emulator runs one fiber at a time, in order, so a fence orders nothing more; but a
// __threadfence followed by an atomic publishes the block's writes to a block that later
// synchronises through an atomic (CUDA's threadFenceReduction), which the race check must know.
inline void __threadfence() { ::kiln_emu::thread_fence(); }
inline void __threadfence_block() {}
template <typename T>
inline T __ldg(const T* p) {
    return *p;
}

// ---- device math on the host ------------------------------------------------------------------
// The host libm's f32 functions are within CUDA's documented ulp bounds for expf, erff, atanf,
// tanhf, log1pf, sqrtf. Functions libm lacks are computed in f64 and rounded once, inside the
// bounds CUDA documents for them (normcdff: 5 ulp; rsqrtf: 2 ulp).
inline float normcdff(float x) { return static_cast<float>(0.5 * std::erfc(-static_cast<double>(x) * M_SQRT1_2)); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x * M_SQRT1_2); }
inline float rsqrtf(float x) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x))); }
// The MUFU intrinsics as the hardware computes them, up to the unit's own ≤ 2 ulp: __expf is
// ex2.approx of the f32 product x·log2(e), whose rounding is the error that grows with |x| (the
// guide's 2 + 1.173|x| ulp); __fdividef is a times rcp.approx(b), and 0 for 2^126 < |b| < 2^128
// (CUDA programming guide, intrinsic functions). Modelling the rounding keeps the emulator's
// 16-bit math (common/math.cuh, StorageMath16) within what the GPU does, not more accurate.
inline float __fdividef(float a, float b) {
    const float mag = fabsf(b);
    if (mag > 8.507059173e37f && mag < INFINITY) return a * 0.0f;
    const float r = 1.0f / b;
    return a * r;
}
inline float __expf(float x) {
    const float scaled = x * 1.44269504088896340736f;
    return exp2f(scaled);
}
inline float __logf(float x) { return logf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// Round-to-nearest arithmetic that nvcc never contracts into an FMA (the emulator compiles
// with -ffp-contract=off, so plain operators are already uncontracted here).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline int __float_as_int(float x) { return ::kiln_emu::from_bits<int>(::kiln_emu::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return ::kiln_emu::from_bits<unsigned>(::kiln_emu::to_bits(x)); }
inline float __int_as_float(int x) { return ::kiln_emu::from_bits<float>(::kiln_emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return ::kiln_emu::from_bits<float>(::kiln_emu::to_bits(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// ---- the runtime API the launchers call -------------------------------------------------------
// Renamed, so that an --all-features binary also links the real static CUDA runtime.
extern "C" {
cudaError_t kiln_emu_cudaGetLastError(void);
cudaError_t kiln_emu_cudaPeekAtLastError(void);
cudaError_t kiln_emu_cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t kiln_emu_cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                     cudaStream_t stream);
cudaError_t kiln_emu_cudaStreamSynchronize(cudaStream_t stream);
const char* kiln_emu_cudaGetErrorString(cudaError_t err);
cudaError_t kiln_emu_cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
// The emulated device: device 0, kiln_emu::kMultiprocessors SMs (runtime.cpp), and a block
// occupancy from threads and shared memory alone (sm_90's limits; registers are not known here).
cudaError_t kiln_emu_cudaGetDevice(int* device);
cudaError_t kiln_emu_cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t kiln_emu_occupancy(int* blocks, const void* func, int threads, size_t smem);
}
template <typename F>
inline cudaError_t kiln_emu_cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F* func, int threads,
                                                                          size_t smem) {
    return kiln_emu_occupancy(blocks, reinterpret_cast<const void*>(func), threads, smem);
}
#define cudaGetLastError kiln_emu_cudaGetLastError
#define cudaPeekAtLastError kiln_emu_cudaPeekAtLastError
#define cudaMemsetAsync kiln_emu_cudaMemsetAsync
#define cudaMemcpyAsync kiln_emu_cudaMemcpyAsync
#define cudaStreamSynchronize kiln_emu_cudaStreamSynchronize
#define cudaGetErrorString kiln_emu_cudaGetErrorString
#define cudaFuncSetAttribute kiln_emu_cudaFuncSetAttribute
#define cudaGetDevice kiln_emu_cudaGetDevice
#define cudaDeviceGetAttribute kiln_emu_cudaDeviceGetAttribute
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor kiln_emu_cudaOccupancyMaxActiveBlocksPerMultiprocessor

// The emulator's own tests: kernels with one planted bug each, and their correct twins.
// tests/suite/emu.rs runs every case both ways through kiln_emu_selftest and checks that the bug
// is found, named, and located at the line marked `PLANTED: <case>` here, and that the twin
// runs clean. Built into the emulated library only (build.rs skips kernels/emu for nvcc).

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/launch.cuh"
#include "common/ptx.cuh"
#include "common/vec.cuh"
#include "kiln_emu.h"

namespace {

constexpr int kThreads = 64;
constexpr unsigned kFull = 0xffffffffu;

// Shared memory exchange: every thread publishes, then reads a neighbour's value.
__global__ void missing_barrier_kernel(float* out, bool buggy) {
    __shared__ float slots[kThreads];
    slots[threadIdx.x] = float(threadIdx.x);
    if (!buggy) __syncthreads();
    out[threadIdx.x] = slots[kThreads - 1 - threadIdx.x];  // PLANTED: missing_barrier
}

// A slot is read by a neighbour and overwritten in the same barrier interval.
__global__ void reused_slot_kernel(float* out, bool buggy) {
    __shared__ float slots[kThreads];
    slots[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    const float v = slots[(threadIdx.x + 1) % kThreads];
    if (!buggy) __syncthreads();
    slots[threadIdx.x] = 2.0f * v;  // PLANTED: reused_slot
    __syncthreads();
    out[threadIdx.x] = slots[threadIdx.x];
}

// Writes n + 1 elements of an n-element buffer.
__global__ void off_by_one_kernel(float* out, int n, bool buggy) {
    const int last = buggy ? n : n - 1;
    for (int i = threadIdx.x; i <= last; i += blockDim.x) out[i] = 1.0f;  // PLANTED: off_by_one
}

// Only the first half of a shared array is written before the whole is read.
__global__ void unwritten_shared_kernel(float* out, bool buggy) {
    __shared__ float slots[2 * kThreads];
    slots[threadIdx.x] = 1.0f;
    if (!buggy) slots[threadIdx.x + kThreads] = 2.0f;
    __syncthreads();
    out[threadIdx.x] = slots[threadIdx.x + kThreads];  // PLANTED: unwritten_shared
}

// Blocks are meant to own disjoint ranges; the buggy stride makes neighbours overlap.
__global__ void overlapping_blocks_kernel(float* out, bool buggy) {
    const int stride = buggy ? kThreads / 2 : kThreads;
    out[blockIdx.x * stride + threadIdx.x] = float(blockIdx.x);  // PLANTED: overlapping_blocks
}

// Two halves of a block wait at two different barriers.
__global__ void divergent_barrier_kernel(float* out, bool buggy) {
    if (buggy && threadIdx.x < 32) {
        __syncthreads();  // PLANTED: divergent_barrier
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

// Some threads leave before a barrier that the others wait at.
__global__ void early_exit_kernel(float* out, int n, bool buggy) {
    if (buggy && int(threadIdx.x) >= n) return;
    const float v = int(threadIdx.x) < n ? 1.0f : 0.0f;
    __syncthreads();  // PLANTED: early_exit
    if (int(threadIdx.x) < n) out[threadIdx.x] = v;
}

// Lanes 16..31 have exited, but the shuffle's mask still names them.
__global__ void shuffle_exited_kernel(float* out, bool buggy) {
    const int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    const unsigned mask = buggy ? kFull : 0x0000ffffu;
    out[threadIdx.x] = __shfl_xor_sync(mask, float(lane), 1);  // PLANTED: shuffle_exited
}

// A lane reads from a lane its mask does not name.
__global__ void shuffle_outside_mask_kernel(float* out, bool buggy) {
    const int lane = threadIdx.x % 32;
    if (lane >= 16) return;
    const int src = buggy ? lane + 16 : 15 - lane;
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, float(lane), src);  // PLANTED: shuffle_outside_mask
}

// Warp-level exchange through shared memory: __syncwarp orders the lanes of one warp.
__global__ void syncwarp_kernel(float* out, bool buggy) {
    __shared__ float slots[kThreads];
    slots[threadIdx.x] = float(threadIdx.x);
    if (!buggy) __syncwarp();
    out[threadIdx.x] = slots[threadIdx.x ^ 1];  // PLANTED: syncwarp
}

// Reads a buffer that nothing has written.
__global__ void uninit_global_kernel(const float* in, float* out, bool buggy) {
    out[threadIdx.x] = buggy ? in[threadIdx.x] : 0.0f;  // PLANTED: uninit_global
}

// A 16-byte vector load (kiln's own, common/vec.cuh) from an address only 4-byte aligned.
__global__ void misaligned_kernel(const float* in, float* out, bool buggy) {
    const float* p = in + (buggy ? 1 : 0) + 4 * threadIdx.x;
    const kiln::Pack<float, 4> v = kiln::load_pack<float, 4>(p);  // PLANTED: misaligned
    out[threadIdx.x] = v.v[0] + v.v[1] + v.v[2] + v.v[3];
}

// 16-byte vector accesses through pointers that are 8- but not 16-byte aligned: a GPU faults on
// them. The host compiler may split such a copy into narrower accesses that are each aligned to
// their own size, so the checker must see the width the kernel wrote.
__global__ void misaligned_8_load_kernel(const float* in, float* out, bool buggy) {
    const float* p = in + (buggy ? 2 : 0) + 4 * threadIdx.x;
    const kiln::Pack<float, 4> v = kiln::load_pack<float, 4>(p);  // PLANTED: misaligned_8_load
    out[threadIdx.x] = v.v[2];
}

__global__ void misaligned_8_store_kernel(float* out, bool buggy) {
    kiln::Pack<float, 4> v;
    for (int j = 0; j < 4; ++j) v.v[j] = float(threadIdx.x + j);
    kiln::store_pack<float, 4>(out + (buggy ? 2 : 0) + 4 * threadIdx.x, v);  // PLANTED: misaligned_8_store
}

// The same through CUDA's own vector type, as a kernel written without kiln's vector I/O would:
// a load, its fields changed one by one, a store. Scalar replacement of aggregates splits exactly
// this shape into 4-byte accesses unless the emulated build turns it off (build/emu.rs).
__global__ void misaligned_float4_kernel(const float* in, float* out, bool buggy) {
    float4 v = reinterpret_cast<const float4*>(in + (buggy ? 2 : 0))[threadIdx.x];  // PLANTED: misaligned_float4
    v.x *= 2.0f;
    v.y *= 2.0f;
    v.z *= 2.0f;
    v.w *= 2.0f;
    reinterpret_cast<float4*>(out)[threadIdx.x] = v;
}

// Lane 0 waits for lane 1 at __syncwarp while lane 1 waits at __syncthreads for everyone.
__global__ void deadlock_kernel(float* out, bool buggy) {
    const int lane = threadIdx.x % 32;
    if (buggy) {
        if (lane == 0) __syncwarp(0x3u);  // PLANTED: deadlock
        __syncthreads();
        if (lane == 1) __syncwarp(0x3u);
    } else {
        if (lane < 2) __syncwarp(0x3u);
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

// Reads one element past the launch's dynamic shared memory.
__global__ void dynamic_shared_kernel(float* out, bool buggy) {
    float* slots = kiln::dynamic_shared<float>();
    slots[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    const int i = buggy ? int(threadIdx.x) + 1 : kThreads - 1 - int(threadIdx.x);
    out[threadIdx.x] = slots[i];  // PLANTED: dynamic_shared
}

// A table index that runs far past the end of its buffer (kilobytes: beyond any redzone).
__global__ void far_past_end_kernel(const float* table, float* out, int n, bool buggy) {
    const int i = buggy ? n + 1000 + int(threadIdx.x) : int(threadIdx.x) % n;
    out[threadIdx.x] = table[i];  // PLANTED: far_past_end
}

// A negative index, hundreds of elements before the start of a buffer.
__global__ void far_before_start_kernel(float* out, bool buggy) {
    const int i = buggy ? -300 - int(threadIdx.x) : int(threadIdx.x);
    out[i] = 1.0f;  // PLANTED: far_before_start
}

// An index so far out of range (gigabytes) that it lands in no allocation's guard: a wild pointer.
__global__ void wild_pointer_kernel(const float* table, float* out, bool buggy) {
    const int64_t i = buggy ? (int64_t(1) << 31) + int64_t(threadIdx.x) * 64 : int64_t(threadIdx.x);
    out[threadIdx.x] = table[i];  // PLANTED: wild_pointer
}

// A buffer read after it was freed (the launch is given a stale pointer).
__global__ void use_after_free_kernel(const float* table, float* out) {
    out[threadIdx.x] = table[threadIdx.x];  // PLANTED: use_after_free
}

// The same through a parameter block, as kiln's attention kernels take their pointers.
struct CopyParams {
    const float* in;
    int n;
    float* out;
};
__global__ void copy_params_kernel(CopyParams p) {
    if (int(threadIdx.x) < p.n) p.out[threadIdx.x] = p.in[threadIdx.x];
}

// Touches the first and last float of its dynamic shared memory (the opt-in cases). The opt-in
// is per kernel and lasts: the case without it runs its own instance (kNeverOptedIn), which no
// launch ever opts in.
template <bool kNeverOptedIn>
__global__ void big_shared_kernel(float* out, int floats) {
    float* slots = kiln::dynamic_shared<float>();
    if (threadIdx.x == 0) slots[0] = 1.0f;
    if (threadIdx.x == 1) slots[floats - 1] = 2.0f;
    __syncthreads();
    if (threadIdx.x == 0) out[0] = slots[0] + slots[floats - 1];
}

// A negative offset from the launch's dynamic shared memory.
__global__ void dynamic_shared_negative_kernel(float* out, bool buggy) {
    float* slots = kiln::dynamic_shared<float>();
    slots[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    const int i = buggy ? int(threadIdx.x) - 1 : kThreads - 1 - int(threadIdx.x);
    out[threadIdx.x] = slots[i];  // PLANTED: dynamic_shared_negative
}

// Thread 0 of one block spins on a flag that thread 0 of the other block sets. Blocks run in order
// here: block 1 waiting for block 0 finds the flag set; block 0 waiting for block 1 would spin
// forever (on a GPU too, where block 1 need not be resident), which must end with a diagnosis.
__global__ void spin_kernel(int* flag, float* out, bool buggy) {
    if (threadIdx.x == 0) {
        if (blockIdx.x == (buggy ? 0u : 1u)) {
            while (atomicAdd(flag, 0) == 0) {  // PLANTED: spin
            }
        } else {
            atomicExch(flag, 1);
        }
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

// ldmatrix with row addresses 8 bytes off the 16-byte alignment the PTX ISA requires.
__global__ void ldmatrix_misaligned_kernel(float* out, bool buggy) {
    __shared__ __align__(16) uint16_t tile[8 * 8 + 8];
    for (int i = threadIdx.x; i < 8 * 8 + 8; i += blockDim.x) tile[i] = uint16_t(i);
    __syncthreads();
    uint32_t r[1];
    const uint16_t* row = tile + (buggy ? 4 : 0) + 8 * (threadIdx.x % 8);
    kiln::ptx::ldmatrix<1, false>(r, row);  // PLANTED: ldmatrix_misaligned
    out[threadIdx.x] = float(r[0] & 0xffffu);
}

// cp.async from a global address that is 8- but not 16-byte aligned.
__global__ void cp_async_misaligned_kernel(const float* in, float* out, bool buggy) {
    __shared__ __align__(16) float tile[4 * kThreads];
    kiln::ptx::CpAsync pipe;
    pipe.copy16(tile + 4 * threadIdx.x, in + (buggy ? 2 : 0) + 4 * threadIdx.x);  // PLANTED: cp_async_misaligned
    pipe.commit();
    pipe.wait<0>();
    __syncthreads();
    out[threadIdx.x] = tile[4 * threadIdx.x];
}

// Two tiles in a double-buffered pipeline; the buggy loop waits with wait_group<1> on the last
// tile too (without the empty commit that would make that right), so it reads the tile's old
// contents while its copy is still in flight: a stale value, not an unwritten one.
__global__ void cp_async_stale_kernel(const float* in, float* out, bool buggy) {
    __shared__ __align__(16) float tile[2][4 * kThreads];
    for (int s = 0; s < 2; ++s) {
        for (int j = 0; j < 4; ++j) tile[s][4 * threadIdx.x + j] = 0.0f;
    }
    __syncthreads();
    kiln::ptx::CpAsync pipe;
    for (int s = 0; s < 2; ++s) {
        pipe.copy16(&tile[s][4 * threadIdx.x], in + s * 4 * kThreads + 4 * threadIdx.x);
        pipe.commit();
    }
    float acc = 0.0f;
    for (int s = 0; s < 2; ++s) {
        if (buggy || s == 0) {
            pipe.wait<1>();
        } else {
            pipe.wait<0>();
        }
        __syncthreads();
        acc += tile[s][4 * threadIdx.x];  // PLANTED: cp_async_stale
        __syncthreads();
    }
    out[threadIdx.x] = acc;
}

// CUDA's threadFenceReduction: every block writes its partial sum, fences, takes a ticket; the
// block with the last ticket reads all partials. Legal with the fence (it orders the partial
// before the ticket); without it the last block may read a partial that is not yet visible.
__global__ void fence_reduction_kernel(const float* in, float* partial, unsigned* ticket, float* out, bool buggy) {
    if (threadIdx.x != 0) return;
    float sum = 0.0f;
    for (int i = 0; i < kThreads; ++i) sum += in[blockIdx.x * kThreads + i];
    partial[blockIdx.x] = sum;
    if (!buggy) __threadfence();
    if (atomicAdd(ticket, 1u) == gridDim.x - 1) {
        float total = 0.0f;
        for (unsigned b = 0; b < gridDim.x; ++b) total += partial[b];  // PLANTED: fence_reduction
        out[0] = total;
    }
}

// Every collective's result, for comparison with its scalar definition (tests/suite/emu.rs):
// out[k * 64 + t] is result k of thread t.
constexpr int kCollectiveResults = 12;
__global__ void collectives_kernel(int* out) {
    const int t = threadIdx.x;
    const int lane = t % 32;
    const int v = t * 3 + 1;
    int r[kCollectiveResults];
    r[0] = __shfl_sync(kFull, v, (lane * 7) % 32);
    r[1] = __shfl_up_sync(kFull, v, 3);
    r[2] = __shfl_down_sync(kFull, v, 5);
    r[3] = __shfl_xor_sync(kFull, v, 6);
    r[4] = __shfl_xor_sync(kFull, v, 4, 8);  // within groups of 8
    r[5] = __shfl_down_sync(kFull, v, 2, 16);
    r[6] = int(__ballot_sync(kFull, v % 4 == 0));
    r[7] = __any_sync(kFull, t == 40);
    r[8] = __all_sync(kFull, v > 10);
    r[9] = __reduce_add_sync(kFull, v);
    r[10] = __reduce_max_sync(kFull, lane % 2 == 0 ? -v : v);
    r[11] = __syncthreads_count(t % 3 == 0);
    for (int k = 0; k < kCollectiveResults; ++k) out[k * kThreads + t] = r[k];
}

// kiln_emu::warp_allgather, the emulated bodies' building block: every lane sees every lane's
// record. out[t] = the second field of lane (3·lane mod 32)'s record {t, 7t + 1}.
__global__ void allgather_kernel(int* out) {
    const int t = threadIdx.x;
    const int mine[2] = {t, 7 * t + 1};
    int all[32][2];
    ::kiln_emu::warp_allgather(kFull, mine, sizeof mine, all, __FILE__, __LINE__);
    out[t] = all[(3 * (t % 32)) % 32][1];
}

// Known traffic for the model's own tests: 64 threads (two warps) read one float each, either
// consecutive (4 sectors per warp request) or 32 bytes apart (32 sectors, 12.5% coalesced), and
// write shared memory either along the banks (1 wavefront) or down one bank (32 wavefronts),
// then all read one word (a broadcast: 1 wavefront).
__global__ void traffic_kernel(const float* in, float* out, bool strided) {
    __shared__ float slots[kThreads * 32];
    const int t = threadIdx.x;
    const float v = in[strided ? 8 * t : t];
    slots[strided ? 32 * t : t] = v;
    __syncthreads();
    out[t] = slots[0] + v;
}

// Known timing for the latency model's own tests: 64 threads (two warps) load one float each
// (4 fresh sectors per warp: 700 ns), sum it over the warp (5 shuffles, 15 ns each) and store.
// With `pipelined`, each thread first starts a 16-byte cp.async of another buffer, waited for
// only after the sum: its bytes are in flight across the reduction and cost the warp no time.
__global__ void latency_kernel(const float* in, const float* next, float* out, bool pipelined) {
    __shared__ __align__(16) float staged[4 * kThreads];
    const int t = threadIdx.x;
    kiln::ptx::CpAsync pipe;
    if (pipelined) {
        pipe.copy16(&staged[4 * t], next + 4 * t);
        pipe.commit();
    }
    float v = in[t];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFull, v, offset);
    if (pipelined) {
        pipe.wait<0>();
        v += staged[4 * t];
    }
    out[t] = v;
}

// Atomics from every thread of several blocks: a counter, a float sum and a CAS-claimed slot.
__global__ void atomics_kernel(int* counter, float* sum, int* claimed) {
    atomicAdd(counter, 1);
    atomicAdd(sum, 0.5f);
    atomicCAS(claimed, -1, int(blockIdx.x));
}

struct Buffer {
    void* p;
    explicit Buffer(size_t bytes) : p(kiln_emu_malloc(bytes)) {}
    ~Buffer() { kiln_emu_free(p); }
    template <typename T>
    T* as() const {
        return static_cast<T*>(p);
    }
};

void fill(const Buffer& b, float v, size_t n) {
    std::vector<float> h(n, v);
    kiln_emu_memcpy(b.p, h.data(), n * sizeof(float));
}

int run(const char* name, bool buggy, int32_t* results, int64_t results_len) {
    const auto is = [&](const char* n) { return std::strcmp(name, n) == 0; };
    Buffer out(4096 * sizeof(float));
    float* o = out.as<float>();
    if (is("missing_barrier")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, missing_barrier_kernel)(o, buggy);
    } else if (is("reused_slot")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, reused_slot_kernel)(o, buggy);
    } else if (is("off_by_one")) {
        Buffer small(100 * sizeof(float));
        KILN_LAUNCH(1, kThreads, 0, nullptr, off_by_one_kernel)(small.as<float>(), 100, buggy);
    } else if (is("unwritten_shared")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, unwritten_shared_kernel)(o, buggy);
    } else if (is("overlapping_blocks")) {
        KILN_LAUNCH(4, kThreads, 0, nullptr, overlapping_blocks_kernel)(o, buggy);
    } else if (is("divergent_barrier")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, divergent_barrier_kernel)(o, buggy);
    } else if (is("early_exit")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, early_exit_kernel)(o, 48, buggy);
    } else if (is("shuffle_exited")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, shuffle_exited_kernel)(o, buggy);
    } else if (is("shuffle_outside_mask")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, shuffle_outside_mask_kernel)(o, buggy);
    } else if (is("syncwarp")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, syncwarp_kernel)(o, buggy);
    } else if (is("uninit_global")) {
        Buffer in(kThreads * sizeof(float));
        KILN_LAUNCH(1, kThreads, 0, nullptr, uninit_global_kernel)(in.as<float>(), o, buggy);
    } else if (is("misaligned")) {
        Buffer in((4 * kThreads + 4) * sizeof(float));
        fill(in, 1.0f, 4 * kThreads + 4);
        KILN_LAUNCH(1, kThreads, 0, nullptr, misaligned_kernel)(in.as<float>(), o, buggy);
    } else if (is("misaligned_8_load")) {
        Buffer in((4 * kThreads + 4) * sizeof(float));
        fill(in, 1.0f, 4 * kThreads + 4);
        KILN_LAUNCH(1, kThreads, 0, nullptr, misaligned_8_load_kernel)(in.as<float>(), o, buggy);
    } else if (is("misaligned_float4")) {
        Buffer in((4 * kThreads + 4) * sizeof(float));
        fill(in, 1.0f, 4 * kThreads + 4);
        KILN_LAUNCH(1, kThreads, 0, nullptr, misaligned_float4_kernel)(in.as<float>(), o, buggy);
    } else if (is("misaligned_8_store")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, misaligned_8_store_kernel)(o, buggy);
    } else if (is("deadlock")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, deadlock_kernel)(o, buggy);
    } else if (is("dynamic_shared")) {
        KILN_LAUNCH(1, kThreads, kThreads * sizeof(float), nullptr, dynamic_shared_kernel)(o, buggy);
    } else if (is("far_past_end")) {
        Buffer table(100 * sizeof(float));
        fill(table, 1.0f, 100);
        KILN_LAUNCH(1, kThreads, 0, nullptr, far_past_end_kernel)(table.as<float>(), o, 100, buggy);
    } else if (is("far_before_start")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, far_before_start_kernel)(o, buggy);
    } else if (is("wild_pointer")) {
        Buffer table(kThreads * sizeof(float));
        fill(table, 1.0f, kThreads);
        KILN_LAUNCH(1, kThreads, 0, nullptr, wild_pointer_kernel)(table.as<float>(), o, buggy);
    } else if (is("use_after_free")) {
        // The twin reads a live buffer; the bug, one freed before the launch.
        Buffer live(kThreads * sizeof(float));
        fill(live, 1.0f, kThreads);
        void* stale = kiln_emu_malloc(kThreads * sizeof(float));
        kiln_emu_memcpy(stale, live.p, kThreads * sizeof(float));
        kiln_emu_free(stale);
        const float* table = buggy ? static_cast<const float*>(stale) : live.as<float>();
        KILN_LAUNCH(1, kThreads, 0, nullptr, use_after_free_kernel)(table, o);
    } else if (is("host_pointers")) {
        // The emulated shared library run on host memory (as from C or Python): legal, not wild.
        std::vector<float> host_in(kThreads), host_out(kThreads);
        for (int i = 0; i < kThreads; ++i) host_in[i] = float(i);
        KILN_LAUNCH(1, kThreads, 0, nullptr, use_after_free_kernel)(host_in.data(), host_out.data());
        if (results_len >= 1) results[0] = int32_t(host_out[kThreads - 1]);
        if (cudaPeekAtLastError() != cudaSuccess) return int(cudaGetLastError());
        std::vector<float> struct_out(kThreads);
        KILN_LAUNCH(1, kThreads, 0, nullptr, copy_params_kernel)(CopyParams{host_in.data(), kThreads, struct_out.data()});
        if (results_len >= 2) results[1] = int32_t(struct_out[kThreads - 2]);
    } else if (is("dynamic_shared_negative")) {
        KILN_LAUNCH(1, kThreads, kThreads * sizeof(float), nullptr, dynamic_shared_negative_kernel)(o, buggy);
    } else if (is("spin")) {
        Buffer flag(sizeof(int));
        kiln_emu_memset(flag.p, 0, sizeof(int));
        KILN_LAUNCH(2, kThreads, 0, nullptr, spin_kernel)(flag.as<int>(), o, buggy);
    } else if (is("ldmatrix_misaligned")) {
        KILN_LAUNCH(1, kThreads, 0, nullptr, ldmatrix_misaligned_kernel)(o, buggy);
    } else if (is("cp_async_misaligned")) {
        Buffer in((4 * kThreads + 4) * sizeof(float));
        fill(in, 1.0f, 4 * kThreads + 4);
        KILN_LAUNCH(1, kThreads, 0, nullptr, cp_async_misaligned_kernel)(in.as<float>(), o, buggy);
    } else if (is("cp_async_stale")) {
        Buffer in(8 * kThreads * sizeof(float));
        fill(in, 1.0f, 8 * kThreads);
        KILN_LAUNCH(1, kThreads, 0, nullptr, cp_async_stale_kernel)(in.as<float>(), o, buggy);
    } else if (is("fence_reduction")) {
        constexpr int kBlocks = 4;
        Buffer in(kBlocks * kThreads * sizeof(float)), partial(kBlocks * sizeof(float)), ticket(sizeof(unsigned));
        fill(in, 1.0f, kBlocks * kThreads);
        kiln_emu_memset(ticket.p, 0, sizeof(unsigned));
        KILN_LAUNCH(kBlocks, kThreads, 0, nullptr, fence_reduction_kernel)(
            in.as<float>(), partial.as<float>(), ticket.as<unsigned>(), o, buggy);
        if (results_len >= 1) {
            float total = 0.0f;
            kiln_emu_memcpy(&total, o, sizeof total);
            results[0] = int32_t(total);
        }
    } else if (is("collectives")) {
        Buffer r(kCollectiveResults * kThreads * sizeof(int));
        KILN_LAUNCH(1, kThreads, 0, nullptr, collectives_kernel)(r.as<int>());
        if (results_len < kCollectiveResults * kThreads) return -1;
        kiln_emu_memcpy(results, r.p, kCollectiveResults * kThreads * sizeof(int));
    } else if (is("traffic")) {
        Buffer in(8 * kThreads * sizeof(float));
        fill(in, 1.0f, 8 * kThreads);
        KILN_LAUNCH(1, kThreads, 0, nullptr, traffic_kernel)(in.as<float>(), o, buggy);
    } else if (is("latency")) {
        Buffer in(kThreads * sizeof(float)), next(4 * kThreads * sizeof(float));
        fill(in, 1.0f, kThreads);
        fill(next, 1.0f, 4 * kThreads);
        KILN_LAUNCH(1, kThreads, 0, nullptr, latency_kernel)(in.as<float>(), next.as<float>(), o, buggy);
    } else if (is("allgather")) {
        Buffer r(kThreads * sizeof(int));
        KILN_LAUNCH(1, kThreads, 0, nullptr, allgather_kernel)(r.as<int>());
        if (results_len < kThreads) return -1;
        kiln_emu_memcpy(results, r.p, kThreads * sizeof(int));
    } else if (is("atomics")) {
        Buffer counter(sizeof(int)), sum(sizeof(float)), claimed(sizeof(int));
        const int zero = 0, none = -1;
        const float fzero = 0.0f;
        kiln_emu_memcpy(counter.p, &zero, sizeof zero);
        kiln_emu_memcpy(sum.p, &fzero, sizeof fzero);
        kiln_emu_memcpy(claimed.p, &none, sizeof none);
        KILN_LAUNCH(5, kThreads, 0, nullptr, atomics_kernel)(counter.as<int>(), sum.as<float>(), claimed.as<int>());
        if (results_len < 3) return -1;
        float s;
        kiln_emu_memcpy(&results[0], counter.p, sizeof(int));
        kiln_emu_memcpy(&s, sum.p, sizeof s);
        results[1] = int32_t(s * 2.0f);
        kiln_emu_memcpy(&results[2], claimed.p, sizeof(int));
    } else if (is("leave_pending_error")) {
        // Another library's failed launch: its error stays pending on this thread.
        KILN_LAUNCH(1, 2048, 0, nullptr, overlapping_blocks_kernel)(o, false);
        return int(cudaPeekAtLastError());
    } else if (is("peek_error")) {
        return int(cudaPeekAtLastError());
    } else if (is("take_error")) {
        return int(cudaGetLastError());
    } else if (is("shared_opt_in")) {
        // 64 KiB of dynamic shared memory: through KILN_LAUNCH (which opts the kernel in) it runs;
        // launched without the opt-in (the buggy case) it must fail as on a GPU.
        constexpr int kFloats = 16 << 10;
        if (buggy) {
            ::kiln_emu::make_launcher(dim3(1), dim3(kThreads), kFloats * sizeof(float), nullptr,
                                      &big_shared_kernel<true>, __FILE__, __LINE__, "big_shared_kernel<true>")(o, kFloats);
        } else {
            KILN_LAUNCH(1, kThreads, kFloats * sizeof(float), nullptr, big_shared_kernel<false>)(o, kFloats);
            if (results_len >= 1 && cudaPeekAtLastError() == cudaSuccess) {
                float r = 0.0f;
                kiln_emu_memcpy(&r, o, sizeof r);
                results[0] = int32_t(r);
            }
        }
    } else if (is("shared_too_big")) {
        // More than any architecture kiln targets allows (sm_80: 163 KiB): the opt-in is refused.
        constexpr int kFloats = 164 << 8;
        KILN_LAUNCH(1, kThreads, kFloats * sizeof(float), nullptr, big_shared_kernel<false>)(o, kFloats);
    } else if (is("bad_config")) {
        // More threads per block than CUDA allows: the launch must fail, nothing must run.
        KILN_LAUNCH(1, buggy ? 2048 : 1024, 0, nullptr, overlapping_blocks_kernel)(o, false);
    } else {
        return -1;
    }
    return int(cudaGetLastError());
}

}  // namespace

extern "C" int kiln_emu_selftest(const char* name, int buggy, int32_t* results, int64_t results_len) {
    return run(name, buggy != 0, results, results_len);
}

/* kiln's CUDA emulator: the host-side API of its runtime (feature `emu`).
 *
 * The emulator runs kiln's kernel sources on the CPU: every CUDA thread is a fiber, blocks run
 * one after another, launches are serialised. Its "device memory" is host memory handed out by
 * kiln_emu_malloc, with redzones and a shadow that checked mode uses to find out-of-bounds
 * accesses, reads of bytes never written and races (kernels/emu/README.md).
 *
 * The launchers of kiln.h exist in the emulated library under the prefix kiln_emu_ instead of
 * kiln_ (kiln_activation_relu_fwd -> kiln_emu_activation_relu_fwd), so the emulated and the
 * CUDA library link into one binary. They take the same arguments; pass NULL as the stream.
 */
#ifndef KILN_EMU_H
#define KILN_EMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Emulated device memory: 256-byte aligned, unwritten (reads are findings until written),
 * surrounded by redzones. NULL when out of memory. bytes == 0 gives a valid, empty buffer. */
void* kiln_emu_malloc(size_t bytes);
/* Frees a buffer of kiln_emu_malloc (NULL is ignored). */
void kiln_emu_free(void* ptr);
/* Copies bytes between any host or emulated buffers (marks dst written). Returns 0, or 1 when
 * a range runs outside its emulated allocation. */
int kiln_emu_memcpy(void* dst, const void* src, size_t bytes);
/* Fills bytes of an emulated (or host) buffer with the byte value (marks them written). */
int kiln_emu_memset(void* dst, int value, size_t bytes);

/* Checked mode: every load and store of a kernel is checked (default on; the environment
 * variable KILN_EMU_CHECK=0 turns it off at start-up). */
void kiln_emu_set_checked(int on);
int kiln_emu_checked(void);

/* A thread that runs this many seconds without reaching a barrier or warp collective fails its
 * launch with a finding naming its line (a spin-wait on a flag no one sets, a livelock). Default
 * 5, or the environment variable KILN_EMU_HANG_SECONDS; values <= 0 are ignored. */
void kiln_emu_set_hang_seconds(double seconds);
double kiln_emu_hang_seconds(void);

/* The text of the finding that failed this thread's last failed launch ("" when none): what,
 * where (file:line of the kernel source), which block and thread. KILN_EMU_ABORT=1 aborts the
 * process at the first finding instead. */
const char* kiln_emu_last_finding(void);

/* Launches run since start-up (for `kiln info` and tests). */
uint64_t kiln_emu_launch_count(void);

/* The memory-traffic model (kernels/emu/traffic.cpp): between begin and end, every kernel access
 * is counted as the GPU's memory system would see it (checked mode is on meanwhile). Loads and
 * stores are per warp instruction (the k-th execution of a call site by a warp's lanes). */
typedef struct kiln_emu_traffic {
    uint64_t launches;
    uint64_t load_requests;    /* global load warp instructions */
    uint64_t load_sectors;     /* 32-byte sectors they touched, summed over requests */
    uint64_t load_bytes;       /* bytes the lanes asked for */
    uint64_t store_requests;
    uint64_t store_sectors;
    uint64_t store_bytes;
    uint64_t dram_read_bytes;  /* 32 x distinct sectors read, per launch, summed */
    uint64_t dram_write_bytes; /* 32 x distinct sectors written, per launch, summed */
    uint64_t shared_requests;  /* shared-memory warp instructions */
    uint64_t shared_wavefronts;
    uint64_t shared_worst_wavefronts; /* the most wavefronts of one request */
    /* Bank conflicts: wavefronts beyond the fewest the request's distinct words need
     * (ceil(words / 32): 4 for 16-byte accesses by 32 lanes), summed, and the most of one. */
    uint64_t shared_conflict_wavefronts;
    uint64_t shared_worst_conflict;
    /* The latency model (kernels/emu/latency.cpp), summed over launches: DRAM bytes read (first
     * touches) and warp lifetimes on the emulated timeline, in ns. */
    uint64_t timed_read_bytes;
    uint64_t warp_ns;
} kiln_emu_traffic;
void kiln_emu_traffic_begin(void);
void kiln_emu_traffic_end(kiln_emu_traffic* out);
/* One line per call site of the last window (busiest first, with file:line where the binary has
 * line tables) into buf; returns the length the whole text needs, NUL included. */
size_t kiln_emu_traffic_sites(char* buf, size_t len);
/* One line per launch of the last window into buf: the kernel instance as the host compiler names
 * it ("… [with auto K = kiln::…::name<args>]"), threads per block, dynamic shared bytes, blocks,
 * DRAM bytes, and the latency model's DRAM read bytes and Σ warp lifetimes in ns
 * (kernels/emu/latency.cpp), tab-separated; returns the length the whole text needs, NUL
 * included. */
size_t kiln_emu_traffic_launches(char* buf, size_t len);

/* The emulator's own tests (kernels/emu/selftest/planted.cu): runs case `name` with its planted
 * bug (buggy != 0) or as its correct twin, and returns the launch's cudaError_t (0 = clean; -1 for
 * an unknown name or a short results buffer). Cases that compute something write it to results. */
int kiln_emu_selftest(const char* name, int buggy, int32_t* results, int64_t results_len);

#ifdef __cplusplus
}
#endif

#endif /* KILN_EMU_H */

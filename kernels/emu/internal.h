// kiln's CUDA emulator: the state its runtime files share (not part of any kernel's view).
//
//   fiber.cpp    user-space context switch and the guard-paged stack pool
//   memory.cpp   emulated device memory: allocations with redzones and their shadow
//   runtime.cpp  launches, the block scheduler, barriers, warp collectives, atomics, runtime API
//   check.cpp    the __tsan_* hooks of checked mode: bounds, initialisation, races; findings
//   traffic.cpp  the memory-traffic model: sectors, wavefronts and DRAM bytes per launch
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace kiln_emu {

// ---- fibers -----------------------------------------------------------------------------------

// One stack of the pool: [lo, hi) is usable, a PROT_NONE guard page lies below lo.
struct Stack {
    char* lo = nullptr;
    char* hi = nullptr;
};

// The stack for fiber slot `i` (0 <= i < kMaxBlockThreads), mapped on first use.
Stack stack_for(int i);
// The address range every fiber stack lies in (for the checker's fast path).
void stack_region(uintptr_t* lo, uintptr_t* hi);
// A fresh context on `stack` that will call entry(arg); returns its saved stack pointer.
void* make_context(const Stack& stack, void (*entry)(void*), void* arg);
// Saves the current context's stack pointer in *save and resumes the context saved in next.
extern "C" void kiln_emu_switch(void** save, void* next);

constexpr int kMaxBlockThreads = 1024;

// ---- the running launch -----------------------------------------------------------------------

enum class State : uint8_t { kReady, kBarrier, kWarp, kExited };

// One CUDA thread of the running block.
struct Thread {
    void* sp = nullptr;  // saved stack pointer while switched out
    uint3 idx{};
    uint32_t linear = 0;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
    uint32_t warp = 0;
    uint32_t lane = 0;
    State state = State::kReady;
    // Waiting at a barrier or collective: where, and what it brought.
    const char* file = nullptr;
    int line = 0;
    int op = 0;
    unsigned mask = 0;
    uint64_t value = 0;
    int arg = 0;
    int width = 32;
    uint64_t result = 0;
    // kGather: what this lane brings and where it wants every lane's contribution.
    const void* gather_src = nullptr;
    void* gather_dst = nullptr;
    size_t gather_bytes = 0;
    // Warp-synchronisation clock: after a collective its lanes all hold max(their clocks) + 1, so
    // an access of lane u recorded at clock c is ordered before lane t's access iff clock_t > c.
    uint32_t wsync = 0;
    // The latency model (latency.cpp), in a traffic window: this thread's clock (ns), when its
    // outstanding plain loads arrive, when the cp.async copies of its open group and of its
    // committed groups (oldest first) arrive, and whether cp.async's own copy is running.
    static constexpr int kTimedGroups = 16;
    double tl_now = 0.0;
    double tl_loads = 0.0;
    double tl_group = 0.0;
    double tl_groups[kTimedGroups] = {};
    int tl_groups_n = 0;
    bool tl_quiet = false;
};

struct Launch {
    dim3 grid{}, block{};
    uint3 block_idx{};
    uint32_t block_threads = 0;
    const char* file = nullptr;  // KILN_LAUNCH site
    int line = 0;
    const char* kernel = nullptr;
    const char* signature = nullptr;  // kernel_signature's text of the instance (LaunchSite)
    void (*invoke)(const void*) = nullptr;
    const void* ctx = nullptr;
    uintptr_t args_lo = 0, args_hi = 0;  // the parameter buffer (not device memory)
    // Whether a pointer argument of the kernel is host memory (the emulated shared library run
    // on host pointers from C or Python). When none is, every access must land in an emulated
    // allocation, shared memory, a fiber stack, the parameter buffer or the library's own data:
    // anything else is a wild pointer.
    bool host_pointers = false;
    char* dynamic_shared = nullptr;
    size_t dynamic_bytes = 0;
    std::vector<Thread> threads;
    Thread* current = nullptr;
    void* scheduler_sp = nullptr;
    bool aborted = false;
    // When the scheduler last switched to `current` (steady clock, ns): a thread that runs longer
    // than the hang limit without reaching a barrier or collective is spinning (check_hang).
    uint64_t switched_in_ns = 0;
    // Release and acquire through atomics, as far as CUDA's threadFenceReduction needs: a block
    // that ran __threadfence and then an atomic has published its writes (its serial joins
    // `released`); a block that has run an atomic may read what released blocks wrote without a
    // race. Blocks run one after another, so any later atomic of the reader comes after the
    // writer's. Approximation: a release publishes all of the block's writes, even those after
    // its fence.
    std::unordered_set<uint32_t> released;
    bool block_fenced = false;
    bool block_acquired = false;
    // Checked mode: every barrier interval of every block gets a new epoch; block serials are
    // unique across launches ([serial_base + 1, serial_base + blocks] for this launch;
    // serial_base itself marks "read by several blocks").
    uint32_t epoch = 0;
    uint32_t serial_base = 0;
    uint32_t serial = 0;
};

// The launch running on this OS thread (null outside kernels).
extern thread_local Launch* t_launch __attribute__((tls_model("initial-exec")));
// Whether checked mode is on (read at launch start).
extern bool g_checked;
// Serialises launches, allocations and copies: the hooks then need no locking.
std::recursive_mutex& big_lock();

// ---- findings ---------------------------------------------------------------------------------

// Fails the launch when the running thread has run past the hang limit since it was switched to:
// a spin-wait on a flag no one will set, or a livelock (fibers are never preempted). Called every
// few thousand checked accesses and at every atomic.
void check_hang(Launch& L, const void* pc, const char* file = nullptr, int line = 0);
// Steady-clock nanoseconds.
uint64_t now_ns();
// Where every waiting thread of the block waits, one line per distinct site with its count.
std::string waiting_sites(const Launch& L);

// "(x,y,z)" of a thread or block index, for finding texts.
std::string xyz(uint3 v);

enum class FindingKind {
    kOutOfBounds,
    kMisaligned,
    kUninitialised,
    kRace,
    kBarrierDivergence,
    kCollective,
    kDeadlock,
};

// Records a finding for the running launch and abandons it (never returns to the kernel).
// `pc` is the instrumented access (symbolised later), or 0 when file/line are known.
[[noreturn]] void fail(FindingKind kind, const std::string& what, const char* file, int line, const void* pc);
// The same for the scheduler's own context (deadlocks, reads found at the end of a block): records
// the finding for `thread` and marks the launch aborted; the caller stops the block.
void record(FindingKind kind, const std::string& what, const char* file, int line, const void* pc, uint3 thread);
// The cudaError_t a finding of this kind fails its launch with.
cudaError_t finding_error(FindingKind kind);
// "file:line" of an instruction address through the binary's line tables ("" if unknown).
std::string symbolize(const void* pc);
// Sets the text kiln_emu_last_finding returns on this OS thread.
void set_last_finding(const std::string& text);
// Aborts the process at the first finding (KILN_EMU_ABORT=1).
bool abort_on_finding();

// ---- memory -----------------------------------------------------------------------------------

// An emulated allocation: [base, base + size) usable, redzones of kRedzone on both sides.
struct Alloc {
    // The reservation: kGuard unmapped bytes, then raw (redzone, capacity, redzone), then kGuard
    // unmapped bytes. An access anywhere in it is an access derived from this allocation: the
    // guards keep other allocations at least kGuard away, so an index that runs kilobytes past
    // the end (or before the start) is reported against the allocation it came from.
    char* reserve = nullptr;
    size_t reserve_bytes = 0;
    char* raw = nullptr;
    char* base = nullptr;
    size_t size = 0;
    size_t capacity = 0;  // size rounded up: base + capacity is where the right redzone starts
    // Shadow, one entry per byte of [base, base + capacity): written?, last writing block's
    // serial, last reading block's serial (serial_base = several).
    uint8_t* written = nullptr;
    uint32_t* writer = nullptr;
    uint32_t* reader = nullptr;
};

constexpr size_t kRedzone = 256;
// Dynamic shared memory a kernel gets without opting in, and the most it may opt into (sm_80's
// 163 KiB: the smallest of the architectures kiln builds for; sm_90 allows 227 KiB).
constexpr size_t kDefaultDynamicShared = size_t(48) << 10;
constexpr size_t kMaxOptInShared = size_t(163) << 10;
// Unmapped bytes on either side of every emulated allocation (see Alloc::reserve).
constexpr size_t kGuard = size_t(1) << 20;

// The allocation whose [raw, raw + redzones + capacity) holds p, or null (lock held).
Alloc* find_alloc(uintptr_t p);
// Marks [p, p + n) written (host writes: memset, memcpy); false when it leaves its allocation.
bool mark_host_write(void* p, size_t n);
// Whether [p, p + n) lies inside one allocation, or outside every allocation.
bool host_range_ok(const void* p, size_t n);
// Forgets every block serial in every shadow (when serials wrap around).
void reset_serials();
// The size of the freed allocation whose reservation holds p, or 0 (lock held). Freed
// reservations stay reserved without access (a quarantine of the last kQuarantine frees), so no
// later allocation or host mapping can take their addresses: an access there is a use after free.
size_t freed_size(uintptr_t p);
constexpr size_t kQuarantine = 4096;
// Whether p is a pointer a GPU kernel could not have been given: not null, and inside no
// emulated allocation (a host pointer, or a freed one).
bool is_host_pointer(const void* p);

// ---- the traffic model (traffic.cpp) ----------------------------------------------------------

// Whether the running launch is counted: a traffic window is open and the launch comes from the
// OS thread that opened it (count_this_launch, at launch start); the hooks then count every
// access they check.
extern bool g_counting;
bool count_this_launch();
void count_global(Launch& L, uintptr_t addr, size_t n, bool write, const void* pc);
void count_shared(Launch& L, uintptr_t addr, size_t n, bool write, const void* pc);
// Closes the warp instructions of the block that just ran / the launch that just ended.
void count_block_end();
void count_launch_end(const Launch& L);
// The latency model (latency.cpp): hooks of the running launch while g_counting.
void latency_access(Launch& L, uintptr_t addr, size_t n, bool write, bool shared);
void latency_wait(Thread& t);  // an atomic: the thread's loads are needed
void latency_barrier(Launch& L);
void latency_collective(Thread* (&lanes)[32]);
void latency_exit(Thread& t);
void latency_block_end(const Launch& L);
// The launch's Σ warp lifetimes (ns) and DRAM read bytes; resets for the next launch.
void latency_launch_end(double* warp_ns, uint64_t* dram_read);

// ---- the shared-memory shadow (check.cpp) -----------------------------------------------------

// At the start of every block: shared memory holds nothing written.
void reset_shared_shadow();
// A read of unwritten shared memory that no other thread's write turned into a race.
struct PendingRead {
    uint3 thread;
    const void* pc;
    std::string what;
};
// Whether the barrier interval now ending holds such a read (the first one in *first).
bool pending_reads(PendingRead* first);
// Forgets the pending reads of the interval that just ended.
void end_barrier_interval();
// Registers/unregisters the launch's dynamic shared memory buffer.
void set_dynamic_shared(char* p, size_t n);
// Checks an atomic access of the running kernel (bounds, alignment, written before) and marks
// it written; atomics never race with each other, so no race shadow is kept for them.
void check_atomic(void* addr, size_t bytes, const char* file, int line);

}  // namespace kiln_emu

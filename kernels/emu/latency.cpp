// kiln's CUDA emulator: the latency model of a traffic window (traffic.cpp opens it). Each
// emulated thread carries a clock in nanoseconds on which memory requests take time:
//
// - a global load's data arrives kDramNs after issue when the load touches a 32-byte sector no
//   request of the launch touched before (it comes from DRAM), kL2Ns after otherwise (L2); a
//   shared load's after kSharedNs; a cp.async's like a global load, per commit group;
// - a thread waits for its outstanding plain loads at its next store (global or shared), block
//   barrier, warp collective, atomic or exit: the hooks see memory, not registers, so the first
//   use of a loaded value is taken to be the next point where a loaded value is commonly needed.
//   A cp.async group is waited for at the wait_group that covers it, and only there: that is the
//   one request the model can see in flight across a reduction;
// - a barrier releases every thread at the latest arrival + kBarrierNs, a collective its lanes
//   at the latest lane + kCollectiveNs. Issuing instructions (ALU or memory) takes no time.
//
// A warp lives from its block's start to its last lane's exit. Little's law then gives the bytes
// a warp has in flight on average: DRAM read bytes × kDramNs / Σ warp lifetimes, per launch
// (kiln model multiplies by the resident warps per SM). Without issue time the lifetimes are
// lower bounds, so the figure is an upper bound: a kernel it finds short of bytes in flight is short.

#include <algorithm>
#include <unordered_set>

#include "internal.h"
#include "kiln_emu_device.h"

namespace kiln_emu {

namespace {

constexpr double kDramNs = 700.0;      // an H100's DRAM latency under load (~0.7 µs)
constexpr double kL2Ns = 150.0;        // a re-read sector: L2 (~260 cycles)
constexpr double kSharedNs = 15.0;     // shared-memory load (~25 cycles)
constexpr double kCollectiveNs = 15.0; // a dependent shuffle
constexpr double kBarrierNs = 20.0;    // __syncthreads once the last warp arrives

std::unordered_set<uint64_t> g_sectors;  // sectors the launch has requested (DRAM once)
double g_warp_ns = 0.0;                  // Σ warp lifetimes of the launch's finished blocks
uint64_t g_dram_read = 0;                // bytes of first-touched sectors read

// Arrival time of a global read of [a, a + n) issued now: DRAM if any sector is new.
double global_ready(const Thread& t, uintptr_t a, size_t n) {
    bool fresh = false;
    for (uintptr_t s = a >> 5; s <= (a + n - 1) >> 5; ++s) {
        if (g_sectors.insert(s).second) {
            fresh = true;
            g_dram_read += 32;
        }
    }
    return t.tl_now + (fresh ? kDramNs : kL2Ns);
}

// The thread needs its plain loads: its clock moves to their arrival.
void wait_loads(Thread& t) {
    t.tl_now = std::max(t.tl_now, t.tl_loads);
    t.tl_loads = 0.0;
}

Thread* counted_thread() {
    Launch* L = t_launch;
    if (!g_counting || L == nullptr || L->current == nullptr) return nullptr;
    return L->current;
}

}  // namespace

void latency_access(Launch& L, uintptr_t a, size_t n, bool write, bool shared) {
    Thread& t = *L.current;
    if (t.tl_quiet) return;  // cp.async's own copy at its wait: timed at its issue
    if (write) {
        wait_loads(t);
    } else {
        const double ready = shared ? t.tl_now + kSharedNs : global_ready(t, a, n);
        t.tl_loads = std::max(t.tl_loads, ready);
    }
}

void latency_wait(Thread& t) { wait_loads(t); }

void latency_barrier(Launch& L) {
    double latest = 0.0;
    for (Thread& t : L.threads) {
        if (t.state == State::kExited) continue;
        wait_loads(t);
        latest = std::max(latest, t.tl_now);
    }
    for (Thread& t : L.threads) {
        if (t.state != State::kExited) t.tl_now = latest + kBarrierNs;
    }
}

void latency_collective(Thread* (&lanes)[32]) {
    double latest = 0.0;
    for (Thread* t : lanes) {
        if (t == nullptr) continue;
        wait_loads(*t);
        latest = std::max(latest, t->tl_now);
    }
    for (Thread* t : lanes) {
        if (t != nullptr) t->tl_now = latest + kCollectiveNs;
    }
}

void latency_exit(Thread& t) {
    wait_loads(t);
    // cp.async groups never waited for still had to land before the block's shared memory goes.
    for (int g = 0; g < t.tl_groups_n; ++g) t.tl_now = std::max(t.tl_now, t.tl_groups[g]);
    t.tl_now = std::max(t.tl_now, t.tl_group);
}

void latency_block_end(const Launch& L) {
    const uint32_t warps = (L.block_threads + 31) / 32;
    for (uint32_t w = 0; w < warps; ++w) {
        double life = 0.0;
        for (uint32_t i = w * 32; i < std::min(L.block_threads, (w + 1) * 32); ++i) {
            life = std::max(life, L.threads[i].tl_now);
        }
        g_warp_ns += life;
    }
}

void latency_launch_end(double* warp_ns, uint64_t* dram_read) {
    *warp_ns = g_warp_ns;
    *dram_read = g_dram_read;
    g_warp_ns = 0.0;
    g_dram_read = 0;
    g_sectors.clear();
}

// ---- cp.async (common/ptx.cuh's emulated CpAsync) ---------------------------------------------

void cp_async_issue_timed(const void* src, bool valid) {
    Thread* t = counted_thread();
    if (t == nullptr) return;
    const double ready = valid ? global_ready(*t, reinterpret_cast<uintptr_t>(src), 16) : t->tl_now;
    t->tl_group = std::max(t->tl_group, ready);
}

void cp_async_commit_timed() {
    Thread* t = counted_thread();
    if (t == nullptr) return;
    if (t->tl_groups_n == Thread::kTimedGroups) {  // the oldest group is surely waited for by now
        t->tl_now = std::max(t->tl_now, t->tl_groups[0]);
        std::copy(t->tl_groups + 1, t->tl_groups + t->tl_groups_n, t->tl_groups);
        --t->tl_groups_n;
    }
    t->tl_groups[t->tl_groups_n++] = t->tl_group;
    t->tl_group = 0.0;
}

void cp_async_wait_timed(int kept) {
    Thread* t = counted_thread();
    if (t == nullptr) return;
    const int done = t->tl_groups_n - kept;
    if (done <= 0) return;
    for (int g = 0; g < done; ++g) t->tl_now = std::max(t->tl_now, t->tl_groups[g]);
    std::copy(t->tl_groups + done, t->tl_groups + t->tl_groups_n, t->tl_groups);
    t->tl_groups_n = kept;
}

void cp_async_performing(bool on) {
    Thread* t = counted_thread();
    if (t != nullptr) t->tl_quiet = on;
}

}  // namespace kiln_emu

// kiln's CUDA emulator: launches and the block scheduler.
//
// A launch checks its configuration as CUDA does, then runs its blocks one after another on the
// calling OS thread. The threads of a block are fibers, run round-robin: each runs until it
// exits, waits at a barrier, or waits at a warp collective; a barrier releases when every thread
// of the block waits at the same one; a collective completes when every lane its mask names has
// arrived at it. When no thread can run and some have not exited, the block is deadlocked.
// Everything that breaks CUDA's rules here is a finding that fails the launch (check.cpp reports
// the memory findings of checked mode the same way).

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <chrono>
#include <cstring>

#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "kiln_emu.h"

namespace kiln_emu {

thread_local Launch* t_launch = nullptr;
bool g_checked = [] {
    const char* v = std::getenv("KILN_EMU_CHECK");
    return v == nullptr || std::strcmp(v, "0") != 0;
}();

std::recursive_mutex& big_lock() {
    static std::recursive_mutex m;
    return m;
}

namespace {

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_last_finding;
uint64_t g_launches = 0;
uint32_t g_epoch = 0;
uint32_t g_serial = 0;

// What fail() leaves for launch() to turn into text once it is back on its own stack.
struct Finding {
    FindingKind kind;
    std::string what;
    const char* file;
    int line;
    const void* pc;
    uint3 block;
    uint3 thread;
};

thread_local Finding* t_finding = nullptr;

Launch& cur() { return *t_launch; }

// Back to the scheduler; returns when the scheduler runs this fiber again.
void yield() {
    Launch& L = cur();
    Thread* t = L.current;
    kiln_emu_switch(&t->sp, L.scheduler_sp);
}

std::string where(const char* file, int line) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%s:%d", file, line);
    return buf;
}

const char* kind_name(FindingKind k) {
    switch (k) {
        case FindingKind::kOutOfBounds: return "out-of-bounds access";
        case FindingKind::kMisaligned: return "misaligned access";
        case FindingKind::kUninitialised: return "read of uninitialised memory";
        case FindingKind::kRace: return "data race";
        case FindingKind::kBarrierDivergence: return "barrier divergence";
        case FindingKind::kCollective: return "invalid warp collective";
        case FindingKind::kDeadlock: return "deadlock";
    }
    return "finding";
}

// ---- barriers -----------------------------------------------------------------------------------

// Releases the block barrier if every thread that has not exited waits at it.
void try_release_barrier() {
    Launch& L = cur();
    uint32_t waiting = 0, exited = 0;
    const Thread* first = nullptr;
    for (const Thread& t : L.threads) {
        if (t.state == State::kBarrier) {
            ++waiting;
            if (first == nullptr) first = &t;
        } else if (t.state == State::kExited) {
            ++exited;
        }
    }
    if (waiting == 0 || waiting + exited != L.block_threads) return;
    if (exited > 0) {
        fail(FindingKind::kBarrierDivergence,
             std::to_string(exited) + " thread(s) of the block exited while " + std::to_string(waiting) +
                 " wait at __syncthreads (every thread of a block must reach each barrier)",
             first->file, first->line, nullptr);
    }
    PendingRead read;
    if (g_checked && pending_reads(&read)) {
        fail(FindingKind::kUninitialised, "thread " + xyz(read.thread) + ": " + read.what, nullptr, 0, read.pc);
    }
    end_barrier_interval();
    if (g_counting) latency_barrier(L);
    int reduced = 0;
    bool and_all = true, or_any = false;
    for (const Thread& t : L.threads) {
        if (t.file != first->file || t.line != first->line || t.op != first->op) {
            fail(FindingKind::kBarrierDivergence,
                 "threads wait at different barriers: thread " + xyz(first->idx) + " at " +
                     where(first->file, first->line) + ", thread " + xyz(t.idx) + " at " + where(t.file, t.line),
                 t.file, t.line, nullptr);
        }
        reduced += int(t.value);
        and_all = and_all && t.value != 0;
        or_any = or_any || t.value != 0;
    }
    int result = 0;
    switch (BarrierOp(first->op)) {
        case BarrierOp::kPlain: break;
        case BarrierOp::kCount: result = reduced; break;
        case BarrierOp::kAnd: result = and_all; break;
        case BarrierOp::kOr: result = or_any; break;
    }
    for (Thread& t : L.threads) {
        t.result = uint64_t(result);
        t.state = State::kReady;
    }
    ++g_epoch;
    L.epoch = g_epoch;  // a new barrier interval: shared accesses before it are ordered
}

// ---- warp collectives -------------------------------------------------------------------------

const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::kSync: return "__syncwarp";
        case WarpOp::kShfl: return "__shfl_sync";
        case WarpOp::kShflUp: return "__shfl_up_sync";
        case WarpOp::kShflDown: return "__shfl_down_sync";
        case WarpOp::kShflXor: return "__shfl_xor_sync";
        case WarpOp::kBallot: return "__ballot_sync";
        case WarpOp::kAny: return "__any_sync";
        case WarpOp::kAll: return "__all_sync";
        case WarpOp::kAdd: return "__reduce_add_sync";
        case WarpOp::kMinU:
        case WarpOp::kMinI: return "__reduce_min_sync";
        case WarpOp::kMaxU:
        case WarpOp::kMaxI: return "__reduce_max_sync";
        case WarpOp::kAnd: return "__reduce_and_sync";
        case WarpOp::kOr: return "__reduce_or_sync";
        case WarpOp::kXor: return "__reduce_xor_sync";
        case WarpOp::kGather: return "a warp-wide instruction (mma/ldmatrix)";
    }
    return "collective";
}

std::string hex(unsigned m) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", m);
    return buf;
}

// The lane a shuffle reads for `lane`, or -1 when the lane keeps its own value.
int shuffle_source(WarpOp op, int lane, int arg, int width) {
    const int c = width - 1;
    switch (op) {
        case WarpOp::kShfl: return (lane & ~c) | (arg & c);
        case WarpOp::kShflUp: return (lane & c) >= arg ? lane - arg : -1;
        case WarpOp::kShflDown: return (lane & c) + arg < width ? lane + arg : -1;
        case WarpOp::kShflXor: {
            const int src = lane ^ arg;
            return src > (lane | c) || src >= kWarpSize ? -1 : src;
        }
        default: return -1;
    }
}

// Completes the collective `t` waits at if every lane of its mask has arrived.
void try_complete(Thread& t) {
    Launch& L = cur();
    const uint32_t base = t.warp * kWarpSize;
    Thread* lanes[kWarpSize] = {};
    for (int l = 0; l < kWarpSize; ++l) {
        if (!((t.mask >> l) & 1u)) continue;
        if (base + l >= L.block_threads) {
            fail(FindingKind::kCollective,
                 std::string(op_name(WarpOp(t.op))) + " with mask " + hex(t.mask) + " names lane " + std::to_string(l) +
                     ", which does not exist in a block of " + std::to_string(L.block_threads) + " threads",
                 t.file, t.line, nullptr);
        }
        Thread& u = L.threads[base + l];
        if (u.state == State::kExited) {
            fail(FindingKind::kCollective,
                 std::string(op_name(WarpOp(t.op))) + " with mask " + hex(t.mask) + " names lane " + std::to_string(l) +
                     ", which has exited",
                 t.file, t.line, nullptr);
        }
        if (u.state != State::kWarp) return;  // not there yet
        lanes[l] = &u;
    }
    for (int l = 0; l < kWarpSize; ++l) {
        const Thread* u = lanes[l];
        if (u == nullptr) continue;
        if (u->op != t.op || u->mask != t.mask || u->gather_bytes != t.gather_bytes) {
            fail(FindingKind::kCollective,
                 "the lanes of one collective disagree: lane " + std::to_string(t.lane) + " calls " +
                     op_name(WarpOp(t.op)) + " with mask " + hex(t.mask) + " at " + where(t.file, t.line) + ", lane " +
                     std::to_string(l) + " calls " + op_name(WarpOp(u->op)) + " with mask " + hex(u->mask) + " at " +
                     where(u->file, u->line),
                 t.file, t.line, nullptr);
        }
    }
    const WarpOp op = WarpOp(t.op);
    uint64_t reduced = 0;
    bool first = true;
    for (int l = 0; l < kWarpSize; ++l) {
        const Thread* u = lanes[l];
        if (u == nullptr) continue;
        const uint32_t v = uint32_t(u->value);
        switch (op) {
            case WarpOp::kBallot: reduced |= uint64_t(v != 0) << l; break;
            case WarpOp::kAny: reduced |= (v != 0); break;
            case WarpOp::kAll: reduced = first ? (v != 0) : (reduced && v != 0); break;
            case WarpOp::kAdd: reduced = uint32_t(reduced + v); break;
            case WarpOp::kMinU: reduced = first || v < uint32_t(reduced) ? v : reduced; break;
            case WarpOp::kMaxU: reduced = first || v > uint32_t(reduced) ? v : reduced; break;
            case WarpOp::kMinI: reduced = first || int32_t(v) < int32_t(reduced) ? v : reduced; break;
            case WarpOp::kMaxI: reduced = first || int32_t(v) > int32_t(reduced) ? v : reduced; break;
            case WarpOp::kAnd: reduced = first ? v : (reduced & v); break;
            case WarpOp::kOr: reduced |= v; break;
            case WarpOp::kXor: reduced ^= v; break;
            default: break;
        }
        first = false;
    }
    if (g_counting) latency_collective(lanes);
    uint32_t clock = 0;
    for (const Thread* u : lanes) {
        if (u != nullptr && u->wsync > clock) clock = u->wsync;
    }
    for (int l = 0; l < kWarpSize; ++l) {
        Thread* u = lanes[l];
        if (u == nullptr) continue;
        if (op == WarpOp::kGather) {
            for (int src = 0; src < kWarpSize; ++src) {
                if (lanes[src] == nullptr) continue;
                std::memcpy(static_cast<char*>(u->gather_dst) + size_t(src) * u->gather_bytes, lanes[src]->gather_src,
                            u->gather_bytes);
            }
        } else if (op == WarpOp::kShfl || op == WarpOp::kShflUp || op == WarpOp::kShflDown || op == WarpOp::kShflXor) {
            const int src = shuffle_source(op, l, u->arg, u->width);
            if (src < 0 || src == l) {
                u->result = u->value;
            } else if (lanes[src] == nullptr) {
                fail(FindingKind::kCollective,
                     std::string(op_name(op)) + ": lane " + std::to_string(l) + " reads lane " + std::to_string(src) +
                         ", which mask " + hex(t.mask) + " does not name (its value is undefined)",
                     u->file, u->line, nullptr);
            } else {
                u->result = lanes[src]->value;
            }
        } else {
            u->result = reduced;
        }
        u->wsync = clock + 1;
        u->state = State::kReady;
    }
}

// ---- fibers -----------------------------------------------------------------------------------

void fiber_main(void* arg) {
    Thread* t = static_cast<Thread*>(arg);
    Launch& L = cur();
    L.invoke(L.ctx);
    if (g_counting) latency_exit(*t);
    t->state = State::kExited;
    // Lanes of this warp already waiting at a collective whose mask names this lane never finish.
    for (uint32_t l = 0; l < kWarpSize; ++l) {
        const uint32_t i = t->warp * kWarpSize + l;
        if (i >= L.block_threads) break;
        const Thread& u = L.threads[i];
        if (u.state == State::kWarp && ((u.mask >> t->lane) & 1u)) {
            fail(FindingKind::kCollective,
                 std::string(op_name(WarpOp(u.op))) + " with mask " + hex(u.mask) + " names lane " +
                     std::to_string(t->lane) + ", which has exited",
                 u.file, u.line, nullptr);
        }
    }
    // An exit can complete a barrier (and then a finding).
    try_release_barrier();
    kiln_emu_switch(&t->sp, L.scheduler_sp);
    std::abort();  // an exited fiber is never resumed
}

// Runs one block to completion; false when a finding abandoned it.
bool run_block(Launch& L) {
    for (uint32_t i = 0; i < L.block_threads; ++i) {
        Thread& t = L.threads[i];
        const uint32_t x = i % L.block.x, y = (i / L.block.x) % L.block.y, z = i / (L.block.x * L.block.y);
        t = Thread{};
        t.idx = uint3{x, y, z};
        t.linear = i;
        t.warp = i / kWarpSize;
        t.lane = i % kWarpSize;
        t.sp = make_context(stack_for(int(i)), fiber_main, &t);
    }
    ++g_epoch;
    L.epoch = g_epoch;
    if (g_checked) reset_shared_shadow();
    for (;;) {
        bool ran = false, live = false;
        for (Thread& t : L.threads) {
            if (t.state == State::kExited) continue;
            live = true;
            if (t.state != State::kReady) continue;
            ran = true;
            L.current = &t;
            L.switched_in_ns = now_ns();
            kiln_emu_switch(&L.scheduler_sp, t.sp);
            L.current = nullptr;
            if (L.aborted) return false;
        }
        if (!live) {
            if (g_counting) {
                count_block_end();
                latency_block_end(L);
            }
            PendingRead read;
            if (!g_checked || !pending_reads(&read)) return true;
            record(FindingKind::kUninitialised, read.what, nullptr, 0, read.pc, read.thread);
            return false;
        }
        if (!ran) {
            const std::string what = "no thread of the block can proceed:" + waiting_sites(L);
            record(FindingKind::kDeadlock, what, nullptr, 0, nullptr, L.threads[0].idx);
            return false;
        }
    }
}

std::string finding_text(const Launch& L, const Finding& f) {
    std::string text = std::string(kind_name(f.kind)) + ": " + f.what;
    if (f.file != nullptr) {
        text += " at " + where(f.file, f.line);
    } else if (f.pc != nullptr) {
        const std::string loc = symbolize(f.pc);
        text += loc.empty() ? " (no line tables: build with debug info for file:line)" : " at " + loc;
    }
    text += "; kernel " + std::string(L.kernel) + " launched at " + where(L.file, L.line) + ", block " + xyz(f.block) +
            " thread " + xyz(f.thread);
    return text;
}

}  // namespace

void record(FindingKind kind, const std::string& what, const char* file, int line, const void* pc, uint3 thread) {
    Launch& L = cur();
    if (t_finding == nullptr) t_finding = new Finding{kind, what, file, line, pc, L.block_idx, thread};
    L.aborted = true;
}

void thread_fence() {
    if (Launch* L = t_launch; L != nullptr && L->current != nullptr) L->block_fenced = true;
}

uint64_t now_ns() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

std::string waiting_sites(const Launch& L) {
    // Every distinct (what, where) with how many threads wait there and the first of them, in
    // thread order: a report names each site, however many threads the block has.
    struct Site {
        std::string what;
        const Thread* first;
        int count;
    };
    std::vector<Site> sites;
    for (const Thread& t : L.threads) {
        if (t.state == State::kExited || t.state == State::kReady) continue;
        const std::string what =
            (t.state == State::kBarrier ? std::string("__syncthreads")
                                        : std::string("a warp collective (") + op_name(WarpOp(t.op)) + " mask " +
                                              hex(t.mask) + ")") +
            " at " + where(t.file, t.line);
        auto it = std::find_if(sites.begin(), sites.end(), [&](const Site& x) { return x.what == what; });
        if (it == sites.end()) {
            sites.push_back(Site{what, &t, 1});
        } else {
            ++it->count;
        }
    }
    std::string text;
    for (const Site& x : sites) {
        text += std::string(text.empty() ? " " : "; ") + std::to_string(x.count) +
                (x.count == 1 ? " thread waits" : " threads wait") + " at " + x.what + " (first: thread " +
                xyz(x.first->idx) + ")";
    }
    return text;
}

// Seconds a thread may run without reaching a barrier or collective (KILN_EMU_HANG_SECONDS or
// kiln_emu_set_hang_seconds; 5 by default: far above what any kernel's stretch between barriers
// takes here, and a diagnosis within seconds instead of a test that never ends).
double g_hang_seconds = [] {
    const char* v = std::getenv("KILN_EMU_HANG_SECONDS");
    const double s = v != nullptr ? std::atof(v) : 0.0;
    return s > 0.0 ? s : 5.0;
}();

void check_hang(Launch& L, const void* pc, const char* file, int line) {
    if (L.current == nullptr) return;
    const uint64_t ran = now_ns() - L.switched_in_ns;
    if (double(ran) < g_hang_seconds * 1e9) return;
    std::string what = "thread has run " + std::to_string(ran / 1000000) +
                       " ms without reaching a barrier or collective (a spin-wait on a flag no one sets, or a "
                       "livelock)";
    const std::string others = waiting_sites(L);
    if (!others.empty()) what += "; meanwhile" + others;
    fail(FindingKind::kDeadlock, what, file, line, pc);
}

void fail(FindingKind kind, const std::string& what, const char* file, int line, const void* pc) {
    Launch& L = cur();
    record(kind, what, file, line, pc, L.current->idx);
    // The fiber is abandoned: its stack is reinitialised for the next block, so what the kernel
    // had on it (including this frame's strings) is simply dropped.
    void* dead = nullptr;
    kiln_emu_switch(&dead, L.scheduler_sp);
    std::abort();
}

cudaError_t finding_error(FindingKind kind) {
    switch (kind) {
        case FindingKind::kOutOfBounds: return cudaErrorIllegalAddress;
        case FindingKind::kMisaligned: return cudaErrorMisalignedAddress;
        default: return cudaErrorLaunchFailure;
    }
}

void set_last_finding(const std::string& text) { t_last_finding = text; }

std::string xyz(uint3 v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "(%u,%u,%u)", v.x, v.y, v.z);
    return buf;
}

bool abort_on_finding() {
    static const bool on = [] {
        const char* v = std::getenv("KILN_EMU_ABORT");
        return v != nullptr && std::strcmp(v, "0") != 0;
    }();
    return on;
}

uint3 thread_idx() { return t_launch->current->idx; }
uint3 block_idx() { return t_launch->block_idx; }
dim3 block_dim() { return t_launch->block; }
dim3 grid_dim() { return t_launch->grid; }
void* dynamic_shared() { return t_launch->dynamic_shared; }

unsigned active_mask() {
    Launch& L = cur();
    const Thread* t = L.current;
    unsigned m = 0;
    for (int l = 0; l < kWarpSize; ++l) {
        const uint32_t i = t->warp * kWarpSize + l;
        if (i < L.block_threads && L.threads[i].state != State::kExited) m |= 1u << l;
    }
    return m;
}

int block_barrier(BarrierOp op, int pred, const char* file, int line) {
    Thread* t = cur().current;
    t->state = State::kBarrier;
    t->file = file;
    t->line = line;
    t->op = int(op);
    t->value = uint64_t(pred);
    try_release_barrier();
    while (t->state == State::kBarrier) yield();
    return int(t->result);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    Thread* t = cur().current;
    t->file = file;
    t->line = line;
    if (!((mask >> t->lane) & 1u)) {
        fail(FindingKind::kCollective,
             std::string(op_name(op)) + " called by lane " + std::to_string(t->lane) + " with mask " + hex(mask) +
                 ", which does not name the calling lane",
             file, line, nullptr);
    }
    if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
        fail(FindingKind::kCollective,
             std::string(op_name(op)) + " width " + std::to_string(width) + " is not a power of two in [1, 32]", file,
             line, nullptr);
    }
    t->state = State::kWarp;
    t->op = int(op);
    t->mask = mask;
    t->value = value;
    t->arg = arg;
    t->width = width;
    try_complete(*t);
    while (t->state == State::kWarp) yield();
    return t->result;
}

void warp_allgather(unsigned mask, const void* mine, size_t bytes, void* all, const char* file, int line) {
    Thread* t = cur().current;
    if (bytes == 0 || bytes > 256) {
        fail(FindingKind::kCollective, "warp_allgather of " + std::to_string(bytes) + " bytes per lane (1..256)", file,
             line, nullptr);
    }
    t->gather_src = mine;
    t->gather_dst = all;
    t->gather_bytes = bytes;
    warp_collective(WarpOp::kGather, mask, 0, 0, kWarpSize, file, line);
    t->gather_bytes = 0;
}

bool is_host_pointer_arg(const void* p) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    return is_host_pointer(p);
}

bool is_host_pointer_word(uint64_t word) {
    // User-space addresses of x86-64 Linux; small integers are never taken for pointers.
    if (word < (uint64_t(1) << 16) || word >= (uint64_t(1) << 47)) return false;
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    if (!is_host_pointer(reinterpret_cast<const void*>(word))) return false;
    // Mapped? mincore fails with ENOMEM on an unmapped page.
    const uintptr_t page = uintptr_t(word) & ~uintptr_t(sysconf(_SC_PAGESIZE) - 1);
    unsigned char resident;
    return mincore(reinterpret_cast<void*>(page), 1, &resident) == 0;
}

// The emulated device's SMs (cudaDevAttrMultiProcessorCount). Fewer than a GPU's 132 on
// purpose: a persistent grid (the grid sized to fill the device once) then gives each block, at
// the few-thousand-row shapes the emulator runs in tests, the several rows a GPU's blocks get
// at GPU-sized shapes, so the traffic and latency models see the steady state.
constexpr int kMultiprocessors = 8;

// Dynamic shared memory each kernel opted into (cudaFuncSetAttribute), by kernel.
std::map<const void*, size_t>& opted_in_shared() {
    static std::map<const void*, size_t> m;
    return m;
}

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Invoke invoke,
                   const void* frame, size_t frame_bytes, const LaunchSite& site, bool host_pointers) {
    const uint64_t threads = uint64_t(block.x) * block.y * block.z;
    // CUDA's limits for every architecture kiln targets (sm_80, sm_90).
    const bool bad_block = block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 ||
                           block.z > 64 || threads > uint64_t(kMaxBlockThreads);
    const bool bad_grid =
        grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535;
    if (bad_block || bad_grid) {
        t_last_error = cudaErrorInvalidConfiguration;
        return t_last_error;
    }
    // Dynamic shared memory above 48 KiB needs the kernel's opt-in (cudaFuncSetAttribute) for at
    // least as much, as on a GPU.
    if (smem > kDefaultDynamicShared) {
        std::lock_guard<std::recursive_mutex> lock(big_lock());
        const auto it = opted_in_shared().find(kernel);
        if (it == opted_in_shared().end() || smem > it->second) {
            t_last_error = cudaErrorInvalidValue;
            return t_last_error;
        }
    }

    std::lock_guard<std::recursive_mutex> lock(big_lock());
    Launch L;
    L.grid = grid;
    L.block = block;
    L.block_threads = uint32_t(threads);
    L.file = site.file;
    L.line = site.line;
    L.kernel = site.kernel;
    L.signature = site.signature;
    L.invoke = invoke;
    L.ctx = frame;
    L.args_lo = reinterpret_cast<uintptr_t>(frame);
    L.args_hi = L.args_lo + frame_bytes;
    L.host_pointers = host_pointers;
    L.threads.resize(L.block_threads);
    std::vector<char> dyn;
    if (smem > 0) {
        // Poisoned like unwritten device memory: NaN in every float format. A redzone on either
        // side: a negative offset from the buffer is reported as such.
        dyn.assign(kRedzone + smem + kRedzone, char(0xff));
        L.dynamic_shared = dyn.data() + kRedzone;
        L.dynamic_bytes = smem;
    }
    const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
    if (uint64_t(g_serial) + blocks + 1 >= 0xffffffffull) {
        reset_serials();
        g_serial = 0;
    }
    L.serial_base = g_serial + 1;
    g_serial += uint32_t(blocks) + 1;
    ++g_launches;

    Launch* outer = t_launch;
    t_launch = &L;
    const bool outer_counting = g_counting;
    g_counting = count_this_launch();
    if (g_checked) set_dynamic_shared(L.dynamic_shared, L.dynamic_bytes);
    bool ok = true;
    for (uint64_t b = 0; b < blocks && ok; ++b) {
        L.block_idx =
            uint3{uint32_t(b % grid.x), uint32_t((b / grid.x) % grid.y), uint32_t(b / (uint64_t(grid.x) * grid.y))};
        L.serial = L.serial_base + 1 + uint32_t(b);
        L.block_fenced = L.block_acquired = false;
        ok = run_block(L);
    }
    if (g_checked) set_dynamic_shared(nullptr, 0);
    if (g_counting) count_launch_end(L);
    g_counting = outer_counting;
    cudaError_t err = cudaSuccess;
    if (!ok) {
        Finding* f = t_finding;
        t_finding = nullptr;
        const std::string text = "kiln emulator: " + finding_text(L, *f);
        err = finding_error(f->kind);
        delete f;
        set_last_finding(text);
        if (abort_on_finding()) {
            std::fprintf(stderr, "%s\n", text.c_str());
            std::abort();
        }
    }
    t_launch = outer;
    // As CUDA: a successful launch leaves an earlier error pending; a failed one replaces it.
    if (err != cudaSuccess) t_last_error = err;
    return err;
}

}  // namespace kiln_emu

using namespace kiln_emu;

// ---- atomics ----------------------------------------------------------------------------------

namespace kiln_emu {

template <typename T>
T apply_atomic(T* p, AtomicOp op, T v, T compare) {
    const T old = *p;
    switch (op) {
        case AtomicOp::kAdd: *p = T(old + v); break;
        case AtomicOp::kExch: *p = v; break;
        case AtomicOp::kMin: *p = v < old ? v : old; break;
        case AtomicOp::kMax: *p = v > old ? v : old; break;
        case AtomicOp::kCas: *p = old == compare ? v : old; break;
        case AtomicOp::kAnd:
        case AtomicOp::kOr:
        case AtomicOp::kXor:
            if constexpr (std::is_integral_v<T>) {
                *p = op == AtomicOp::kAnd ? T(old & v) : op == AtomicOp::kOr ? T(old | v) : T(old ^ v);
            }
            break;
    }
    return old;
}

template <typename T>
uint64_t atomic_as(void* addr, AtomicOp op, uint64_t v, uint64_t c, const char* file, int line) {
    check_atomic(addr, sizeof(T), file, line);
    if (Launch* L = t_launch; L != nullptr && L->current != nullptr) {
        if (L->block_fenced) L->released.insert(L->serial);
        L->block_acquired = true;
        // A spin on an atomic never reaches a checked load: the hang clock is read here too.
        check_hang(*L, nullptr, file, line);
    }
    return to_bits(apply_atomic(static_cast<T*>(addr), op, from_bits<T>(v), from_bits<T>(c)));
}

uint64_t atomic_rmw(void* addr, AtomicType type, AtomicOp op, uint64_t operand, uint64_t compare, const char* file,
                    int line) {
    switch (type) {
        case AtomicType::kI32: return atomic_as<int32_t>(addr, op, operand, compare, file, line);
        case AtomicType::kU32: return atomic_as<uint32_t>(addr, op, operand, compare, file, line);
        case AtomicType::kI64: return atomic_as<int64_t>(addr, op, operand, compare, file, line);
        case AtomicType::kU64: return atomic_as<uint64_t>(addr, op, operand, compare, file, line);
        case AtomicType::kF32: return atomic_as<float>(addr, op, operand, compare, file, line);
        case AtomicType::kF64: return atomic_as<double>(addr, op, operand, compare, file, line);
    }
    return 0;
}

}  // namespace kiln_emu

// ---- the runtime API --------------------------------------------------------------------------

extern "C" {

cudaError_t kiln_emu_cudaGetLastError(void) {
    const cudaError_t e = t_last_error;
    t_last_error = cudaSuccess;
    return e;
}

cudaError_t kiln_emu_cudaPeekAtLastError(void) { return t_last_error; }

cudaError_t kiln_emu_cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
    return kiln_emu_memset(dst, value, bytes) == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t kiln_emu_cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
    return kiln_emu_memcpy(dst, src, bytes) == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t kiln_emu_cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t kiln_emu_cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    // Only the attribute kiln sets; the opt-in is bounded by the smallest architecture kiln
    // targets (sm_80: 163 KiB), so a kernel that fits here fits every GPU kiln builds for.
    if (func == nullptr || attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
        size_t(value) > kMaxOptInShared) {
        t_last_error = cudaErrorInvalidValue;
        return t_last_error;
    }
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    opted_in_shared()[func] = size_t(value);
    return cudaSuccess;
}

cudaError_t kiln_emu_cudaGetDevice(int* device) {
    if (device == nullptr) return t_last_error = cudaErrorInvalidValue;
    *device = 0;
    return cudaSuccess;
}

cudaError_t kiln_emu_cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    // Only what kiln's launchers ask.
    if (value == nullptr || device != 0 || attr != cudaDevAttrMultiProcessorCount) {
        return t_last_error = cudaErrorInvalidValue;
    }
    *value = kMultiprocessors;
    return cudaSuccess;
}

cudaError_t kiln_emu_occupancy(int* blocks, const void* func, int threads, size_t smem) {
    if (blocks == nullptr || func == nullptr || threads < 1 || threads > 1024) {
        return t_last_error = cudaErrorInvalidValue;
    }
    // sm_90: 64 warps, 32 blocks and 228 KiB of shared memory per SM, 1 KiB of it reserved per
    // block. Registers would need the kernel's ptxas report.
    const int warps = (threads + kWarpSize - 1) / kWarpSize;
    const size_t per_block = smem + 1024;
    *blocks = std::max(0, std::min({64 / warps, 32, int(size_t(228 * 1024) / per_block)}));
    return cudaSuccess;
}

const char* kiln_emu_cudaGetErrorString(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorMisalignedAddress: return "misaligned address";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        default: return "unknown error";
    }
}

void kiln_emu_set_checked(int on) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    g_checked = on != 0;
}

int kiln_emu_checked(void) { return g_checked ? 1 : 0; }

void kiln_emu_set_hang_seconds(double seconds) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    if (seconds > 0.0) g_hang_seconds = seconds;
}

double kiln_emu_hang_seconds(void) { return g_hang_seconds; }

const char* kiln_emu_last_finding(void) { return t_last_finding.c_str(); }

uint64_t kiln_emu_launch_count(void) { return g_launches; }

}  // extern "C"

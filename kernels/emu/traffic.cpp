// kiln's CUDA emulator: the memory-traffic model. While a traffic window is open
// (kiln_emu_traffic_begin/end), every access the checked-mode hooks see is also counted the way
// the GPU's memory system sees it:
//
// - A warp instruction is the k-th execution of one call site by the lanes of one warp; its
//   lanes' global accesses touch a set of 32-byte sectors (sectors per request; coalescing
//   efficiency = requested bytes / (32 · sectors)), its shared accesses a set of 4-byte words in
//   32 banks (wavefronts = the most distinct words any one bank must serve; the same word is a
//   broadcast and costs nothing extra). Bank conflicts are the wavefronts beyond the fewest the
//   distinct words need, ceil(words / 32): a 16-byte access by 32 lanes takes 4 without any.
// - DRAM traffic of a launch is 32 bytes per distinct sector it reads and per distinct sector it
//   writes (a sector touched twice in one launch is assumed to stay in L2); launches add up.
//
// The model ignores L1 reuse across instructions and L2 misses on re-reads: it is a lower bound
// of traffic, exact for streaming kernels, and an upper bound of coalescing quality.

#include <algorithm>
#include <cinttypes>
#include <pthread.h>

#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "internal.h"
#include "kiln_emu.h"

namespace kiln_emu {

bool g_counting = false;

namespace {
// The open window and the OS thread that opened it (under big_lock()). Only that thread's
// launches are counted, so launches of other threads (cargo's parallel tests) never leak into a
// window's counts; and a window is exclusive: its owner holds g_window_mutex from
// kiln_emu_traffic_begin to kiln_emu_traffic_end, so another thread's begin waits for the end.
// (pthread_t rather than std::thread: <thread> does not compile under the emulator's prelude.)
bool g_window = false;
pthread_t g_owner;
std::mutex g_window_mutex;
}  // namespace

bool count_this_launch() { return g_window && pthread_equal(g_owner, pthread_self()) != 0; }

namespace {

// One warp instruction being assembled from its lanes' accesses.
struct Instr {
    uint64_t bytes = 0;
    std::vector<uint64_t> units;  // sectors (global) or 4-byte words (shared)
};

// One call site: a load or store instruction of the kernel source, in global or shared memory.
struct CallSite {
    const void* pc = nullptr;
    bool shared = false;
    bool write = false;
    std::vector<uint32_t> executions;             // per thread of the running block
    std::unordered_map<uint64_t, Instr> pending;  // (warp, k) -> instruction
    uint64_t requests = 0;
    uint64_t units = 0;  // sectors or wavefronts, summed over requests
    uint64_t bytes = 0;
    uint64_t worst = 0;  // the most sectors / wavefronts of one request
    uint64_t conflict = 0;        // shared: wavefronts beyond ceil(words / 32), summed
    uint64_t worst_conflict = 0;  // shared: the most of one request
};

std::unordered_map<uint64_t, CallSite> g_sites;
std::unordered_set<uint64_t> g_read_sectors, g_written_sectors;
kiln_emu_traffic g_totals{};
// The window's launches, one line each: the instance (kernel_signature's text), threads per
// block, dynamic shared bytes, blocks, DRAM bytes read + written.
std::string g_launches_text;

uint64_t site_key(const void* pc, bool shared) { return reinterpret_cast<uint64_t>(pc) ^ (uint64_t(shared) << 63); }

void count(Launch& L, uintptr_t addr, size_t n, bool write, bool shared, const void* pc) {
    CallSite& site = g_sites[site_key(pc, shared)];
    if (site.pc == nullptr) {
        site.pc = pc;
        site.shared = shared;
        site.write = write;
    }
    if (site.executions.size() < L.block_threads) site.executions.resize(L.block_threads, 0);
    const Thread& t = *L.current;
    const uint64_t k = site.executions[t.linear]++;
    Instr& in = site.pending[(uint64_t(t.warp) << 32) | k];
    in.bytes += n;
    if (shared) {
        for (uintptr_t w = addr >> 2; w <= (addr + n - 1) >> 2; ++w) in.units.push_back(w);
    } else {
        for (uintptr_t s = addr >> 5; s <= (addr + n - 1) >> 5; ++s) {
            in.units.push_back(s);
            (write ? g_written_sectors : g_read_sectors).insert(s);
        }
    }
}

// Wavefronts of one shared-memory request: distinct words per bank, the busiest bank decides.
uint64_t wavefronts(const std::vector<uint64_t>& words) {
    uint64_t per_bank[32] = {};
    for (uint64_t w : words) ++per_bank[w & 31];
    return *std::max_element(per_bank, per_bank + 32);
}

}  // namespace

void count_global(Launch& L, uintptr_t addr, size_t n, bool write, const void* pc) {
    count(L, addr, n, write, false, pc);
}

void count_shared(Launch& L, uintptr_t addr, size_t n, bool write, const void* pc) {
    count(L, addr, n, write, true, pc);
}

void count_block_end() {
    for (auto& [_, site] : g_sites) {
        for (auto& [__, in] : site.pending) {
            std::sort(in.units.begin(), in.units.end());
            in.units.erase(std::unique(in.units.begin(), in.units.end()), in.units.end());
            const uint64_t units = site.shared ? wavefronts(in.units) : in.units.size();
            site.requests += 1;
            site.units += units;
            site.bytes += in.bytes;
            site.worst = std::max(site.worst, units);
            if (site.shared) {
                const uint64_t fewest = (in.units.size() + 31) / 32;
                const uint64_t conflict = units > fewest ? units - fewest : 0;
                site.conflict += conflict;
                site.worst_conflict = std::max(site.worst_conflict, conflict);
            }
        }
        site.pending.clear();
        std::fill(site.executions.begin(), site.executions.end(), 0);
    }
}

void count_launch_end(const Launch& L) {
    g_totals.launches += 1;
    g_totals.dram_read_bytes += 32 * g_read_sectors.size();
    g_totals.dram_write_bytes += 32 * g_written_sectors.size();
    double warp_ns = 0.0;
    uint64_t timed_read = 0;
    latency_launch_end(&warp_ns, &timed_read);
    g_totals.timed_read_bytes += timed_read;
    g_totals.warp_ns += uint64_t(warp_ns + 0.5);
    char line[160];
    const uint64_t blocks = uint64_t(L.grid.x) * L.grid.y * L.grid.z;
    std::snprintf(line, sizeof line, "\t%u\t%zu\t%" PRIu64 "\t%zu\t%" PRIu64 "\t%.0f\n", L.block_threads,
                  L.dynamic_bytes, blocks, size_t(32) * (g_read_sectors.size() + g_written_sectors.size()),
                  timed_read, warp_ns);
    g_launches_text += (L.signature != nullptr ? L.signature : (L.kernel != nullptr ? L.kernel : "?"));
    g_launches_text += line;
    g_read_sectors.clear();
    g_written_sectors.clear();
}

}  // namespace kiln_emu

using namespace kiln_emu;

namespace {

bool g_was_checked = false;

void fold_sites() {
    for (const auto& [_, site] : g_sites) {
        if (site.shared) {
            g_totals.shared_requests += site.requests;
            g_totals.shared_wavefronts += site.units;
            g_totals.shared_worst_wavefronts = std::max(g_totals.shared_worst_wavefronts, site.worst);
            g_totals.shared_conflict_wavefronts += site.conflict;
            g_totals.shared_worst_conflict = std::max(g_totals.shared_worst_conflict, site.worst_conflict);
        } else if (site.write) {
            g_totals.store_requests += site.requests;
            g_totals.store_sectors += site.units;
            g_totals.store_bytes += site.bytes;
        } else {
            g_totals.load_requests += site.requests;
            g_totals.load_sectors += site.units;
            g_totals.load_bytes += site.bytes;
        }
    }
}

}  // namespace

extern "C" {

void kiln_emu_traffic_begin(void) {
    bool reopen;  // this thread's window is open: restart it (it already holds g_window_mutex)
    {
        std::lock_guard<std::recursive_mutex> lock(big_lock());
        reopen = count_this_launch();
    }
    if (!reopen) g_window_mutex.lock();  // waits while another thread's window is open
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    g_sites.clear();
    g_read_sectors.clear();
    g_written_sectors.clear();
    g_totals = kiln_emu_traffic{};
    g_launches_text.clear();
    // The counts come from the checked-mode hooks.
    if (!g_window) g_was_checked = g_checked;
    g_checked = true;
    g_window = true;
    g_owner = pthread_self();
}

void kiln_emu_traffic_end(kiln_emu_traffic* out) {
    {
        std::lock_guard<std::recursive_mutex> lock(big_lock());
        if (!count_this_launch()) {  // no window of this thread's is open: nothing was counted
            if (out != nullptr) *out = kiln_emu_traffic{};
            return;
        }
        fold_sites();
        if (out != nullptr) *out = g_totals;
        g_window = false;
        g_checked = g_was_checked;
    }
    g_window_mutex.unlock();
}

size_t kiln_emu_traffic_launches(char* buf, size_t len) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    if (buf != nullptr && len > 0) {
        const size_t n = std::min(len - 1, g_launches_text.size());
        std::copy(g_launches_text.begin(), g_launches_text.begin() + n, buf);
        buf[n] = '\0';
    }
    return g_launches_text.size() + 1;
}

size_t kiln_emu_traffic_sites(char* buf, size_t len) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    std::vector<const CallSite*> sites;
    for (const auto& [_, site] : g_sites) sites.push_back(&site);
    std::sort(sites.begin(), sites.end(), [](const CallSite* a, const CallSite* b) { return a->bytes > b->bytes; });
    std::string text;
    for (const CallSite* s : sites) {
        if (s->requests == 0) continue;
        char line[256];
        const double per = double(s->units) / double(s->requests);
        if (s->shared) {
            std::snprintf(line, sizeof line,
                          "shared %-5s %8" PRIu64 " requests %6.2f wavefronts/request (worst %" PRIu64
                          ", conflicts %.2f/request, worst %" PRIu64 ") ",
                          s->write ? "store" : "load", s->requests, per, s->worst,
                          double(s->conflict) / double(s->requests), s->worst_conflict);
        } else {
            std::snprintf(
                line, sizeof line, "global %-5s %8" PRIu64 " requests %6.2f sectors/request, %5.1f%% coalesced ",
                s->write ? "store" : "load", s->requests, per, 100.0 * double(s->bytes) / (32.0 * double(s->units)));
        }
        const std::string where = symbolize(s->pc);
        text += line + (where.empty() ? std::string("(no line tables)") : where) + "\n";
    }
    if (buf != nullptr && len > 0) {
        const size_t n = std::min(len - 1, text.size());
        std::copy(text.begin(), text.begin() + n, buf);
        buf[n] = '\0';
    }
    return text.size() + 1;
}

}  // extern "C"

// kiln's CUDA emulator: checked mode. The kernel translation units are compiled with
// -fsanitize=thread but libtsan is not linked: these are the __tsan_* functions the compiler calls
// before every load and store, and they check the access against the emulator's view of memory:
//
//   fiber stacks             local memory: nothing to check
//   the parameter buffer     kernel arguments: nothing to check
//   dynamic shared memory    bounds (redzone), written-before-read, races between barriers
//   emulated allocations     bounds (redzones), alignment, written-before-read, races between
//                            blocks of one launch (write/write, write/read)
//   static storage of the    __shared__ variables (function-local statics): written-before-read
//   emulated library         in this block, races between barriers
//   anything else            host memory the kernel cannot legally reach on a GPU either; ignored
//
// A race inside a block is two accesses to a byte by different threads, at least one a write, in
// the same barrier interval, unless both threads are lanes of one warp and a warp collective
// (shuffle, __syncwarp, ...) came between them (the Thread::wsync clocks). Between blocks of one
// launch every write/write and write/read pair on a byte is a race (atomics excepted).

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "internal.h"

namespace kiln_emu {
namespace {

uintptr_t g_stack_lo = 0, g_stack_span = 0;

struct Range {
    uintptr_t lo, hi;
};
std::vector<Range> g_static;  // writable segments of the object the emulator is linked into
std::vector<Range> g_image;   // all its loaded segments (constant tables are read from these)

// Per byte of shared memory: the last write and the reads since it, within a barrier interval.
// A read of a byte not yet written is held back until the barrier interval ends ("pending"): if
// another thread writes the byte in the same interval, the two raced (a barrier is missing; the
// fibers merely ran the reader first); if nothing does, it was a read of uninitialised memory.
struct Cell {
    uint32_t w_epoch = 0, w_wsync = 0;
    uint32_t r_epoch = 0, r_wsync = 0;
    uint32_t u_epoch = 0, u_wsync = 0;  // the first pending unwritten read of this interval
    uint16_t w_tid = 0, r_tid = 0, u_tid = 0;
    int16_t r_warp = 0;
    const void* u_pc = nullptr;
    uint8_t u_bytes = 0;
};
constexpr uint16_t kManyReaders = 0xffff;
constexpr int16_t kManyWarps = -1;

struct SharedRegion {
    uintptr_t lo = 0, hi = 0;  // usable bytes
    uintptr_t end = 0;         // hi + redzone (dynamic shared memory only; a redzone precedes lo too)
    std::vector<uint8_t> written;
    // The destination of a cp.async this block issued and no wait_group has completed yet: the
    // copy may land at any moment until then, so reading it is reading a stale value.
    std::vector<uint8_t> in_flight;
    std::vector<Cell> cells;
};

constexpr uintptr_t kPage = 4096;
std::unordered_map<uintptr_t, SharedRegion*> g_pages;  // static shared memory, by page
SharedRegion g_dynamic;
Alloc* g_last_alloc = nullptr;

struct Pending {
    SharedRegion* region;
    size_t index;
};
std::vector<Pending> g_pending;

int find_static_segments(dl_phdr_info* info, size_t, void* self) {
    const uintptr_t me = reinterpret_cast<uintptr_t>(self);
    bool mine = false;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr) & ph = info->dlpi_phdr[i];
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && me >= lo && me < lo + ph.p_memsz) mine = true;
    }
    if (!mine) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr) & ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        g_image.push_back(Range{lo, lo + ph.p_memsz});
        if (ph.p_flags & PF_W) g_static.push_back(Range{lo, lo + ph.p_memsz});
    }
    return 1;
}

void ensure_init() {
    static bool done = false;
    if (done) return;
    done = true;
    uintptr_t lo, hi;
    stack_region(&lo, &hi);
    g_stack_lo = lo;
    g_stack_span = hi - lo;
    dl_iterate_phdr(find_static_segments, &g_stack_lo);
}

bool in_ranges(const std::vector<Range>& ranges, uintptr_t a) {
    for (const Range& r : ranges) {
        if (a >= r.lo && a < r.hi) return true;
    }
    return false;
}

bool in_static(uintptr_t a) { return in_ranges(g_static, a); }

uint3 thread_of(const Launch& L, uint32_t linear) {
    return uint3{linear % L.block.x, (linear / L.block.x) % L.block.y, linear / (L.block.x * L.block.y)};
}

uint3 block_of(const Launch& L, uint32_t serial) {
    const uint64_t b = serial - L.serial_base - 1;
    return uint3{uint32_t(b % L.grid.x), uint32_t((b / L.grid.x) % L.grid.y),
                 uint32_t(b / (uint64_t(L.grid.x) * L.grid.y))};
}

const char* verb(bool write) { return write ? "write" : "read"; }

std::string sized(size_t n, bool write) { return std::to_string(n) + "-byte " + verb(write); }

// An access that is no allocation's, no shared memory's, no fiber stack's and not the parameter
// buffer's: a freed allocation's (always a finding: freed reservations stay reserved, so nothing
// else can be there), the library's own constant data (legal), or, unless the launch was given
// host pointers, a wild pointer.
void unowned_access(const Launch& L, uintptr_t a, size_t n, bool write, const void* pc, const char* file, int line) {
    if (const size_t size = freed_size(a)) {
        fail(FindingKind::kOutOfBounds, sized(n, write) + " of a freed " + std::to_string(size) + "-byte allocation",
             file, line, pc);
    }
    if (L.host_pointers || in_ranges(g_image, a)) return;
    char buf[192];
    std::snprintf(buf, sizeof buf,
                  "%s at 0x%" PRIxPTR ", which is in no allocation (more than %zu KiB from every one), shared "
                  "memory or constant data: a wild pointer",
                  sized(n, write).c_str(), a, kGuard >> 10);
    fail(FindingKind::kOutOfBounds, buf, file, line, pc);
}

// ---- emulated allocations (global memory) -----------------------------------------------------

void global_access(Launch& L, Alloc* a, uintptr_t addr, size_t n, bool write, bool aligned, const void* pc) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(a->base);
    if (addr < base || addr + n > base + a->size) {
        char buf[256];
        if (addr < base) {
            std::snprintf(buf, sizeof buf, "%s %zu bytes before the start of a %zu-byte allocation",
                          sized(n, write).c_str(), size_t(base - addr), a->size);
        } else {
            std::snprintf(buf, sizeof buf, "%s at byte %zu of a %zu-byte allocation (%zu bytes past its end)",
                          sized(n, write).c_str(), size_t(addr - base), a->size, size_t(addr + n - base - a->size));
        }
        fail(FindingKind::kOutOfBounds, buf, nullptr, 0, pc);
    }
    if (aligned && addr % n != 0) {
        fail(FindingKind::kMisaligned,
             sized(n, write) + " at byte " + std::to_string(addr - base) + " of an allocation (not " +
                 std::to_string(n) + "-byte aligned)",
             nullptr, 0, pc);
    }
    const size_t off = addr - base;
    const uint32_t me = L.serial, first = L.serial_base;
    for (size_t i = off; i < off + n; ++i) {
        const uint32_t w = a->writer[i];
        const bool other_writer = w > first && w != me;
        if (!write) {
            if (!a->written[i]) {
                fail(FindingKind::kUninitialised,
                     sized(n, false) + " at byte " + std::to_string(off) + " of a " + std::to_string(a->size) +
                         "-byte allocation that nothing has written",
                     nullptr, 0, pc);
            }
            if (other_writer && !(L.block_acquired && L.released.count(w) != 0)) {
                fail(FindingKind::kRace,
                     sized(n, false) + " at byte " + std::to_string(off) + " of an allocation that block " +
                         xyz(block_of(L, w)) + " of the same launch wrote",
                     nullptr, 0, pc);
            }
            uint32_t& r = a->reader[i];
            r = (r >= first && r != me) ? first : me;
        } else {
            const uint32_t r = a->reader[i];
            if (other_writer) {
                fail(FindingKind::kRace,
                     sized(n, true) + " at byte " + std::to_string(off) + " of an allocation that block " +
                         xyz(block_of(L, w)) + " of the same launch also wrote",
                     nullptr, 0, pc);
            }
            if (r >= first && r != me) {
                const std::string who = r == first ? "other blocks" : "block " + xyz(block_of(L, r));
                fail(FindingKind::kRace,
                     sized(n, true) + " at byte " + std::to_string(off) + " of an allocation that " + who +
                         " of the same launch read",
                     nullptr, 0, pc);
            }
            a->writer[i] = me;
            a->written[i] = 1;
        }
    }
}

// ---- shared memory ----------------------------------------------------------------------------

SharedRegion* static_page(uintptr_t page) {
    auto it = g_pages.find(page);
    if (it != g_pages.end()) return it->second;
    SharedRegion* r = new SharedRegion;
    r->lo = page;
    r->hi = r->end = page + kPage;
    r->written.assign(kPage, 0);
    r->in_flight.assign(kPage, 0);
    r->cells.assign(kPage, Cell{});
    g_pages.emplace(page, r);
    return r;
}

void shared_byte(Launch& L, SharedRegion& s, size_t n, uintptr_t byte, bool write, const void* pc) {
    const Thread& t = *L.current;
    const size_t i = byte - s.lo;
    Cell& c = s.cells[i];
    const uint32_t e = L.epoch;
    auto ordered = [&](uint32_t tid, uint32_t wsync) { return tid / kWarpSize == t.warp && t.wsync > wsync; };
    const bool other_write = c.w_epoch == e && c.w_tid != t.linear && !ordered(c.w_tid, c.w_wsync);
    const char* space = &s == &g_dynamic ? "dynamic shared memory" : "shared memory";
    if (s.in_flight[i]) {
        if (!write) {
            // Its value is undefined until the wait, as unwritten memory's is.
            fail(FindingKind::kUninitialised,
                 sized(n, false) + " of " + space +
                     " that a cp.async still in flight will overwrite (no wait_group has covered its group: "
                     "a stale value)",
                 nullptr, 0, pc);
        }
        s.in_flight[i] = 0;  // the copy landing (its wait), or a plain write after it
    }
    if (!write) {
        if (!s.written[i] && c.u_epoch != e) {
            c.u_epoch = e;
            c.u_tid = uint16_t(t.linear);
            c.u_wsync = t.wsync;
            c.u_pc = pc;
            c.u_bytes = uint8_t(n);
            g_pending.push_back(Pending{&s, i});
        }
        if (other_write) {
            fail(FindingKind::kRace,
                 sized(n, false) + " of " + space + " that thread " + xyz(thread_of(L, c.w_tid)) +
                     " wrote since the last __syncthreads (a barrier, or __syncwarp within a warp, is missing)",
                 nullptr, 0, pc);
        }
        if (c.r_epoch != e) {
            c.r_epoch = e;
            c.r_tid = uint16_t(t.linear);
            c.r_warp = int16_t(t.warp);
            c.r_wsync = t.wsync;
        } else {
            if (c.r_tid != t.linear) c.r_tid = kManyReaders;
            if (c.r_warp != int16_t(t.warp)) c.r_warp = kManyWarps;
            if (t.wsync > c.r_wsync) c.r_wsync = t.wsync;
        }
        return;
    }
    if (c.u_epoch == e && c.u_tid != t.linear && !ordered(c.u_tid, c.u_wsync)) {
        fail(FindingKind::kRace,
             sized(c.u_bytes, false) + " of " + space + " by thread " + xyz(thread_of(L, c.u_tid)) + " before thread " +
                 xyz(t.idx) +
                 " wrote it in the same barrier interval (a barrier, or __syncwarp within a warp, is "
                 "missing)",
             nullptr, 0, c.u_pc);
    }
    if (other_write) {
        fail(FindingKind::kRace,
             sized(n, true) + " of " + space + " that thread " + xyz(thread_of(L, c.w_tid)) +
                 " also wrote since the last __syncthreads",
             nullptr, 0, pc);
    }
    if (c.r_epoch == e && c.r_tid != t.linear) {
        const bool warp_ordered = c.r_warp == int16_t(t.warp) && t.wsync > c.r_wsync;
        if (!warp_ordered) {
            const std::string who = c.r_tid == kManyReaders ? "other threads" : "thread " + xyz(thread_of(L, c.r_tid));
            fail(FindingKind::kRace,
                 sized(n, true) + " of " + space + " that " + who +
                     " read since the last __syncthreads (a barrier between the reads and this write is missing)",
                 nullptr, 0, pc);
        }
    }
    c.w_epoch = e;
    c.w_tid = uint16_t(t.linear);
    c.w_wsync = t.wsync;
    s.written[i] = 1;
}

void shared_access(Launch& L, SharedRegion& s, uintptr_t addr, size_t n, bool write, bool aligned, const void* pc) {
    if (addr < s.lo) {
        fail(FindingKind::kOutOfBounds,
             sized(n, write) + " " + std::to_string(s.lo - addr) + " bytes before the start of " +
                 std::to_string(s.hi - s.lo) + " bytes of dynamic shared memory",
             nullptr, 0, pc);
    }
    if (addr + n > s.hi) {
        fail(FindingKind::kOutOfBounds,
             sized(n, write) + " at byte " + std::to_string(addr - s.lo) + " of " + std::to_string(s.hi - s.lo) +
                 " bytes of dynamic shared memory",
             nullptr, 0, pc);
    }
    if (aligned && addr % n != 0) {
        fail(FindingKind::kMisaligned, sized(n, write) + " of shared memory not " + std::to_string(n) + "-byte aligned",
             nullptr, 0, pc);
    }
    for (uintptr_t b = addr; b < addr + n; ++b) shared_byte(L, s, n, b, write, pc);
}

void static_access(Launch& L, uintptr_t addr, size_t n, bool write, bool aligned, const void* pc) {
    if (aligned && addr % n != 0) {
        fail(FindingKind::kMisaligned, sized(n, write) + " of shared memory not " + std::to_string(n) + "-byte aligned",
             nullptr, 0, pc);
    }
    for (uintptr_t b = addr; b < addr + n; ++b) {
        SharedRegion* page = static_page(b & ~(kPage - 1));
        shared_byte(L, *page, n, b, write, pc);
    }
}

// Whether byte `a` lies in the launch's dynamic shared buffer or its redzones.
bool in_dynamic_span(uintptr_t a) { return g_dynamic.lo != 0 && a >= g_dynamic.lo - kRedzone && a < g_dynamic.end; }

__attribute__((noinline)) void slow_access(Launch& L, uintptr_t a, size_t n, bool write, bool aligned, const void* pc) {
    if (in_dynamic_span(a)) {
        shared_access(L, g_dynamic, a, n, write, aligned, pc);
        if (g_counting) {
            count_shared(L, a, n, write, pc);
            latency_access(L, a, n, write, true);
        }
        return;
    }
    Alloc* al = g_last_alloc;
    if (al == nullptr || a < reinterpret_cast<uintptr_t>(al->reserve) ||
        a >= reinterpret_cast<uintptr_t>(al->reserve) + al->reserve_bytes) {
        al = find_alloc(a);
        if (al != nullptr) g_last_alloc = al;
    }
    if (al != nullptr) {
        global_access(L, al, a, n, write, aligned, pc);
        if (g_counting) {
            count_global(L, a, n, write, pc);
            latency_access(L, a, n, write, false);
        }
        return;
    }
    if (in_static(a)) {
        static_access(L, a, n, write, aligned, pc);
        if (g_counting) {
            count_shared(L, a, n, write, pc);
            latency_access(L, a, n, write, true);
        }
        return;
    }
    // Indices far out of range of an allocation land in its guards, above; the emulated shared
    // library may run kernels on host pointers (C, Python), which unowned_access allows.
    unowned_access(L, a, n, write, pc, nullptr, 0);
}

thread_local uint32_t t_accesses = 0;

__attribute__((always_inline)) inline void access(const void* p, size_t n, bool write, bool aligned, const void* pc) {
    Launch* L = t_launch;
    if (L == nullptr || L->current == nullptr || !g_checked) return;  // host code, or unchecked
    // Every 16384 accesses, how long this thread has run since it was last switched to: a
    // spin-wait reads memory, so it comes here (fibers are never preempted).
    if ((++t_accesses & 0x3fffu) == 0) check_hang(*L, pc);
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (a - g_stack_lo < g_stack_span) return;             // a fiber's own stack
    if (a - L->args_lo < L->args_hi - L->args_lo) return;  // the parameter buffer
    slow_access(*L, a, n, write, aligned, pc);
}

}  // namespace

bool pending_reads(PendingRead* first) {
    if (g_pending.empty()) return false;
    const Pending& p = g_pending.front();
    const Cell& c = p.region->cells[p.index];
    const bool dynamic = p.region == &g_dynamic;
    first->thread = thread_of(*t_launch, c.u_tid);
    first->pc = c.u_pc;
    first->what = sized(c.u_bytes, false) + " of " + (dynamic ? "dynamic shared memory" : "shared memory") +
                  " that no thread of this block has written";
    return true;
}

void end_barrier_interval() { g_pending.clear(); }

void reset_shared_shadow() {
    g_pending.clear();
    ensure_init();
    g_last_alloc = nullptr;  // allocations may have been freed since the last launch
    for (auto& [_, page] : g_pages) {
        std::fill(page->written.begin(), page->written.end(), 0);
        std::fill(page->in_flight.begin(), page->in_flight.end(), 0);
    }
    std::fill(g_dynamic.written.begin(), g_dynamic.written.end(), 0);
    std::fill(g_dynamic.in_flight.begin(), g_dynamic.in_flight.end(), 0);
}

void set_dynamic_shared(char* p, size_t n) {
    g_dynamic.lo = reinterpret_cast<uintptr_t>(p);
    g_dynamic.hi = g_dynamic.lo + n;
    g_dynamic.end = p == nullptr ? 0 : g_dynamic.hi + kRedzone;
    g_dynamic.written.assign(n, 0);
    g_dynamic.in_flight.assign(n, 0);
    g_dynamic.cells.assign(n, Cell{});
}

void check_atomic(void* addr, size_t bytes, const char* file, int line) {
    Launch* L = t_launch;
    if (L == nullptr || L->current == nullptr || !g_checked) return;
    if (g_counting) latency_wait(*L->current);
    const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    Alloc* al = find_alloc(a);
    if (al == nullptr) {
        // Shared memory atomics: nothing to check beyond the hooks.
        if (!in_dynamic_span(a) && !in_static(a)) unowned_access(*L, a, bytes, true, nullptr, file, line);
        return;
    }
    const uintptr_t base = reinterpret_cast<uintptr_t>(al->base);
    if (a < base || a + bytes > base + al->size) {
        fail(FindingKind::kOutOfBounds,
             std::to_string(bytes) + "-byte atomic outside a " + std::to_string(al->size) + "-byte allocation", file,
             line, nullptr);
    }
    if (a % bytes != 0) fail(FindingKind::kMisaligned, "atomic not naturally aligned", file, line, nullptr);
    for (size_t i = a - base; i < a - base + bytes; ++i) {
        if (!al->written[i]) {
            fail(FindingKind::kUninitialised, "atomic on memory that nothing has written", file, line, nullptr);
        }
    }
}

namespace {

// The shared-memory region holding byte `a` (the dynamic buffer, or a page of static storage),
// or null.
SharedRegion* shared_region_of(uintptr_t a) {
    if (g_dynamic.lo != 0 && a >= g_dynamic.lo && a < g_dynamic.hi) return &g_dynamic;
    if (in_static(a)) return static_page(a & ~(kPage - 1));
    return nullptr;
}

}  // namespace

__attribute__((noinline)) void ptx_operand(const void* p, size_t bytes, PtxSpace space, const char* rule) {
    Launch* L = t_launch;
    if (L == nullptr || L->current == nullptr) return;
    const void* pc = __builtin_return_address(0);
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    // A GPU faults on a misaligned operand whatever the checking mode.
    if (a % bytes != 0) {
        fail(FindingKind::kMisaligned,
             std::string(rule) + ": operand address not " + std::to_string(bytes) + "-byte aligned", nullptr, 0, pc);
    }
    if (!g_checked) return;  // the regions below are tracked in checked mode only
    // Global operands of a launch given host pointers (the emulated library called from C or
    // Python on host buffers) may be host memory, as its plain accesses may (unowned_access).
    const bool ok = space == PtxSpace::kShared
                        ? shared_region_of(a) != nullptr
                        : find_alloc(a) != nullptr ||
                              (L->host_pointers && shared_region_of(a) == nullptr && host_range_ok(p, bytes));
    if (!ok) {
        fail(FindingKind::kOutOfBounds,
             std::string(rule) + ": operand not in " + (space == PtxSpace::kShared ? "shared" : "global") + " memory",
             nullptr, 0, pc);
    }
}

__attribute__((noinline)) void cp_async_in_flight(void* dst, size_t bytes) {
    Launch* L = t_launch;
    if (L == nullptr || L->current == nullptr || !g_checked) return;
    for (uintptr_t b = reinterpret_cast<uintptr_t>(dst); b < reinterpret_cast<uintptr_t>(dst) + bytes; ++b) {
        if (SharedRegion* r = shared_region_of(b)) r->in_flight[b - r->lo] = 1;
    }
}

std::string symbolize(const void* pc) {
    Dl_info info;
    if (dladdr(pc, &info) == 0 || info.dli_fbase == nullptr) return "";
    const auto* ehdr = static_cast<const ElfW(Ehdr)*>(info.dli_fbase);
    const uintptr_t at = reinterpret_cast<uintptr_t>(pc) - 1;  // inside the call, not after it
    const uintptr_t rel = ehdr->e_type == ET_EXEC ? at : at - reinterpret_cast<uintptr_t>(info.dli_fbase);
    // The main program's dli_fname is argv[0]; /proc/self/exe names the file whatever the cwd
    // (resolved here: in addr2line's process it would name addr2line).
    const bool main_program = info.dli_fname == nullptr || std::strstr(info.dli_fname, ".so") == nullptr;
    std::string file = info.dli_fname != nullptr ? info.dli_fname : "";
    if (main_program) {
        char exe[4096];
        const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) return "";
        file.assign(exe, size_t(n));
    }
    char cmd[1024];
    std::snprintf(cmd, sizeof cmd, "addr2line -i -f -C -e '%s' 0x%" PRIxPTR " 2>/dev/null", file.c_str(), rel);
    FILE* f = popen(cmd, "r");
    if (f == nullptr) return "";
    std::string out, function;
    char line[4096];
    bool odd = true;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        std::string s(line);
        while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
        if (odd) {
            function = s;
        } else {
            if (s.rfind("??", 0) == 0) continue;
            // Paths relative to the repository: from the last "kernels/" on.
            const size_t k = s.rfind("kernels/");
            if (k != std::string::npos) s = s.substr(k);
            const size_t paren = s.find(" (discriminator");
            if (paren != std::string::npos) s = s.substr(0, paren);
            // The function without template arguments or parameters.
            std::string name;
            int depth = 0;
            const std::string anonymous = "(anonymous namespace)::";
            for (size_t k = function.find(anonymous); k != std::string::npos; k = function.find(anonymous)) {
                function.erase(k, anonymous.size());
            }
            for (char ch : function) {
                if (ch == '(' && depth == 0) break;
                if (ch == '<') ++depth;
                if (depth == 0) name += ch;
                if (ch == '>') --depth;
            }
            out += (out.empty() ? "" : ", inlined in ") + s + " (" + name + ")";
        }
        odd = !odd;
    }
    pclose(f);
    return out;
}

}  // namespace kiln_emu

using kiln_emu::access;

// ---- the hooks ----------------------------------------------------------------------------------
// Names and signatures are those GCC's -fsanitize=thread emits calls to.

#define KILN_EMU_PC __builtin_return_address(0)

extern "C" {

void __tsan_init(void) {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit(void) {}

void __tsan_read1(void* p) { access(p, 1, false, true, KILN_EMU_PC); }
void __tsan_read2(void* p) { access(p, 2, false, true, KILN_EMU_PC); }
void __tsan_read4(void* p) { access(p, 4, false, true, KILN_EMU_PC); }
void __tsan_read8(void* p) { access(p, 8, false, true, KILN_EMU_PC); }
void __tsan_read16(void* p) { access(p, 16, false, true, KILN_EMU_PC); }
void __tsan_write1(void* p) { access(p, 1, true, true, KILN_EMU_PC); }
void __tsan_write2(void* p) { access(p, 2, true, true, KILN_EMU_PC); }
void __tsan_write4(void* p) { access(p, 4, true, true, KILN_EMU_PC); }
void __tsan_write8(void* p) { access(p, 8, true, true, KILN_EMU_PC); }
void __tsan_write16(void* p) { access(p, 16, true, true, KILN_EMU_PC); }
void __tsan_unaligned_read2(void* p) { access(p, 2, false, false, KILN_EMU_PC); }
void __tsan_unaligned_read4(void* p) { access(p, 4, false, false, KILN_EMU_PC); }
void __tsan_unaligned_read8(void* p) { access(p, 8, false, false, KILN_EMU_PC); }
void __tsan_unaligned_read16(void* p) { access(p, 16, false, false, KILN_EMU_PC); }
void __tsan_unaligned_write2(void* p) { access(p, 2, true, false, KILN_EMU_PC); }
void __tsan_unaligned_write4(void* p) { access(p, 4, true, false, KILN_EMU_PC); }
void __tsan_unaligned_write8(void* p) { access(p, 8, true, false, KILN_EMU_PC); }
void __tsan_unaligned_write16(void* p) { access(p, 16, true, false, KILN_EMU_PC); }
void __tsan_read_range(void* p, unsigned long n) { access(p, n, false, false, KILN_EMU_PC); }
void __tsan_write_range(void* p, unsigned long n) { access(p, n, true, false, KILN_EMU_PC); }
void __tsan_volatile_read1(void* p) { access(p, 1, false, true, KILN_EMU_PC); }
void __tsan_volatile_read2(void* p) { access(p, 2, false, true, KILN_EMU_PC); }
void __tsan_volatile_read4(void* p) { access(p, 4, false, true, KILN_EMU_PC); }
void __tsan_volatile_read8(void* p) { access(p, 8, false, true, KILN_EMU_PC); }
void __tsan_volatile_read16(void* p) { access(p, 16, false, true, KILN_EMU_PC); }
void __tsan_volatile_write1(void* p) { access(p, 1, true, true, KILN_EMU_PC); }
void __tsan_volatile_write2(void* p) { access(p, 2, true, true, KILN_EMU_PC); }
void __tsan_volatile_write4(void* p) { access(p, 4, true, true, KILN_EMU_PC); }
void __tsan_volatile_write8(void* p) { access(p, 8, true, true, KILN_EMU_PC); }
void __tsan_volatile_write16(void* p) { access(p, 16, true, true, KILN_EMU_PC); }

}  // extern "C"

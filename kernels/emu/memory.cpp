// kiln's CUDA emulator: emulated device memory. Each allocation is host memory with a redzone on
// both sides and a shadow (written?, last writing block, last reading block per byte) that
// checked mode reads and updates at every kernel access (check.cpp). Host-side copies and fills
// mark bytes written; kernels' stores do the same through the hooks.

#include <cstdlib>
#include <cstring>
#include <deque>

#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "kiln_emu.h"

namespace kiln_emu {
namespace {

// Keyed by raw start; the map is only touched with big_lock() held.
std::map<uintptr_t, Alloc*>& allocs() {
    static std::map<uintptr_t, Alloc*> m;
    return m;
}

// cudaMalloc's alignment; also keeps every 16-byte vector access of a kernel aligned.
constexpr size_t kAlign = 256;

// Freed reservations, still reserved without access: by start, [start, end) and the size the
// allocation had; and the order they were freed in (the oldest is unmapped past kQuarantine).
struct Freed {
    uintptr_t end;
    size_t size;
};
std::map<uintptr_t, Freed>& freed() {
    static std::map<uintptr_t, Freed> m;
    return m;
}
std::deque<uintptr_t>& freed_order() {
    static std::deque<uintptr_t> q;
    return q;
}

}  // namespace

Alloc* find_alloc(uintptr_t p) {
    auto& m = allocs();
    auto it = m.upper_bound(p);
    if (it == m.begin()) return nullptr;
    --it;
    Alloc* a = it->second;
    const uintptr_t end = reinterpret_cast<uintptr_t>(a->reserve) + a->reserve_bytes;
    return p < end ? a : nullptr;
}

size_t freed_size(uintptr_t p) {
    auto& m = freed();
    auto it = m.upper_bound(p);
    if (it == m.begin()) return 0;
    --it;
    return p < it->second.end ? it->second.size : 0;
}

bool is_host_pointer(const void* p) {
    return p != nullptr && find_alloc(reinterpret_cast<uintptr_t>(p)) == nullptr;
}

bool host_range_ok(const void* p, size_t n) {
    if (n == 0) return true;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    if (freed_size(lo) != 0 || freed_size(lo + n - 1) != 0) return false;  // a freed allocation
    Alloc* a = find_alloc(lo);
    Alloc* b = find_alloc(lo + n - 1);
    if (a == nullptr && b == nullptr) return true;  // host memory
    if (a != b || a == nullptr) return false;
    const uintptr_t base = reinterpret_cast<uintptr_t>(a->base);
    return lo >= base && lo + n <= base + a->size;
}

bool mark_host_write(void* p, size_t n) {
    if (!host_range_ok(p, n)) return false;
    if (n == 0) return true;
    Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(p));
    if (a != nullptr) std::memset(a->written + (static_cast<char*>(p) - a->base), 1, n);
    return true;
}

void reset_serials() {
    for (auto& [_, a] : allocs()) {
        std::memset(a->writer, 0, a->capacity * sizeof(uint32_t));
        std::memset(a->reader, 0, a->capacity * sizeof(uint32_t));
    }
}

}  // namespace kiln_emu

using namespace kiln_emu;

extern "C" {

void* kiln_emu_malloc(size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    const size_t capacity = (bytes + kAlign - 1) / kAlign * kAlign;
    const size_t total = kRedzone + capacity + kRedzone;
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t mapped = (total + page - 1) / page * page;
    const size_t reserve_bytes = kGuard + mapped + kGuard;
    // Reserved without access (the guards stay so; only the hooks ever look at their addresses,
    // and a finding abandons the access before it happens), then the middle made usable.
    void* reserve = mmap(nullptr, reserve_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserve == MAP_FAILED) return nullptr;
    char* raw = static_cast<char*>(reserve) + kGuard;
    if (mprotect(raw, mapped, PROT_READ | PROT_WRITE) != 0) {
        munmap(reserve, reserve_bytes);
        return nullptr;
    }
    Alloc* a = new Alloc;
    a->reserve = static_cast<char*>(reserve);
    a->reserve_bytes = reserve_bytes;
    a->raw = raw;
    a->base = raw + kRedzone;
    a->size = bytes;
    a->capacity = capacity;
    a->written = static_cast<uint8_t*>(std::calloc(capacity + 1, 1));
    a->writer = static_cast<uint32_t*>(std::calloc(capacity + 1, sizeof(uint32_t)));
    a->reader = static_cast<uint32_t*>(std::calloc(capacity + 1, sizeof(uint32_t)));
    if (a->written == nullptr || a->writer == nullptr || a->reader == nullptr) {
        std::free(a->written);
        std::free(a->writer);
        std::free(a->reader);
        munmap(reserve, reserve_bytes);
        delete a;
        return nullptr;
    }
    std::memset(raw, 0xff, total);
    allocs()[reinterpret_cast<uintptr_t>(reserve)] = a;
    return a->base;
}

void kiln_emu_free(void* ptr) {
    if (ptr == nullptr) return;
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    Alloc* a = find_alloc(reinterpret_cast<uintptr_t>(ptr));
    if (a == nullptr || a->base != ptr) return;
    allocs().erase(reinterpret_cast<uintptr_t>(a->reserve));
    std::free(a->written);
    std::free(a->writer);
    std::free(a->reader);
    // Quarantined: the pages go back to the system, the addresses stay reserved (freed_size).
    const uintptr_t lo = reinterpret_cast<uintptr_t>(a->reserve);
    if (mprotect(a->reserve, a->reserve_bytes, PROT_NONE) != 0 ||
        madvise(a->reserve, a->reserve_bytes, MADV_DONTNEED) != 0) {
        munmap(a->reserve, a->reserve_bytes);
    } else {
        freed()[lo] = Freed{lo + a->reserve_bytes, a->size};
        freed_order().push_back(lo);
        if (freed_order().size() > kQuarantine) {
            const uintptr_t old = freed_order().front();
            freed_order().pop_front();
            auto it = freed().find(old);
            munmap(reinterpret_cast<void*>(old), it->second.end - old);
            freed().erase(it);
        }
    }
    delete a;
}

int kiln_emu_memcpy(void* dst, const void* src, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    if (!host_range_ok(src, bytes) || !mark_host_write(dst, bytes)) return 1;
    if (bytes > 0) std::memmove(dst, src, bytes);
    return 0;
}

int kiln_emu_memset(void* dst, int value, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(big_lock());
    if (!mark_host_write(dst, bytes)) return 1;
    if (bytes > 0) std::memset(dst, value, bytes);
    return 0;
}

}  // extern "C"

// kiln's CUDA emulator: fibers. Every CUDA thread of the running block is a user-space context
// with a stack of its own; a barrier or warp collective switches to the next thread in a few
// instructions (no system call, unlike swapcontext, which saves the signal mask).
//
// Stacks come from one PROT_NONE reservation (so the checker recognises a stack address with two
// compares) and are made usable lazily, one slot at a time, each with a guard page below it.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "internal.h"

namespace kiln_emu {
namespace {

// Kernels keep small frames (register-sized locals, a few packs); 256 KiB leaves room for the
// instrumented, less optimised frames of checked mode. Only touched pages are ever committed.
constexpr size_t kStackBytes = size_t(256) << 10;

struct Pool {
    char* region = nullptr;
    size_t page = 0;
    bool mapped[kMaxBlockThreads] = {};
};

Pool& pool() {
    static Pool p = [] {
        Pool q;
        q.page = size_t(sysconf(_SC_PAGESIZE));
        void* r = mmap(nullptr, kStackBytes * kMaxBlockThreads, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (r == MAP_FAILED) {
            std::fprintf(stderr, "kiln emulator: cannot reserve fiber stacks\n");
            std::abort();
        }
        q.region = static_cast<char*>(r);
        return q;
    }();
    return p;
}

}  // namespace

Stack stack_for(int i) {
    Pool& p = pool();
    char* slot = p.region + size_t(i) * kStackBytes;
    if (!p.mapped[i]) {
        // The lowest page stays PROT_NONE: an overflowing fiber faults instead of corrupting
        // the stack below it.
        if (mprotect(slot + p.page, kStackBytes - p.page, PROT_READ | PROT_WRITE) != 0) {
            std::fprintf(stderr, "kiln emulator: cannot map a fiber stack\n");
            std::abort();
        }
        p.mapped[i] = true;
    }
    return Stack{slot + p.page, slot + kStackBytes};
}

void stack_region(uintptr_t* lo, uintptr_t* hi) {
    Pool& p = pool();
    *lo = reinterpret_cast<uintptr_t>(p.region);
    *hi = *lo + kStackBytes * kMaxBlockThreads;
}

#if defined(__x86_64__)

// kiln_emu_switch(save, next): pushes the System V callee-saved registers and the SSE/x87
// control words, stores rsp in *save, loads next as rsp, pops the same and returns into it.
// kiln_emu_fiber_start is where a fresh context "returns" to: it calls r13(r12).
asm(R"(
    .text
    .globl kiln_emu_switch
    .type kiln_emu_switch, @function
kiln_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size kiln_emu_switch, .-kiln_emu_switch

    .globl kiln_emu_fiber_start
    .type kiln_emu_fiber_start, @function
kiln_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size kiln_emu_fiber_start, .-kiln_emu_fiber_start
)");

extern "C" void kiln_emu_fiber_start();

void* make_context(const Stack& stack, void (*entry)(void*), void* arg) {
    // After the switch pops 8 + 6·8 bytes and returns, rsp must be 16-byte aligned so that the
    // call in kiln_emu_fiber_start enters `entry` with the ABI's alignment.
    uintptr_t top = reinterpret_cast<uintptr_t>(stack.hi) & ~uintptr_t(15);
    top -= 16;
    uint64_t* sp = reinterpret_cast<uint64_t*>(top - 64);
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    std::memset(sp, 0, 64);
    std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpucw, 2);
    sp[1] = 0;                                                  // r15
    sp[2] = 0;                                                  // r14
    sp[3] = reinterpret_cast<uint64_t>(entry);                  // r13
    sp[4] = reinterpret_cast<uint64_t>(arg);                    // r12
    sp[5] = 0;                                                  // rbx
    sp[6] = 0;                                                  // rbp
    sp[7] = reinterpret_cast<uint64_t>(&kiln_emu_fiber_start);  // return address
    return sp;
}

#else
#error "kiln's emulator switches fibers with x86-64 code; port kiln_emu_switch to this architecture"
#endif

}  // namespace kiln_emu

// The only home of inline PTX in kiln: tensor-core MMA (f16/bf16 and f64), ldmatrix, cp.async and the SFU's
// approximate rcp/ex2/sqrt, each a wrapper
// whose emulated body (KILN_EMU) follows the PTX ISA's definition exactly, fragment layouts
// included, so a kernel built on them runs on the emulator as it would on a GPU.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 (groupID) and t = lane % 4 (threadID_in_group); a register holding two 16-bit
// elements keeps the lower column (or row, for B) in its low half:
//   A (16x16, row-major)  a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//                         a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, "col")       b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   C, D (16x8, f32)      c[0..1] = C[g][2t..2t+1]  c[2..3] = C[g+8][2t..2t+1]
// mma.m8n8k4 with f64 operands (PTX ISA, "Matrix Fragments for mma.m8n8k4 with .f64
// floating point type"), one element of A and B and two of C a lane:
//   A (8x4, row-major)    a = A[g][t]         B (4x8, "col")  b = B[t][g]
//   C, D (8x8, f64)       c[0..1] = C[g][2t..2t+1]
// ldmatrix (PTX ISA "ldmatrix"): lanes 8i..8i+7 give the 16-byte row addresses of 8x8 matrix i;
// register i of lane l receives matrix i's row l/4, columns 2(l%4)..2(l%4)+1, or with .trans
// its rows 2(l%4)..2(l%4)+1 of column l/4.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#ifdef KILN_EMU
#include <cmath>
#include <cstdio>
#include <cstdlib>
#endif

namespace kiln {
namespace ptx {

// The element types of mma.sync's A and B operands.
enum class MmaType { kF16, kBF16 };

#ifdef KILN_EMU
namespace emu {

constexpr unsigned kFullWarp = 0xffffffffu;

inline int lane_id() { return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32; }

// A 16-bit storage value as f32 (exact for both types).
template <MmaType kType>
inline float widen(uint16_t bits) {
    if constexpr (kType == MmaType::kBF16) {
        const uint32_t w = uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &w, 4);
        return f;
    } else {
        __half_raw raw;
        raw.x = bits;
        return __half2float(__half(raw));
    }
}

// Element `half` (0 = low, 1 = high) of a packed pair.
inline uint16_t half_of(uint32_t r, int half) { return static_cast<uint16_t>(half ? r >> 16 : r & 0xffffu); }

}  // namespace emu
#endif

// D = A·B + C for one warp: A 16x16 and B 16x8 in f16 or bf16, C and D 16x8 in f32 (layouts
// above). Every lane of the warp must call it with the same kType (mma.sync.aligned).
template <MmaType kType>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                             const float (&c)[4]) {
#ifdef KILN_EMU
    struct Fragments {
        uint32_t a[4];
        uint32_t b[2];
        float c[4];
    };
    const Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
    Fragments all[32];
    ::kiln_emu::warp_allgather(emu::kFullWarp, &mine, sizeof(Fragments), all, __FILE__, __LINE__);
    // A[r][k]: the lane holding it is 4(r%8) + (k%8)/2, register (k/8)*2 + r/8, half k%2.
    auto a_at = [&](int r, int k) {
        const uint32_t reg = all[4 * (r % 8) + (k % 8) / 2].a[(k / 8) * 2 + r / 8];
        return emu::widen<kType>(emu::half_of(reg, k % 2));
    };
    // B[k][n]: lane 4n + (k%8)/2, register k/8, half k%2.
    auto b_at = [&](int k, int n) {
        const uint32_t reg = all[4 * n + (k % 8) / 2].b[k / 8];
        return emu::widen<kType>(emu::half_of(reg, k % 2));
    };
    const int lane = emu::lane_id(), g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        // Products of 16-bit values are exact in f32; the tensor core's sum is at least f32
        // accurate, so it is formed in f64 and rounded once.
        double acc = 0.0;
        for (int k = 0; k < 16; ++k) acc += double(a_at(row, k)) * double(b_at(k, col));
        d[i] = static_cast<float>(acc + double(mine.c[i]));  // d may alias c
    }
#else
    if constexpr (kType == MmaType::kF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%10,%11,%12,%13};\n"
            : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
              "f"(c[3]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%10,%11,%12,%13};\n"
            : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
              "f"(c[3]));
    }
#endif
}

// D = A·B + C for one warp in f64 (sm_80's DMMA): A 8x4, B 4x8, C and D 8x8 (layouts above).
// The emulated body sums in k order with fused multiply-adds from C, each step rounded once; the
// hardware's order may differ (the tests allow f64 rounding of the five terms).
__device__ __forceinline__ void mma_m8n8k4_f64(double (&d)[2], double a, double b, const double (&c)[2]) {
#ifdef KILN_EMU
    struct Fragments {
        double a, b, c[2];
    };
    const Fragments mine{a, b, {c[0], c[1]}};
    Fragments all[32];
    ::kiln_emu::warp_allgather(emu::kFullWarp, &mine, sizeof(Fragments), all, __FILE__, __LINE__);
    // A[r][k] is lane 4r + k's a; B[k][n] lane 4n + k's b.
    const int lane = emu::lane_id(), g = lane / 4, t = lane % 4;
    for (int i = 0; i < 2; ++i) {
        const int col = 2 * t + i;
        double acc = mine.c[i];
        for (int k = 0; k < 4; ++k) acc = std::fma(all[4 * g + k].a, all[4 * col + k].b, acc);
        d[i] = acc;  // d may alias c
    }
#else
    asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%4,%5};\n"
                 : "=d"(d[0]), "=d"(d[1])
                 : "d"(a), "d"(b), "d"(c[0]), "d"(c[1]));
#endif
}

// ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: kN (1, 2 or 4) 8x8 matrices of 16-bit
// elements from shared memory; `row` is this lane's row address (lanes 8i..8i+7 name the rows of
// matrix i; lanes past 8·kN are ignored but must still call), 16-byte aligned.
template <int kN, bool kTrans>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[kN], const void* row) {
    static_assert(kN == 1 || kN == 2 || kN == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef KILN_EMU
    const void* rows[32];
    ::kiln_emu::warp_allgather(emu::kFullWarp, &row, sizeof(row), rows, __FILE__, __LINE__);
    const int lane = emu::lane_id();
    // PTX ISA: each row address of the matrices loaded is 16-byte aligned, in shared memory.
    if (lane < 8 * kN) ::kiln_emu::ptx_operand(row, 16, ::kiln_emu::PtxSpace::kShared, "ldmatrix row address");
    // Plain loads, so the checker sees each shared-memory read of this lane.
    auto element = [&](int matrix, int m_row, int m_col) {
        return static_cast<const uint16_t*>(rows[8 * matrix + m_row])[m_col];
    };
    for (int i = 0; i < kN; ++i) {
        uint16_t lo, hi;
        if constexpr (kTrans) {
            lo = element(i, 2 * (lane % 4), lane / 4);
            hi = element(i, 2 * (lane % 4) + 1, lane / 4);
        } else {
            lo = element(i, lane / 4, 2 * (lane % 4));
            hi = element(i, lane / 4, 2 * (lane % 4) + 1);
        }
        r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
#else
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    if constexpr (kN == 1 && !kTrans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
    } else if constexpr (kN == 1) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
    } else if constexpr (kN == 2 && !kTrans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
    } else if constexpr (kN == 2) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(addr));
    } else if constexpr (!kTrans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
    }
#endif
}

// cp.async.cg (16 bytes, global to shared, bypassing L1) with commit_group / wait_group, as one
// per-thread object: a kernel declares `ptx::CpAsync pipe;` and copies through it. On a GPU it is
// empty and each call is one instruction. The emulated body keeps this thread's copies in flight
// the way the ISA allows: a copy happens no earlier than the wait_group that covers its group, so
// a kernel that reads shared memory before waiting (or before the barrier after the wait) reads
// stale or unwritten bytes, which the emulator's checked mode reports.
class CpAsync {
public:
    // Starts copying 16 bytes from global `src` to shared `dst` (both 16-byte aligned). With
    // `valid` false nothing is read and the 16 bytes become zeros (cp.async's src-size 0), so a
    // tile row past the end of a tensor is filled without a branch around the copy.
    __device__ __forceinline__ void copy16(void* dst, const void* src, bool valid = true) {
#ifdef KILN_EMU
        if (pending_ == kMaxPending) {
            std::fprintf(stderr, "kiln emulator: more than %d cp.async copies in flight in one thread\n", kMaxPending);
            std::abort();
        }
        // PTX ISA: cp.async's addresses are aligned to its size (16), dst in shared memory, src
        // in global memory (not read when the source size is 0).
        ::kiln_emu::ptx_operand(dst, 16, ::kiln_emu::PtxSpace::kShared, "cp.async destination");
        if (valid) ::kiln_emu::ptx_operand(src, 16, ::kiln_emu::PtxSpace::kGlobal, "cp.async source");
        ::kiln_emu::cp_async_in_flight(dst, 16);
        ::kiln_emu::cp_async_issue_timed(src, valid);
        copies_[pending_++] = Copy{dst, src, valid};
#else
        const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(valid ? 16 : 0));
#endif
    }

    // Closes the group of the copies started since the last commit.
    __device__ __forceinline__ void commit() {
#ifdef KILN_EMU
        if (committed_groups_ == kMaxGroups) {
            std::fprintf(stderr, "kiln emulator: more than %d cp.async groups in flight in one thread\n", kMaxGroups);
            std::abort();
        }
        group_end_[committed_groups_++] = pending_;
        ::kiln_emu::cp_async_commit_timed();
#else
        asm volatile("cp.async.commit_group;\n" ::);
#endif
    }

    // Waits until at most kN of this thread's committed groups are still in flight. Other
    // threads' copies are not covered: a __syncthreads() after the wait publishes them.
    template <int kN>
    __device__ __forceinline__ void wait() {
#ifdef KILN_EMU
        ::kiln_emu::cp_async_wait_timed(kN);
        if (committed_groups_ <= kN) return;
        const int done_groups = committed_groups_ - kN;
        const int done = group_end_[done_groups - 1];
        ::kiln_emu::cp_async_performing(true);
        for (int i = 0; i < done; ++i) perform(copies_[i]);
        ::kiln_emu::cp_async_performing(false);
        // The copies still in flight move to the front, their groups with them.
        for (int i = done; i < pending_; ++i) copies_[i - done] = copies_[i];
        pending_ -= done;
        for (int g = done_groups; g < committed_groups_; ++g) group_end_[g - done_groups] = group_end_[g] - done;
        committed_groups_ -= done_groups;
#else
        asm volatile("cp.async.wait_group %0;\n" ::"n"(kN));
#endif
    }

#ifdef KILN_EMU
private:
    static constexpr int kMaxPending = 128;
    static constexpr int kMaxGroups = 16;
    struct Copy {
        void* dst;
        const void* src;
        bool valid;
    };
    // As the GPU does it, in 16-byte accesses; the checker sees the global read and the shared
    // write here, at the wait, attributed to this thread. A vector type keeps each a single
    // 16-byte access (g++ splits a uint4 assembled by make_uint4 into four 4-byte stores, which
    // the traffic model would count as a 4-way bank conflict).
    static void perform(const Copy& c) {
        using Raw = unsigned __attribute__((vector_size(16)));
        Raw v = {0, 0, 0, 0};
        if (c.valid) v = *static_cast<const Raw*>(c.src);
        *static_cast<Raw*>(c.dst) = v;
    }
    Copy copies_[kMaxPending];
    int pending_ = 0;           // copies in flight, committed or not, oldest first
    int group_end_[kMaxGroups];  // group g holds copies [group_end_[g-1], group_end_[g])
    int committed_groups_ = 0;
#endif
};

// The SFU's approximate reciprocal and base-2 exponential with subnormals flushed (PTX ISA
// "rcp.approx.ftz.f32", "ex2.approx.ftz.f32": max relative error 2^-23 and 2 ulp). CUDA's
// __fdividef and __expf wrap the same units in range checks for subnormal operands, 3–4
// instructions per call that the 16-bit math (common/math.cuh) never needs: its reciprocals
// take values ≥ 1 and its exponentials arguments ≤ 0. Emulated with the correctly rounded
// operation and the same flushing (a subnormal operand or result is a signed zero; rcp(±0) is
// ±inf), which is within the unit's error.
#ifdef KILN_EMU
namespace emu {
inline float flush_subnormal(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }
}  // namespace emu
#endif

__device__ __forceinline__ float rcp_approx_ftz(float x) {
#ifdef KILN_EMU
    return emu::flush_subnormal(1.0f / emu::flush_subnormal(x));
#else
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
#endif
}

__device__ __forceinline__ float ex2_approx_ftz(float x) {
#ifdef KILN_EMU
    return emu::flush_subnormal(std::exp2(emu::flush_subnormal(x)));
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
#endif
}

// The SFU's approximate square root (PTX ISA "sqrt.approx.ftz.f32": one MUFU instruction, max
// relative error 2^-23 on sm_80 and later). sqrtf compiles to the IEEE sequence (a reciprocal
// square root and a Newton correction with range checks, ~8 instructions), which geometric
// ALiBi's per-score distance need not pay. Emulated correctly rounded, with the same flushing.
__device__ __forceinline__ float sqrt_approx_ftz(float x) {
#ifdef KILN_EMU
    return emu::flush_subnormal(std::sqrt(emu::flush_subnormal(x)));
#else
    float r;
    asm("sqrt.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
#endif
}

// The SFU's approximate reciprocal square root (PTX ISA "rsqrt.approx.ftz.f32": one MUFU
// instruction, max relative error 2^-22.9; +inf for +0). The attention backward needs both a
// distance and its reciprocal per score: d²·rsqrt(d²) and rsqrt(d²) cost one MUFU and one
// multiply where sqrtf and a division cost two IEEE sequences with slow-path calls.
// Emulated correctly rounded, with the same flushing.
__device__ __forceinline__ float rsqrt_approx_ftz(float x) {
#ifdef KILN_EMU
    return emu::flush_subnormal(1.0f / std::sqrt(emu::flush_subnormal(x)));
#else
    float r;
    asm("rsqrt.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
#endif
}

// Two f32 values rounded to a packed pair of 16-bit elements (the first in the low half): the
// register format of mma's A and B operands.
template <MmaType kType>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack2<MmaType::kF16>(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t r;
    memcpy(&r, &h, 4);
    return r;
}

template <>
__device__ __forceinline__ uint32_t pack2<MmaType::kBF16>(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t r;
    memcpy(&r, &h, 4);
    return r;
}

}  // namespace ptx
}  // namespace kiln

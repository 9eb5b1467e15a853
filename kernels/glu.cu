// GLU family: y = h(a)·b elementwise over [rows, F] views with row strides, the backward
// da = dy·b·h'(a), db = dy·h(a), and the deterministic gradient dα = Σ dy·b·∂h/∂α of the
// expanded gates. Formulas: shared/REFERENCE.md §2; the gates: common/glu_gates.cuh. Layout of
// this file: launch constants, the kernels (generic over storage type T, gate and pack width),
// the launch plans, validation and dispatch, the C ABI.
//
// a and b share the row stride ab_stride, da and db share dab_stride, y and dy are contiguous
// [rows, F]. The kernels walk the rows·(F/kW) packs of the view in flat order (row-major), so a
// warp reads contiguous memory whatever F is, and a thread's (row, column) cursor advances by
// the grid's step with additions only.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/dtype.cuh"
#include "common/glu_gates.cuh"
#include "common/launch.cuh"
#include "common/math.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "kiln.h"

namespace kiln::glu {

// ------------------------------------------------------------------------------------------
// Launch constants
// ------------------------------------------------------------------------------------------

// 8 warps per block: small blocks leave little idle at the tail of a grid, and 8 of them fill
// the 2048 threads of an sm_80/sm_90 SM where registers allow.
constexpr int kThreads = 256;

// Grid cap of the streaming kernels (they grid-stride): about 31 full waves of 256-thread blocks
// on an H100 (132 SMs × 8); more blocks would only add scheduling work.
constexpr int64_t kMaxGridBlocks = int64_t(1) << 15;

// Blocks, hence f32 partial sums, of the backward that reduces dα: the fixed partition that makes
// dα bitwise reproducible on any device. The fused kernels use 34–64 registers (4–7 blocks of
// 256 threads per SM), so 1024 blocks took up to two waves with the second partly empty; 8192
// quantize to ≤ 6% at any of those residencies, for 32 KiB of partials. The same value as the
// activation family's scalar partition (kScalarPartials there).
constexpr int64_t kReduceMaxBlocks = 8192;

// The dα partition is planned in groups of kGroup<T> consecutive elements of the view (flat,
// row-major order): one 16-byte pack of the storage type (4 for f32, 8 for f16/bf16), whatever
// pack width a launch uses. The vector path's step is then exactly one pack, so each warp
// load/store moves 512 contiguous bytes (whole sectors); the 4-byte path (16-bit types, even F)
// walks a group as 4 packs of 2 and the scalar path (misaligned pointers, odd F or strides)
// element by element: all sum every term in the same order and give bitwise the same dα. The
// partition depends on (rows, F, dtype).
template <typename T>
constexpr int kGroup = kVecWidth<T>;

// The widest group of any storage type (f16, bf16) and the narrowest (f32).
constexpr int kMaxGroup = kGroup<__half>;
constexpr int kMinGroup = kGroup<float>;
static_assert(kGroup<__nv_bfloat16> == kMaxGroup, "every storage type's group is in [kMinGroup, kMaxGroup]");

// A thread's first flat pack index is below kMaxGridBlocks·kThreads = 2^23 (streaming) or
// kReduceMaxBlocks·kThreads·kMaxGroup = 2^24 (dα; a step of kGroup<T> / kW ≤ kMaxGroup packs), so
// the one division that places it in the view can be done in 32 bits.
static_assert(kMaxGridBlocks * kThreads <= (int64_t(1) << 31), "first pack index must fit 32 bits");
static_assert(kReduceMaxBlocks * kThreads * kMaxGroup <= (int64_t(1) << 31), "first pack index must fit 32 bits");

// Largest element extent (rows·stride) of a view: byte offsets of f32, the widest storage type,
// then fit int64_t, and so does every offset a kernel forms.
constexpr int64_t kMaxElements = INT64_MAX / int64_t(sizeof(float));

// ------------------------------------------------------------------------------------------
// Kernels. kW is the pack width: kVecWidth<T> (16-byte accesses; F and both strides multiples
// of kW, every pointer 16-byte aligned), 2 for the 16-bit types (4-byte accesses; F and the
// strides even, every pointer 4-byte aligned) or 1 (any element-aligned view). Outputs may alias
// inputs element for element (da == a and db == b with dab_stride == ab_stride; y == a when
// ab_stride == F): each pack is read before the same thread writes it, and no load moves past a
// store (no __restrict__, no __ldg, no unrolling of the streaming loops). Overlapping halves
// (|b − a| < F in a packed layout) are the caller's error and are not checked.
// ------------------------------------------------------------------------------------------

// The view as seen by the kernels: rows × packs_per_row packs, walked in flat order
// pack = row·packs_per_row + col with a grid-stride of `step` packs.
struct Shape {
    int64_t rows;
    int64_t packs_per_row;  // F / kW
    int64_t ab_stride;      // elements between rows of a and of b
    int64_t dab_stride;     // elements between rows of da and of db (backward)
    int64_t step;           // gridDim.x · kThreads, in packs
    int64_t step_rows;      // step / packs_per_row
    int64_t step_cols;      // step % packs_per_row
};

// One thread's position: the flat pack index and its (row, col) in the view.
struct Cursor {
    int64_t pack;
    int64_t row;
    int64_t col;
};

// The first pack of this thread's first step of `packs` packs.
__device__ __forceinline__ Cursor first_pack(const Shape& s, int packs) {
    const uint32_t first = (blockIdx.x * uint32_t(kThreads) + threadIdx.x) * uint32_t(packs);  // < 2^31 (static_assert)
    if (first < s.packs_per_row) return Cursor{first, 0, first};
    // Here packs_per_row ≤ first fits 32 bits too.
    const uint32_t ppr = static_cast<uint32_t>(s.packs_per_row);
    const uint32_t row = first / ppr;
    return Cursor{first, row, first - row * ppr};
}

// The next pack in flat order.
__device__ __forceinline__ void next_pack(Cursor& c, const Shape& s) {
    ++c.pack;
    if (++c.col == s.packs_per_row) {
        c.col = 0;
        ++c.row;
    }
}

// pack += step, carried into (row, col): col + step_cols < 2·packs_per_row, so one wrap at most.
__device__ __forceinline__ void advance(Cursor& c, const Shape& s) {
    c.pack += s.step;
    c.row += s.step_rows;
    c.col += s.step_cols;
    if (c.col >= s.packs_per_row) {
        c.col -= s.packs_per_row;
        ++c.row;
    }
}

// y = h(a)·b over [rows, F] (a, b: [rows, F] with row stride ab_stride; y: [rows, F] contiguous).
// Reads 2·sizeof(T), writes sizeof(T) per element; FLOPs: the gate's (1 for bilinear, ~40 for geglu) + 1.
template <typename T, typename Gate, int kW>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* a, const T* b, T* y, Shape s, Gate gate) {
    using M = MathFor<T>;  // the math policy of the storage type (common/math.cuh)
#pragma unroll 1
    for (Cursor c = first_pack(s, 1); c.row < s.rows; advance(c, s)) {
        const int64_t ab = c.row * s.ab_stride + c.col * kW;
        const Pack<T, kW> pa = load_pack<T, kW>(a + ab);
        const Pack<T, kW> pb = load_pack<T, kW>(b + ab);
        Pack<T, kW> py;
#pragma unroll
        for (int j = 0; j < kW; ++j) py.v[j] = from_float<T>(gate.template fwd<M>(to_float(pa.v[j])) * to_float(pb.v[j]));
        store_pack<T, kW>(y + c.pack * kW, py);
    }
}

// da = dy·b·h'(a), db = dy·h(a) (a, b: stride ab_stride; da, db: stride dab_stride; dy: [rows, F]
// contiguous); with kReduce also this block's Σ dy·b·∂h/∂α into partials[blockIdx.x].
// Reads 3·sizeof(T), writes 2·sizeof(T) per element; FLOPs: the gate's bwd + 3 (+ 1 with kReduce).
// With kReduce the grid is the fixed partition of the sum (reduce_blocks), not a free choice,
// and a thread's step is a group of kGroup<T> consecutive elements of the view (one pack on the
// vector path; kGroup<T> / kW packs in flat order on the narrower paths, which may cross a row end)
// instead of one pack: group g goes to thread g mod (grid threads), which sums its elements in
// flat order (the last group may be short), so the partition and every partial's order of
// additions depend on (rows, F, dtype) alone.
template <typename T, typename Gate, int kW, bool kReduce>
__global__ void __launch_bounds__(kThreads)
    bwd_kernel(const T* a, const T* b, const T* dy, T* da, T* db, Shape s, Gate gate, float* partials) {
    using M = MathFor<T>;  // the math policy of the storage type (common/math.cuh)
    static_assert(kGroup<T> % kW == 0, "a group is whole packs");
    constexpr int kPacks = kReduce ? kGroup<T> / kW : 1;  // packs per step of a thread
    static_assert(kPacks <= kMaxGroup, "first_pack's 32-bit index (see kMaxGroup)");
    float acc = 0.0f;
#pragma unroll 1
    for (Cursor c = first_pack(s, kPacks); c.row < s.rows; advance(c, s)) {
        Cursor p = c;
#pragma unroll
        for (int q = 0; q < kPacks; ++q) {
            if (q > 0) {
                next_pack(p, s);
                if (p.row >= s.rows) break;
            }
            const int64_t ab = p.row * s.ab_stride + p.col * kW;
            const int64_t dab = p.row * s.dab_stride + p.col * kW;
            const Pack<T, kW> pa = load_pack<T, kW>(a + ab);
            const Pack<T, kW> pb = load_pack<T, kW>(b + ab);
            const Pack<T, kW> pdy = load_pack<T, kW>(dy + p.pack * kW);
            Pack<T, kW> pda;
            Pack<T, kW> pdb;
#pragma unroll
            for (int j = 0; j < kW; ++j) {
                const float dyf = to_float(pdy.v[j]);
                const float dyb = dyf * to_float(pb.v[j]);
                const GateGrad g = gate.template bwd<M>(to_float(pa.v[j]));
                pda.v[j] = from_float<T>(dyb * g.slope);
                pdb.v[j] = from_float<T>(dyf * g.value);
                if constexpr (kReduce) acc += dyb * g.dalpha;
            }
            store_pack<T, kW>(da + dab, pda);
            store_pack<T, kW>(db + dab, pdb);
        }
    }
    if constexpr (kReduce) {
        acc = block_sum<kThreads>(acc);
        if (threadIdx.x == 0) partials[blockIdx.x] = acc;
    }
}

// ------------------------------------------------------------------------------------------
// Launch plans. The dα partition depends only on (rows, F) and the dtype's group (kGroup<T>),
// not on the pack width, so dα is bitwise the same across runs and across pointer alignments
// and strides (vector or scalar path).
// ------------------------------------------------------------------------------------------

namespace {

// a ≥ 0, b > 0; no overflow for any a.
int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// Blocks of the streaming kernels: one pack per thread, capped (they grid-stride); packs ≥ 1.
int64_t stream_blocks(int64_t packs) { return std::min(ceil_div(packs, kThreads), kMaxGridBlocks); }

// Blocks, hence partial sums, of the dα reduction over `elements` elements (≥ 1): kThreads
// groups of `group` (kGroup<T>) elements per step of the grid, whatever the pack width.
int64_t reduce_blocks(int64_t elements, int group) {
    return std::min(ceil_div(elements, int64_t(kThreads) * group), kReduceMaxBlocks);
}

// Sizes a view can have: F ≥ 1, rows ≥ 0 and rows·F within kMaxElements.
bool valid_sizes(int64_t rows, int64_t features) {
    return rows >= 0 && features >= 1 && rows <= kMaxElements / features;
}

// Bytes of partials for a dtype's group: the partition depends on (rows, F, group) only, not on
// the pointers. The workspace query has no dtype argument, so it plans with kMinGroup: the
// most partials of any storage type.
int64_t partial_bytes(int64_t rows, int64_t features, int group) {
    if (rows == 0) return 0;
    return reduce_blocks(rows * features, group) * int64_t(sizeof(float));
}

// The group of a storage dtype: kGroup<T> of the T it stores.
int group_of(kiln_dtype dtype) { return kVecBytes / static_cast<int>(storage_bytes(dtype)); }

// The Shape of the view cut into packs of `width` for a grid of `blocks` blocks whose threads
// take `packs` packs per step.
Shape make_shape(int64_t rows, int64_t features, int width, int64_t ab_stride, int64_t dab_stride, int64_t blocks,
                 int packs = 1) {
    Shape s;
    s.rows = rows;
    s.packs_per_row = features / width;
    s.ab_stride = ab_stride;
    s.dab_stride = dab_stride;
    s.step = blocks * kThreads * packs;
    s.step_rows = s.step / s.packs_per_row;
    s.step_cols = s.step % s.packs_per_row;
    return s;
}

// ------------------------------------------------------------------------------------------
// Validation and dispatch
// ------------------------------------------------------------------------------------------

enum class Pass { kForward, kBackward };

// One launcher call as given through the C ABI.
struct Problem {
    kiln_dtype dtype;
    const void* a;            // [rows, F], row stride ab_stride
    const void* b;            // [rows, F], row stride ab_stride
    int64_t ab_stride;
    void* y;                  // [rows, F] contiguous, forward only
    const void* dy;           // [rows, F] contiguous, backward only
    void* da;                 // [rows, F], row stride dab_stride, backward only
    void* db;                 // [rows, F], row stride dab_stride, backward only
    int64_t dab_stride;       // F in a forward, so that its checks pass trivially
    int64_t rows;
    int64_t features;
    float* dalpha;            // [1]; NULL skips dα (always NULL for gates without α)
    void* workspace;          // partial sums, used only with dalpha
    int64_t workspace_bytes;
    bool scalars_ok;          // α valid (valid_alpha) and order in {1, 2}, where the op has them
    void* stream;
};

Problem forward(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y, int64_t rows,
                int64_t features, void* stream) {
    Problem p{};
    p.dtype = dtype;
    p.a = a;
    p.b = b;
    p.ab_stride = ab_stride;
    p.y = y;
    p.dab_stride = features;
    p.rows = rows;
    p.features = features;
    p.scalars_ok = true;
    p.stream = stream;
    return p;
}

Problem backward(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy, void* da,
                 void* db, int64_t dab_stride, int64_t rows, int64_t features, void* stream) {
    Problem p = forward(dtype, a, b, ab_stride, nullptr, rows, features, stream);
    p.dy = dy;
    p.da = da;
    p.db = db;
    p.dab_stride = dab_stride;
    return p;
}

// A row stride is valid when a row holds F elements and rows·stride stays within kMaxElements.
bool valid_stride(int64_t stride, int64_t rows, int64_t features) {
    return stride >= features && rows <= kMaxElements / stride;
}

// Checks in the order of the ABI: dtype, sizes, empty, pointers, scalars, alignment, workspace.
// Sets *empty (and returns success) when rows == 0: nothing may be launched or read.
kiln_status validate(const Problem& p, Pass pass, bool* empty) {
    *empty = false;
    if (!valid_dtype(p.dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (!valid_sizes(p.rows, p.features) || !valid_stride(p.ab_stride, p.rows, p.features) ||
        !valid_stride(p.dab_stride, p.rows, p.features)) {
        return KILN_ERROR_INVALID_SIZE;
    }
    if (p.rows == 0) {
        *empty = true;
        return KILN_SUCCESS;
    }
    const bool fwd = pass == Pass::kForward;
    if (p.a == nullptr || p.b == nullptr || (fwd && p.y == nullptr) ||
        (!fwd && (p.dy == nullptr || p.da == nullptr || p.db == nullptr)) ||
        (p.dalpha != nullptr && p.workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    if (!p.scalars_ok) return KILN_ERROR_INVALID_VALUE;
    const int64_t elem = storage_bytes(p.dtype);
    const int64_t f32 = sizeof(float);
    if (!is_aligned(p.a, elem) || !is_aligned(p.b, elem) || !is_aligned(p.y, elem) || !is_aligned(p.dy, elem) ||
        !is_aligned(p.da, elem) || !is_aligned(p.db, elem) || !is_aligned(p.dalpha, f32) ||
        (p.dalpha != nullptr && !is_aligned(p.workspace, f32))) {
        return KILN_ERROR_MISALIGNED;
    }
    if (p.dalpha != nullptr && p.workspace_bytes < partial_bytes(p.rows, p.features, group_of(p.dtype))) {
        return KILN_ERROR_WORKSPACE_TOO_SMALL;
    }
    return KILN_SUCCESS;
}

template <typename T, int kW, typename Gate>
kiln_status launch_path(const Problem& p, const Gate& gate, Pass pass) {
    const auto stream = static_cast<cudaStream_t>(p.stream);
    const T* a = static_cast<const T*>(p.a);
    const T* b = static_cast<const T*>(p.b);
    const int64_t packs = p.rows * (p.features / kW);
    if (pass == Pass::kForward) {
        const int64_t blocks = stream_blocks(packs);
        const Shape s = make_shape(p.rows, p.features, kW, p.ab_stride, p.dab_stride, blocks);
        KILN_LAUNCH(blocks, kThreads, 0, stream, fwd_kernel<T, Gate, kW>)(a, b, static_cast<T*>(p.y), s, gate);
        return launch_status();
    }
    const T* dy = static_cast<const T*>(p.dy);
    T* da = static_cast<T*>(p.da);
    T* db = static_cast<T*>(p.db);
    if constexpr (Gate::kHasAlpha) {
        if (p.dalpha != nullptr) {
            const int64_t blocks = reduce_blocks(p.rows * p.features, kGroup<T>);
            const Shape s = make_shape(p.rows, p.features, kW, p.ab_stride, p.dab_stride, blocks, kGroup<T> / kW);
            // A single partial is the total: write it in place and skip the second pass.
            float* partials = blocks == 1 ? p.dalpha : static_cast<float*>(p.workspace);
            KILN_LAUNCH(blocks, kThreads, 0, stream, bwd_kernel<T, Gate, kW, true>)(a, b, dy, da, db, s, gate,
                                                                                    partials);
            const kiln_status status = launch_status();
            if (status != KILN_SUCCESS || blocks == 1) return status;
            KILN_LAUNCH(1, kThreads, 0, stream, sum_partials_kernel<kThreads>)(partials, blocks, p.dalpha);
            return launch_status();
        }
    }
    const int64_t blocks = stream_blocks(packs);
    const Shape s = make_shape(p.rows, p.features, kW, p.ab_stride, p.dab_stride, blocks);
    KILN_LAUNCH(blocks, kThreads, 0, stream, bwd_kernel<T, Gate, kW, false>)(a, b, dy, da, db, s, gate, nullptr);
    return launch_status();
}

// Whether the view splits into packs of `width` elements of `elem` bytes: F and both strides
// multiples of the width, every tensor pointer aligned to the pack.
bool packs_fit(const Problem& p, int64_t width, int64_t elem) {
    const int64_t bytes = width * elem;
    return p.features % width == 0 && p.ab_stride % width == 0 && p.dab_stride % width == 0 &&
           is_aligned(p.a, bytes) && is_aligned(p.b, bytes) && is_aligned(p.y, bytes) && is_aligned(p.dy, bytes) &&
           is_aligned(p.da, bytes) && is_aligned(p.db, bytes);
}

// The widest path the view allows: 16-byte packs; for the 16-bit types 4-byte packs (any even
// F, e.g. the F % 8 != 0 widths of packed layouts, F = 2730): still whole 32-byte sectors per
// warp request, with a quarter of the vector path's instructions per element rather than the
// scalar path's half (by the sm_90a SASS, the scalar SwiGLU/GEGLU forward sits at or over an
// H200's issue budget); else the scalar path, correct for any element-aligned view.
template <typename T, typename Gate>
kiln_status launch(const Problem& p, const Gate& gate, Pass pass) {
    constexpr int kV = kVecWidth<T>;
    if (packs_fit(p, kV, sizeof(T))) return launch_path<T, kV>(p, gate, pass);
    if constexpr (sizeof(T) == 2) {
        if (packs_fit(p, 2, sizeof(T))) return launch_path<T, 2>(p, gate, pass);
    }
    return launch_path<T, 1>(p, gate, pass);
}

// rows == 0: no element is read, but a requested dα is an empty sum: zero it, so a caller's
// buffer never keeps a stale value.
kiln_status zero_empty_gradient(const Problem& p) {
    if (p.dalpha == nullptr) return KILN_SUCCESS;
    if (!is_aligned(p.dalpha, sizeof(float))) return KILN_ERROR_MISALIGNED;
    const cudaError_t err = cudaMemsetAsync(p.dalpha, 0, sizeof(float), static_cast<cudaStream_t>(p.stream));
    if (err == cudaSuccess) return KILN_SUCCESS;
    t_last_cuda_error = err;
    return KILN_ERROR_CUDA;
}

template <typename Gate>
kiln_status run(const Problem& p, const Gate& gate, Pass pass) {
    bool empty = false;
    const kiln_status status = validate(p, pass, &empty);
    if (status != KILN_SUCCESS) return status;
    if (empty) return zero_empty_gradient(p);
    return with_storage_type(p.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        return launch<T>(p, gate, pass);
    });
}

bool valid_order(int32_t order) { return order == 1 || order == 2; }

// An expansion α: finite with 1 + 2α finite in f32 (the kernels' widening factor), as the Rust
// API checks. A subnormal α is harmless (nothing divides by it) and a trained α may drift there.
bool valid_alpha(float alpha) {
    return std::isfinite(alpha) && std::isfinite(static_cast<float>(1.0 + 2.0 * double(alpha)));
}

// An expanded gate; 1 + 2α is formed in f64 and rounded once.
template <typename Base>
ExpandedGate<Base> expanded(float alpha, int32_t order) {
    return ExpandedGate<Base>{alpha, static_cast<float>(1.0 + 2.0 * double(alpha)), order == 2};
}

// ATGLU: the arctan gate without expansion (α = 0, so g_α = g0 exactly) and without dα.
ExpandedGate<AtanBase> atan_gate_fixed(int32_t order) { return ExpandedGate<AtanBase>{0.0f, 1.0f, order == 2}; }

}  // namespace
}  // namespace kiln::glu

// ------------------------------------------------------------------------------------------
// C ABI (kernels/include/kiln.h)
// ------------------------------------------------------------------------------------------

namespace glu = kiln::glu;
using glu::Pass;
using glu::Problem;

extern "C" {

int64_t kiln_glu_workspace_bytes(int64_t rows, int64_t features) {
    return glu::valid_sizes(rows, features) ? glu::partial_bytes(rows, features, glu::kMinGroup) : -1;
}

// Gates without a parameter.
#define KILN_PLAIN_GLU(name, Gate)                                                                                 \
    kiln_status kiln_glu_##name##_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,  \
                                      int64_t rows, int64_t features, void* stream) {                              \
        return glu::run(glu::forward(dtype, a, b, ab_stride, y, rows, features, stream), glu::Gate{},             \
                        Pass::kForward);                                                                           \
    }                                                                                                              \
    kiln_status kiln_glu_##name##_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride,           \
                                      const void* dy, void* da, void* db, int64_t dab_stride, int64_t rows,        \
                                      int64_t features, void* stream) {                                            \
        return glu::run(glu::backward(dtype, a, b, ab_stride, dy, da, db, dab_stride, rows, features, stream),    \
                        glu::Gate{}, Pass::kBackward);                                                             \
    }

KILN_PLAIN_GLU(glu, SigmoidGate)
KILN_PLAIN_GLU(bilinear, IdentityGate)
KILN_PLAIN_GLU(reglu, ReluGate)
KILN_PLAIN_GLU(geglu, GeluGate)
KILN_PLAIN_GLU(geglu_tanh, GeluTanhGate)
KILN_PLAIN_GLU(swiglu, SiluGate)
#undef KILN_PLAIN_GLU

kiln_status kiln_glu_atglu_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,
                               int64_t rows, int64_t features, int32_t order, void* stream) {
    Problem p = glu::forward(dtype, a, b, ab_stride, y, rows, features, stream);
    p.scalars_ok = glu::valid_order(order);
    return glu::run(p, glu::atan_gate_fixed(order), Pass::kForward);
}

kiln_status kiln_glu_atglu_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, const void* dy,
                               void* da, void* db, int64_t dab_stride, int64_t rows, int64_t features, int32_t order,
                               void* stream) {
    Problem p = glu::backward(dtype, a, b, ab_stride, dy, da, db, dab_stride, rows, features, stream);
    p.scalars_ok = glu::valid_order(order);
    return glu::run(p, glu::atan_gate_fixed(order), Pass::kBackward);
}

// Expanded gates with a trainable scalar α.
#define KILN_EXPANDED_GLU(name, Base)                                                                              \
    kiln_status kiln_glu_##name##_fwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride, void* y,  \
                                      int64_t rows, int64_t features, float alpha, int32_t order, void* stream) {  \
        Problem p = glu::forward(dtype, a, b, ab_stride, y, rows, features, stream);                               \
        p.scalars_ok = glu::valid_alpha(alpha) && glu::valid_order(order);                                         \
        return glu::run(p, glu::expanded<glu::Base>(alpha, order), Pass::kForward);                                \
    }                                                                                                              \
    kiln_status kiln_glu_##name##_bwd(kiln_dtype dtype, const void* a, const void* b, int64_t ab_stride,           \
                                      const void* dy, void* da, void* db, int64_t dab_stride, int64_t rows,        \
                                      int64_t features, float alpha, int32_t order, float* dalpha,                 \
                                      void* workspace, int64_t workspace_bytes, void* stream) {                    \
        Problem p = glu::backward(dtype, a, b, ab_stride, dy, da, db, dab_stride, rows, features, stream);         \
        p.dalpha = dalpha;                                                                                         \
        p.workspace = workspace;                                                                                   \
        p.workspace_bytes = workspace_bytes;                                                                       \
        p.scalars_ok = glu::valid_alpha(alpha) && glu::valid_order(order);                                         \
        return glu::run(p, glu::expanded<glu::Base>(alpha, order), Pass::kBackward);                               \
    }

KILN_EXPANDED_GLU(xatglu, AtanBase)
KILN_EXPANDED_GLU(xgeglu, NormalBase)
KILN_EXPANDED_GLU(xswiglu, SigmoidBase)
#undef KILN_EXPANDED_GLU

}  // extern "C"

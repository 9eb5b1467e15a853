// Equivariant family (e3nn conventions, shared/REFERENCE.md §5): real spherical harmonics
// Y^0..Y^lmax (lmax ≤ 4) of vectors and their gradient with respect to the vector.
//
//   u = x / ‖x‖ (when normalizing; the zero vector maps to 0 with a zero gradient), else u = x
//   Y^0 = 1, Y^l_i = Σ c·Y^{l−1}_j·u_k (equivariant/sh_poly.cuh, generated from the Rust
//   reference's table), each Y^l scaled by its normalization (1, 1/√(2l+1) or 1/√(4π))
//   backward: reverse mode through the same recursion, then through u = x/‖x‖:
//   dx = (g − u (u·g)) / ‖x‖.
//
// Tensor products and the graph convolution (plans from kiln::equivariant::TpPlan; the
// Clebsch-Gordan entries of each path come in a sparse (i, j, k, value) table):
//
//   uvu: out[u, k] += coef · Σ_v W[u, v] Σ_ij C_ijk x1[u, i] x2[v, j]
//   uvw: out[w, k] += coef · Σ_uv W[u, v, w] Σ_ij C_ijk x1[u, i] x2[v, j]
//   conv: out[n] = Σ_{e: dst_e = n} TP(x[src_e], y[e]; w_e) over the edges in receiver order
//   (dst_perm, the stable sort by dst, or the edges sorted by dst; CSR row offsets dst_ptr):
//   one warp per receiver, each lane owns output elements and sums its edges in order, so
//   there are no atomics and no per-edge message in memory, and the result is deterministic. The batched tensor product is the graph with edge n = node n.
//   backward: dx by sender (edges permuted by src, CSR src_ptr), dy and dw per edge (a warp
//   per edge); shared weights: each of at most kDwParts warps sums a fixed contiguous range of
//   edges into its row of the workspace, and a second kernel sums the rows in order.
// Plans kiln builds (kiln_tp_plan.wigner_cg) run the channel-parallel kernels of
// equivariant/tp_channel.cuh: lane = channel, the contractions generated as straight-line code
// (equivariant/cg_poly.cuh). The generic kernels below take any other plan: each lane filters
// every path's CG entries per output element, reading the tables and operands from global
// memory — correct and deterministic for any widths, and an order of magnitude more
// instructions per edge.
//
// Hessian assembly (HIP): per edge e = (i → j) and per atom i a 9-vector (l = 0, 1, 2) becomes a
// 3×3 block M through wigner_3j(1, 1, l); H[i, j] += M_e, H[j, i] += M_eᵀ, H[i, i] += N_i + N_iᵀ,
// one dense [3n, 3n] Hessian per molecule. Each row is gathered by one warp from the edges of
// its atom (no atomics; exactly symmetric).
//
// Storage f32, f16, bf16 (math in f32) or f64 (math in f64: compute_t, common/compute.cuh).
//
// Layout of this file: launch constants, the spherical-harmonics kernels, the tensor-product
// kernels, the Hessian kernels, validation and the C ABI.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "common/compute.cuh"
#include "common/dtype.cuh"
#include "common/launch.cuh"
#include "common/vec.cuh"
#include "equivariant/graph.cuh"
#include "equivariant/sh_poly.cuh"
#include "equivariant/tp_channel.cuh"
#include "equivariant/tp_fused.cuh"
#include "equivariant/tp_plan.cuh"
#include "kiln.h"

namespace kiln::equivariant {

// ------------------------------------------------------------------------------------------
// Launch constants
// ------------------------------------------------------------------------------------------

// The largest degree: the generated recursion stops at 4.
constexpr int kShLmax = 4;

// One thread per vector: a vector is 3 loads and up to 25 stores, and the degree-4 backward
// keeps 50 floats of Y and G in registers, so blocks stay small (4 warps) for occupancy.
constexpr int kShThreads = 128;

// Grid cap of the grid-stride loops: a few full waves on an H100 (132 SMs).
constexpr int64_t kMaxGridBlocks = int64_t(1) << 15;

constexpr double kPi = 3.14159265358979323846;

// The scale of each Y^l (index l), from the normalization, in compute type C.
template <typename C>
struct ShScale {
    C s[kShLmax + 1];
};

// ------------------------------------------------------------------------------------------
// Spherical harmonics
// ------------------------------------------------------------------------------------------

// Y[0..(L+1)²) at (x, y, z), component normalization.
template <int L, typename C>
__device__ __forceinline__ void sh_all(C* Y, C x, C y, C z) {
    if constexpr (L == 0) {
        Y[0] = C(1);
    } else {
        sh_all<L - 1>(Y, x, y, z);
        ShStep<L>::forward(Y, x, y, z);
    }
}

// G of Y^L..Y^1 carried back into G of Y^0 (unused) and g = ∂/∂(x, y, z).
template <int L, typename C>
__device__ __forceinline__ void sh_adjoint_all(const C* Y, C* G, C* g, C x, C y, C z) {
    if constexpr (L > 0) {
        ShStep<L>::adjoint(Y, G, g, x, y, z);
        sh_adjoint_all<L - 1>(Y, G, g, x, y, z);
    }
}

// The evaluation point of vector (x, y, z): itself, or x/‖x‖ with inv_r = 1/‖x‖ (0 for the
// zero vector, which maps to 0).
template <typename C>
struct ShPoint {
    C x, y, z, inv_r;
};

template <typename C>
__device__ __forceinline__ ShPoint<C> sh_point(C x, C y, C z, bool normalize) {
    if (!normalize) return ShPoint<C>{x, y, z, C(1)};
    const C r = compute_sqrt(x * x + y * y + z * z);
    const C inv = r > C(0) ? C(1) / r : C(0);
    return ShPoint<C>{x * inv, y * inv, z * inv, inv};
}

// sh[i, :] = scaled Y^0..Y^L of vec[i] (vec: [n, 3]; sh: [n, (L+1)²]). Reads 3 and writes
// (L+1)² elements per vector.
template <typename T, int L>
__global__ void __launch_bounds__(kShThreads)
    sh_fwd_kernel(const T* __restrict__ vec, int64_t n, ShScale<compute_t<T>> scale, int normalize,
                  T* __restrict__ sh) {
    using C = compute_t<T>;
    constexpr int kD = (L + 1) * (L + 1);
    const int64_t stride = int64_t(gridDim.x) * kShThreads;
    for (int64_t i = int64_t(blockIdx.x) * kShThreads + threadIdx.x; i < n; i += stride) {
        const ShPoint<C> p =
            sh_point(to_compute(vec[3 * i]), to_compute(vec[3 * i + 1]), to_compute(vec[3 * i + 2]), normalize != 0);
        C Y[kD];
        sh_all<L>(Y, p.x, p.y, p.z);
        T* row = sh + i * kD;
#pragma unroll
        for (int l = 0; l <= L; ++l) {
#pragma unroll
            for (int m = 0; m < 2 * l + 1; ++m) row[l * l + m] = from_compute<T>(Y[l * l + m] * scale.s[l]);
        }
    }
}

// dvec[i] = Σ_d dsh[i, d]·∂sh[i, d]/∂vec[i] (vec, dvec: [n, 3]; dsh: [n, (L+1)²]). Reads
// 3 + (L+1)² and writes 3 elements per vector.
template <typename T, int L>
__global__ void __launch_bounds__(kShThreads)
    sh_bwd_kernel(const T* __restrict__ vec, const T* __restrict__ dsh, int64_t n, ShScale<compute_t<T>> scale,
                  int normalize,
                  T* __restrict__ dvec) {
    using C = compute_t<T>;
    constexpr int kD = (L + 1) * (L + 1);
    const int64_t stride = int64_t(gridDim.x) * kShThreads;
    for (int64_t i = int64_t(blockIdx.x) * kShThreads + threadIdx.x; i < n; i += stride) {
        const ShPoint<C> p =
            sh_point(to_compute(vec[3 * i]), to_compute(vec[3 * i + 1]), to_compute(vec[3 * i + 2]), normalize != 0);
        C Y[kD];
        C G[kD];
        sh_all<L>(Y, p.x, p.y, p.z);
        const T* grow = dsh + i * kD;
#pragma unroll
        for (int l = 0; l <= L; ++l) {
#pragma unroll
            for (int m = 0; m < 2 * l + 1; ++m) G[l * l + m] = to_compute(grow[l * l + m]) * scale.s[l];
        }
        C g[3] = {C(0), C(0), C(0)};
        sh_adjoint_all<L>(Y, G, g, p.x, p.y, p.z);
        if (normalize != 0) {
            // Through u = x/‖x‖: (I − u uᵀ)/‖x‖ is symmetric.
            const C dot = g[0] * p.x + g[1] * p.y + g[2] * p.z;
#pragma unroll
            for (int a = 0; a < 3; ++a) g[a] = (g[a] - (a == 0 ? p.x : a == 1 ? p.y : p.z) * dot) * p.inv_r;
        }
#pragma unroll
        for (int a = 0; a < 3; ++a) dvec[3 * i + a] = from_compute<T>(g[a]);
    }
}

// ------------------------------------------------------------------------------------------
// Tensor products and the convolution
// ------------------------------------------------------------------------------------------

// The dout side of one (u, v) pair of path P at output component k, times `pre` (the CG value
// times the other input's element): pre·w[u, v]·dout[u, k] (uvu) or pre·Σ_o w[u, v, o]·dout[o, k]
// (uvw). The dx pass sums it over v, the dy pass over u.
template <typename T, typename C>
__device__ __forceinline__ C path_dout_term(const kiln_tp_path& P, const T* we, const T* go, int u, int v, int k,
                                            C pre) {
    if (P.mode == KILN_TP_UVU) {
        return pre * to_compute(we[P.weight_offset + u * P.mul2 + v]) * to_compute(go[P.off_out + u * P.dim_out + k]);
    }
    C sw = C(0);
    for (int wo = 0; wo < P.mul_out; ++wo) {
        sw += to_compute(we[P.weight_offset + (u * P.mul2 + v) * P.mul_out + wo]) *
              to_compute(go[P.off_out + wo * P.dim_out + k]);
    }
    return pre * sw;
}

// out[n, o] for the rows n of this warp, lane-strided over o (x: [nodes, dim1]; y: [edges,
// dim2]; w: [weight_numel] or [edges, weight_numel]; out: [nodes, dim_out]); `accumulate`: add to
// out instead of writing it (the double backward's passes).
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_fwd_kernel(kiln_tp_plan plan, const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ w,
                  int shared_weights, Graph g, int accumulate, int64_t nodes, T* __restrict__ out) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t n = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; n < nodes; n += warps) {
        const int64_t e0 = g.dst_ptr != nullptr ? g.dst_ptr[n] : n;
        const int64_t e1 = g.dst_ptr != nullptr ? g.dst_ptr[n + 1] : n + 1;
        for (int64_t o = lane; o < plan.dim_out; o += 32) {
            C acc = C(0);
            for (int64_t k = e0; k < e1; ++k) {
                const int64_t e = g.dst_perm != nullptr ? g.dst_perm[k] : k;
                const int64_t s = g.src != nullptr ? g.src[e] : e;
                const T* x1 = x + s * plan.dim1;
                const T* x2 = y + e * plan.dim2;
                const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
                for (int p = 0; p < plan.n_paths; ++p) {
                    const kiln_tp_path& P = plan.paths[p];
                    const int64_t rel64 = o - P.off_out;
                    if (rel64 < 0 || rel64 >= int64_t(P.mul_out) * P.dim_out) continue;
                    const int rel = static_cast<int>(rel64);  // 32-bit: 64-bit division is a call
                    const int wo = static_cast<int>(rel / P.dim_out);
                    const int k = static_cast<int>(rel % P.dim_out);
                    C pacc = C(0);
                    for (int c = P.cg_start; c < P.cg_start + P.cg_count; ++c) {
                        int i, j, kk;
                        unpack_ijk(plan.cg_ijk[c], i, j, kk);
                        if (kk != k) continue;
                        const C cv = cg_value<C>(plan, c);
                        if (P.mode == KILN_TP_UVU) {
                            C sv = C(0);
                            for (int v = 0; v < P.mul2; ++v) {
                                sv += to_compute(we[P.weight_offset + wo * P.mul2 + v]) *
                                      to_compute(x2[P.off2 + v * P.dim2 + j]);
                            }
                            pacc += cv * to_compute(x1[P.off1 + wo * P.dim1 + i]) * sv;
                        } else {
                            for (int u = 0; u < P.mul1; ++u) {
                                C sv = C(0);
                                for (int v = 0; v < P.mul2; ++v) {
                                    sv += to_compute(we[P.weight_offset + (u * P.mul2 + v) * P.mul_out + wo]) *
                                          to_compute(x2[P.off2 + v * P.dim2 + j]);
                                }
                                pacc += cv * to_compute(x1[P.off1 + u * P.dim1 + i]) * sv;
                            }
                        }
                    }
                    acc += path_coef<C>(plan, p) * pacc;
                }
            }
            T* dst = out + n * plan.dim_out + o;
            *dst = from_compute<T>(accumulate != 0 ? to_compute(*dst) + acc : acc);
        }
    }
}

// dx[n, q] = Σ over the edges e with src_e = n of ∂⟨dout[dst_e], TP(x[n], y[e])⟩/∂x[n, q], for
// the rows n of this warp, lane-strided over q (dx: [nodes, dim1]); `accumulate` as tp_fwd_kernel's.
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_dx1_kernel(kiln_tp_plan plan, const T* __restrict__ y, const T* __restrict__ w, int shared_weights, Graph g,
                      int accumulate, const T* __restrict__ dout, int64_t nodes, T* __restrict__ dx) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const int64_t warps = int64_t(gridDim.x) * kTpWarps;
    for (int64_t n = int64_t(blockIdx.x) * kTpWarps + threadIdx.x / 32; n < nodes; n += warps) {
        const int64_t t0 = g.src_ptr != nullptr ? g.src_ptr[n] : n;
        const int64_t t1 = g.src_ptr != nullptr ? g.src_ptr[n + 1] : n + 1;
        for (int64_t q = lane; q < plan.dim1; q += 32) {
            C acc = C(0);
            for (int64_t t = t0; t < t1; ++t) {
                const int64_t e = g.src_perm != nullptr ? g.src_perm[t] : t;
                const int64_t d = g.dst != nullptr ? g.dst[e] : e;
                const T* x2 = y + e * plan.dim2;
                const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
                const T* go = dout + d * plan.dim_out;
                for (int p = 0; p < plan.n_paths; ++p) {
                    const kiln_tp_path& P = plan.paths[p];
                    const int64_t rel64 = q - P.off1;
                    if (rel64 < 0 || rel64 >= int64_t(P.mul1) * P.dim1) continue;
                    const int rel = static_cast<int>(rel64);  // 32-bit: 64-bit division is a call
                    const int u = static_cast<int>(rel / P.dim1);
                    const int i = static_cast<int>(rel % P.dim1);
                    C pacc = C(0);
                    for (int c = P.cg_start; c < P.cg_start + P.cg_count; ++c) {
                        int ii, j, k;
                        unpack_ijk(plan.cg_ijk[c], ii, j, k);
                        if (ii != i) continue;
                        const C cv = cg_value<C>(plan, c);
                        for (int v = 0; v < P.mul2; ++v) {
                            const C b = to_compute(x2[P.off2 + v * P.dim2 + j]);
                            pacc += path_dout_term<T, C>(P, we, go, u, v, k, cv * b);
                        }
                    }
                    acc += path_coef<C>(plan, p) * pacc;
                }
            }
            T* dst = dx + n * plan.dim1 + q;
            *dst = from_compute<T>(accumulate != 0 ? to_compute(*dst) + acc : acc);
        }
    }
}

// Per edge e (a warp each): dy[e] and the edge's weight gradient (dy: [edges, dim2]); dw_rows and
// `parts` as tp_bwd_edge_channel_kernel's: the caller's dw [edges, weight_numel] row e, or with
// shared weights the warp's partition row of the workspace, summed over its edges in order. dy,
// dw_rows (NULL: not wanted) and `accumulate` as tp_bwd_edge_channel_kernel's.
template <typename T, typename W>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    tp_bwd_edge_kernel(kiln_tp_plan plan, const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ w,
                       int shared_weights, Graph g, int accumulate, const T* __restrict__ dout, int64_t edges,
                       int64_t parts, T* __restrict__ dy, W* __restrict__ dw_rows) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const EdgeRange r = edge_range(edges, parts);
    for (int64_t e = r.begin; e < r.end; e += r.step) {
        const int64_t s = g.src != nullptr ? g.src[e] : e;
        const int64_t d = g.dst != nullptr ? g.dst[e] : e;
        const T* x1 = x + s * plan.dim1;
        const T* x2 = y + e * plan.dim2;
        const T* we = w + (shared_weights != 0 ? 0 : e * plan.weight_numel);
        const T* go = dout + d * plan.dim_out;
        for (int64_t q = lane; dy != nullptr && q < plan.dim2; q += 32) {
            C acc = C(0);
            for (int p = 0; p < plan.n_paths; ++p) {
                const kiln_tp_path& P = plan.paths[p];
                const int64_t rel64 = q - P.off2;
                if (rel64 < 0 || rel64 >= int64_t(P.mul2) * P.dim2) continue;
                const int rel = static_cast<int>(rel64);  // 32-bit: 64-bit division is a call
                const int v = static_cast<int>(rel / P.dim2);
                const int j = static_cast<int>(rel % P.dim2);
                C pacc = C(0);
                for (int c = P.cg_start; c < P.cg_start + P.cg_count; ++c) {
                    int i, jj, k;
                    unpack_ijk(plan.cg_ijk[c], i, jj, k);
                    if (jj != j) continue;
                    const C cv = cg_value<C>(plan, c);
                    for (int u = 0; u < P.mul1; ++u) {
                        const C a = to_compute(x1[P.off1 + u * P.dim1 + i]);
                        pacc += path_dout_term<T, C>(P, we, go, u, v, k, cv * a);
                    }
                }
                acc += path_coef<C>(plan, p) * pacc;
            }
            T* dst = dy + e * plan.dim2 + q;
            *dst = from_compute<T>(accumulate != 0 ? to_compute(*dst) + acc : acc);
        }
        for (int64_t q = lane; dw_rows != nullptr && q < plan.weight_numel; q += 32) {
            C acc = C(0);
            for (int p = 0; p < plan.n_paths; ++p) {
                const kiln_tp_path& P = plan.paths[p];
                const int64_t rel64 = q - P.weight_offset;
                const int64_t numel = int64_t(P.mul1) * P.mul2 * (P.mode == KILN_TP_UVU ? 1 : P.mul_out);
                if (rel64 < 0 || rel64 >= numel) continue;
                const int rel = static_cast<int>(rel64);  // 32-bit: 64-bit division is a call
                const int per_u = P.mul2 * (P.mode == KILN_TP_UVU ? 1 : P.mul_out);
                const int u = static_cast<int>(rel / per_u);
                const int v = static_cast<int>(P.mode == KILN_TP_UVU ? rel % P.mul2 : (rel / P.mul_out) % P.mul2);
                const int wo = P.mode == KILN_TP_UVU ? u : static_cast<int>(rel % P.mul_out);
                C pacc = C(0);
                for (int c = P.cg_start; c < P.cg_start + P.cg_count; ++c) {
                    int i, j, k;
                    unpack_ijk(plan.cg_ijk[c], i, j, k);
                    pacc += cg_value<C>(plan, c) * to_compute(x1[P.off1 + u * P.dim1 + i]) *
                            to_compute(x2[P.off2 + v * P.dim2 + j]) * to_compute(go[P.off_out + wo * P.dim_out + k]);
                }
                acc = path_coef<C>(plan, p) * pacc;  // each weight belongs to exactly one path
            }
            W* dw = dw_rows + (parts > 0 ? r.warp : e) * plan.weight_numel;
            // A partition's row sums its edges (the first writes); a per-edge row may add to dw.
            const bool add = parts > 0 ? e > r.begin : accumulate != 0;
            dw[q] = from_compute<W>(add ? to_compute(dw[q]) + acc : acc);
        }
    }
}

// dw[c] = Σ_k partial[k, c] over the edge partitions in order (shared weights): a thread per
// weight; the partials are in T's compute type. `accumulate`: add the sum to dw.
template <typename T>
__global__ void __launch_bounds__(kTpThreads, kTpMinBlocks)
    sum_weight_grads_kernel(const compute_t<T>* __restrict__ partial, int64_t edges, int64_t weight_numel,
                            int accumulate, T* __restrict__ dw) {
    using C = compute_t<T>;
    const int64_t stride = int64_t(gridDim.x) * kTpThreads;
    for (int64_t c = int64_t(blockIdx.x) * kTpThreads + threadIdx.x; c < weight_numel; c += stride) {
        C acc = C(0);
        for (int64_t e = 0; e < edges; ++e) acc += partial[e * weight_numel + c];
        dw[c] = from_compute<T>(accumulate != 0 ? to_compute(dw[c]) + acc : acc);
    }
}

// ------------------------------------------------------------------------------------------
// Hessian assembly (HIP)
// ------------------------------------------------------------------------------------------

// A warp per Hessian row; lanes over the columns of its molecule.
constexpr int kHessThreads = 128;
constexpr int kHessWarps = kHessThreads / 32;
// The feature of an edge or atom: l = 0, 1, 2 (1 + 3 + 5).
constexpr int kHessFeat = 9;

// M[a][b] = Σ_l Σ_m wigner_3j(1, 1, l)[a, b, m] f[offset(l) + m], written out from the
// closed forms of REFERENCE.md §5 (the Rust reference builds the same block from its CG
// tables, so the tests compare two derivations): f0·I/√3 + ε_abm f1_m/√6 + the symmetric
// traceless part of l = 2 (xz, xy, diag(−1, 2, −1)/√3, yz, diag(−1, 0, 1)), each /√10.
template <typename C>
__device__ __forceinline__ C hessian_block(const C* f, int a, int b) {
    const C r3 = precision_constant<C>(0.57735026918962576f, 0.57735026918962576);   // 1/√3
    const C r6 = precision_constant<C>(0.40824829046386302f, 0.40824829046386302);   // 1/√6
    const C r10 = precision_constant<C>(0.31622776601683794f, 0.31622776601683794);  // 1/√10
    const C r30 = precision_constant<C>(0.18257418583505537f, 0.18257418583505537);  // 1/√30
    switch (a * 3 + b) {
        case 0: return f[0] * r3 - f[6] * r30 - f[8] * r10;   // xx
        case 1: return f[3] * r6 + f[5] * r10;                // xy
        case 2: return -f[2] * r6 + f[4] * r10;               // xz
        case 3: return -f[3] * r6 + f[5] * r10;               // yx
        case 4: return f[0] * r3 + C(2) * f[6] * r30;         // yy
        case 5: return f[1] * r6 + f[7] * r10;                // yz
        case 6: return f[2] * r6 + f[4] * r10;                // zx
        case 7: return -f[1] * r6 + f[7] * r10;               // zy
        default: return f[0] * r3 - f[6] * r30 + f[8] * r10;  // zz
    }
}

// The adjoint: ∂⟨G, M(f)⟩/∂f for a 3×3 gradient G (row-major), accumulated into df.
template <typename C>
__device__ __forceinline__ void hessian_block_adjoint(const C* G, C* df) {
    const C r3 = precision_constant<C>(0.57735026918962576f, 0.57735026918962576);
    const C r6 = precision_constant<C>(0.40824829046386302f, 0.40824829046386302);
    const C r10 = precision_constant<C>(0.31622776601683794f, 0.31622776601683794);
    const C r30 = precision_constant<C>(0.18257418583505537f, 0.18257418583505537);
    df[0] += (G[0] + G[4] + G[8]) * r3;
    df[1] += (G[5] - G[7]) * r6;
    df[2] += (G[6] - G[2]) * r6;
    df[3] += (G[1] - G[3]) * r6;
    df[4] += (G[2] + G[6]) * r10;
    df[5] += (G[1] + G[3]) * r10;
    df[6] += (C(2) * G[4] - G[0] - G[8]) * r30;
    df[7] += (G[5] + G[7]) * r10;
    df[8] += (G[8] - G[0]) * r10;
}

// Molecules: atom_mol[i] is atom i's molecule, mol_first [molecules + 1] the first atom of each
// (atoms are consecutive), mol_offset [molecules + 1] where each dense [3n, 3n] Hessian starts.
// Edges: e joins src_e = i to dst_e = j of the same molecule; src_perm lists the edges by src,
// src_ptr [atoms + 1] its CSR offsets.
struct Molecules {
    const int32_t* atom_mol;
    const int32_t* mol_first;
    const int64_t* mol_offset;
};

// H[3i + a, 3j + b] = Σ_{e: (i → j)} M_e[a][b] + Σ_{e: (j → i)} M_e[b][a] (+ N_i[a][b] + N_i[b][a]
// when i = j), each molecule's dense [3n, 3n] block written in full. Reads each incident
// edge's 9 features twice per column pair; writes 4·9n² bytes per molecule (f32).
template <typename T>
__global__ void __launch_bounds__(kHessThreads)
    hessian_fwd_kernel(const T* __restrict__ edge_feat, const T* __restrict__ node_feat,
                       const int32_t* __restrict__ dst, const int32_t* __restrict__ src_perm,
                       const int32_t* __restrict__ src_ptr, Molecules m, int64_t atoms, T* __restrict__ hessian) {
    using C = compute_t<T>;
    const int lane = threadIdx.x % 32;
    const int64_t warps = int64_t(gridDim.x) * kHessWarps;
    for (int64_t row = int64_t(blockIdx.x) * kHessWarps + threadIdx.x / 32; row < 3 * atoms; row += warps) {
        const int i = static_cast<int>(row / 3);
        const int a = static_cast<int>(row % 3);
        const int mol = m.atom_mol[i];
        const int first = m.mol_first[mol];
        const int n3 = 3 * (m.mol_first[mol + 1] - first);
        T* out = hessian + m.mol_offset[mol] + int64_t(3 * (i - first) + a) * n3;
        for (int col = lane; col < n3; col += 32) {
            const int j = first + col / 3;
            const int b = col % 3;
            C f[kHessFeat];
            C forward = C(0);  // edges i → j: M_e[a][b]
            for (int t = src_ptr[i]; t < src_ptr[i + 1]; ++t) {
                const int e = src_perm[t];
                if (dst[e] != j) continue;
                for (int c = 0; c < kHessFeat; ++c) f[c] = to_compute(edge_feat[int64_t(e) * kHessFeat + c]);
                forward += hessian_block(f, a, b);
            }
            C backward = C(0);  // edges j → i: M_e[b][a]
            for (int t = src_ptr[j]; t < src_ptr[j + 1]; ++t) {
                const int e = src_perm[t];
                if (dst[e] != i) continue;
                for (int c = 0; c < kHessFeat; ++c) f[c] = to_compute(edge_feat[int64_t(e) * kHessFeat + c]);
                backward += hessian_block(f, b, a);
            }
            // The same two partial sums land in H[i, j]_ab and H[j, i]_ba in swapped order:
            // the result is exactly symmetric.
            C h = forward + backward;
            if (i == j) {
                for (int c = 0; c < kHessFeat; ++c) f[c] = to_compute(node_feat[int64_t(i) * kHessFeat + c]);
                h += hessian_block(f, a, b) + hessian_block(f, b, a);
            }
            out[col] = from_compute<T>(h);
        }
    }
}

// d edge_feat[e] = adjoint of M at G = dH[i, j] + dH[j, i]ᵀ; d node_feat[i] at dH[i, i] + dH[i, i]ᵀ.
// A thread per edge, then per atom (items = edges + atoms). Reads 2·9 and writes 9 values each.
template <typename T>
__global__ void __launch_bounds__(kHessThreads)
    hessian_bwd_kernel(const T* __restrict__ dhessian, const int32_t* __restrict__ src, const int32_t* __restrict__ dst,
                       Molecules m, int64_t edges, int64_t atoms, T* __restrict__ dedge, T* __restrict__ dnode) {
    using C = compute_t<T>;
    const int64_t stride = int64_t(gridDim.x) * kHessThreads;
    for (int64_t t = int64_t(blockIdx.x) * kHessThreads + threadIdx.x; t < edges + atoms; t += stride) {
        const bool edge = t < edges;
        const int i = edge ? src[t] : static_cast<int>(t - edges);
        const int j = edge ? dst[t] : i;
        const int mol = m.atom_mol[i];
        const int first = m.mol_first[mol];
        const int64_t n3 = 3 * (m.mol_first[mol + 1] - first);
        const T* dh = dhessian + m.mol_offset[mol];
        C G[9];
        for (int a = 0; a < 3; ++a) {
            for (int b = 0; b < 3; ++b) {
                const int64_t ij = int64_t(3 * (i - first) + a) * n3 + 3 * (j - first) + b;
                const int64_t ji = int64_t(3 * (j - first) + b) * n3 + 3 * (i - first) + a;
                G[a * 3 + b] = to_compute(dh[ij]) + to_compute(dh[ji]);
            }
        }
        C df[kHessFeat] = {};
        hessian_block_adjoint(G, df);
        T* out = edge ? dedge + t * kHessFeat : dnode + (t - edges) * kHessFeat;
        for (int c = 0; c < kHessFeat; ++c) out[c] = from_compute<T>(df[c]);
    }
}

// ------------------------------------------------------------------------------------------
// Validation and launches
// ------------------------------------------------------------------------------------------

namespace {

unsigned grid_blocks(int64_t items, int threads) {
    const int64_t blocks = (items + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxGridBlocks ? kMaxGridBlocks : blocks));
}

bool valid_normalization(kiln_sh_normalization normalization) {
    const int v = static_cast<int>(normalization);
    return v == KILN_SH_COMPONENT || v == KILN_SH_NORM || v == KILN_SH_INTEGRAL;
}

template <typename C>
ShScale<C> sh_scale(kiln_sh_normalization normalization) {
    ShScale<C> scale{};
    for (int l = 0; l <= kShLmax; ++l) {
        switch (static_cast<int>(normalization)) {
            case KILN_SH_NORM: scale.s[l] = static_cast<C>(1.0 / std::sqrt(2.0 * l + 1.0)); break;
            case KILN_SH_INTEGRAL: scale.s[l] = static_cast<C>(1.0 / std::sqrt(4.0 * kPi)); break;
            default: scale.s[l] = C(1); break;
        }
    }
    return scale;
}

// Sizes every spherical-harmonics launcher shares: n ≥ 0 vectors, 0 ≤ lmax ≤ 4, and n·25
// elements addressable.
kiln_status check_sh_sizes(int64_t n, int32_t lmax) {
    if (n < 0 || lmax < 0 || lmax > kShLmax || n > INT64_MAX / 32) return KILN_ERROR_INVALID_SIZE;
    return KILN_SUCCESS;
}

// Calls f(std::integral_constant<int, L>{}) for L = lmax (0..4, already validated).
template <typename F>
kiln_status with_lmax(int32_t lmax, F&& f) {
    switch (lmax) {
        case 0: return f(std::integral_constant<int, 0>{});
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        case 3: return f(std::integral_constant<int, 3>{});
        default: return f(std::integral_constant<int, 4>{});
    }
}

// The tensor-product sizes: ≥ 0, row widths and weight counts addressable, and a plan with
// the CG tables the dtype reads (f64 storage: cg_val_f64 and coef_f64; otherwise cg_val).
kiln_status check_plan(kiln_dtype dtype, const kiln_tp_plan* plan) {
    if (plan == nullptr) return KILN_ERROR_NULL_POINTER;
    if (plan->n_paths < 0 || plan->dim1 < 0 || plan->dim2 < 0 || plan->dim_out < 0 || plan->weight_numel < 0 ||
        plan->dim1 > INT32_MAX || plan->dim2 > INT32_MAX || plan->dim_out > INT32_MAX ||
        plan->weight_numel > INT32_MAX) {
        return KILN_ERROR_INVALID_SIZE;
    }
    if (plan->n_paths > 0 && (plan->paths == nullptr || plan->cg_ijk == nullptr)) return KILN_ERROR_NULL_POINTER;
    const bool f64 = static_cast<int>(dtype) == KILN_DTYPE_F64;
    if (plan->n_paths > 0 && !f64 && plan->cg_val == nullptr) return KILN_ERROR_NULL_POINTER;
    if (plan->n_paths > 0 && f64 && (plan->cg_val_f64 == nullptr || plan->coef_f64 == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    return KILN_SUCCESS;
}

unsigned warp_blocks(int64_t rows) { return grid_blocks(rows, kTpWarps); }

// Bytes per partial weight gradient: the compute type of the dtype (f64 for f64 storage).
int64_t partial_bytes(kiln_dtype dtype) {
    return static_cast<int>(dtype) == KILN_DTYPE_F64 ? int64_t(sizeof(double)) : int64_t(sizeof(float));
}

// rows·width elements of the dtype's compute type (8 bytes for f64, 4 otherwise) stay
// addressable in bytes. At a flat 4 bytes, f64 rows of up to INT64_MAX / 4 elements passed,
// whose byte counts overflow.
bool fits(kiln_dtype dtype, int64_t rows, int64_t width) {
    return rows >= 0 && (width == 0 || rows <= INT64_MAX / partial_bytes(dtype) / width);
}

// The shared-weight gradient's edge partitions: one per edge up to kDwParts.
int64_t dw_parts(int64_t edges) { return edges < kDwParts ? edges : kDwParts; }

// Bytes of partial weight gradients the backward needs (shared weights only): one row of
// weight_numel per edge partition. -1 when the count overflows int64.
int64_t workspace_bytes(kiln_dtype dtype, int64_t edges, int64_t weight_numel, int32_t shared_weights) {
    if (shared_weights == 0) return 0;
    const int64_t parts = dw_parts(edges);
    if (weight_numel > 0 && parts > INT64_MAX / partial_bytes(dtype) / weight_numel) return -1;
    return parts * weight_numel * partial_bytes(dtype);
}

// Whether the channel-parallel kernels may read vector-ready blocks 4 channels at a time: row
// widths (x1, output, weights) multiples of 4 and every tensor 16-byte aligned, so a run of 4
// channels starting on a multiple of 4 is aligned to its access (tp_channel.cuh, load_run).
int vector_rows_ok(const kiln_tp_plan* plan, std::initializer_list<const void*> tensors) {
    if ((plan->dim1 | plan->dim_out | plan->weight_numel) % kVecChannels != 0) return 0;
    for (const void* t : tensors) {
        if (!is_aligned(t, kVecBytes)) return 0;
    }
    return 1;
}

// One backward pass. The public backward wants every gradient and writes them; the double
// backward's passes leave some out (NULL: the kernel that makes only it is not launched, the
// edge kernel skips its stores) and add into gradients an earlier pass wrote.
struct Backward {
    kiln_dtype dtype;
    const kiln_tp_plan* plan;
    const void *x, *y, *w;
    int32_t shared_weights;
    Graph g;
    const void* dout;
    int64_t nodes, edges;
    void *dx, *dy, *dw;
    void* workspace;
    cudaStream_t stream;
    // Add into dx; add into dy and dw (one pass never writes one of them and adds to the other).
    int accumulate_dx = 0;
    int accumulate_edge = 0;
};

kiln_status launch_backward(const Backward& b) {
    return kiln::with_storage_type_or_f64(b.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using C = compute_t<T>;
        const T* x = static_cast<const T*>(b.x);
        const T* y = static_cast<const T*>(b.y);
        const T* w = static_cast<const T*>(b.w);
        const T* dout = static_cast<const T*>(b.dout);
        const int vector_rows = vector_rows_ok(b.plan, {b.x, b.y, b.w, b.dout, b.dx, b.dy, b.dw, b.workspace});
        // The fused backward (equivariant_fused.cu: one sender-order walk for dx, dy and dw; it
        // checks on the device, where the plan is, that it applies, and the two kernels below
        // skip their work where it did it): per-edge weights in f32 storage, the double
        // backward's passes included. (f16/bf16 would sum dy in 16 bits; f64, the reference
        // dtype, keeps the two kernels for build time.)
        int fused = 0;
        if constexpr (std::is_same<T, float>::value) {
            if (b.plan->wigner_cg != 0 && b.shared_weights == 0 && vector_rows != 0 && b.nodes > 0 && b.edges > 0 &&
                b.plan->dim1 > 0 && (b.dx != nullptr || b.dy != nullptr || b.dw != nullptr)) {
                const kiln_status st = launch_tp_bwd_fused_uvu(
                    {b.plan, x, y, w, b.g, vector_rows, b.accumulate_dx, b.accumulate_edge, dout, b.nodes, b.edges,
                     static_cast<T*>(b.dx), static_cast<T*>(b.dy), static_cast<T*>(b.dw), warp_blocks(b.nodes),
                     b.stream});
                if (st != KILN_SUCCESS) return st;
                fused = 1;
            }
        }
        if (b.dx != nullptr && b.nodes > 0 && b.plan->dim1 > 0) {
            if (b.plan->wigner_cg != 0) {
                KILN_LAUNCH(warp_blocks(b.nodes), kTpThreads, 0, b.stream, tp_bwd_dx_channel_kernel<T>)(
                    *b.plan, y, w, b.shared_weights, b.g, vector_rows, b.accumulate_dx, dout, b.nodes,
                    static_cast<T*>(b.dx), fused);
            } else {
                KILN_LAUNCH(warp_blocks(b.nodes), kTpThreads, 0, b.stream, tp_bwd_dx1_kernel<T>)(
                    *b.plan, y, w, b.shared_weights, b.g, b.accumulate_dx, dout, b.nodes, static_cast<T*>(b.dx));
            }
            const kiln_status st = launch_status();
            if (st != KILN_SUCCESS) return st;
        }
        // Shared weights: `parts` warps, one a partition of the edges (EdgeRange).
        const int64_t parts = b.shared_weights != 0 ? dw_parts(b.edges) : 0;
        const bool want_dw = b.dw != nullptr;
        if (b.edges > 0 && (b.dy != nullptr || want_dw)) {
            const unsigned blocks = warp_blocks(parts > 0 ? parts : b.edges);
            T* dy = static_cast<T*>(b.dy);
            C* partials = want_dw ? static_cast<C*>(b.workspace) : nullptr;
            if (b.plan->wigner_cg != 0 && b.shared_weights != 0) {
                KILN_LAUNCH(blocks, kTpThreads, 0, b.stream, tp_bwd_edge_channel_kernel<T, C>)(
                    *b.plan, x, y, w, b.shared_weights, b.g, vector_rows, b.accumulate_edge, dout, b.edges, parts,
                    dy, partials, 0);
            } else if (b.plan->wigner_cg != 0) {
                KILN_LAUNCH(blocks, kTpThreads, 0, b.stream, tp_bwd_edge_channel_kernel<T, T>)(
                    *b.plan, x, y, w, b.shared_weights, b.g, vector_rows, b.accumulate_edge, dout, b.edges, parts,
                    dy, static_cast<T*>(b.dw), fused);
            } else if (b.shared_weights != 0) {
                KILN_LAUNCH(blocks, kTpThreads, 0, b.stream, tp_bwd_edge_kernel<T, C>)(
                    *b.plan, x, y, w, b.shared_weights, b.g, b.accumulate_edge, dout, b.edges, parts, dy, partials);
            } else {
                KILN_LAUNCH(blocks, kTpThreads, 0, b.stream, tp_bwd_edge_kernel<T, T>)(
                    *b.plan, x, y, w, b.shared_weights, b.g, b.accumulate_edge, dout, b.edges, parts, dy,
                    static_cast<T*>(b.dw));
            }
            const kiln_status st = launch_status();
            if (st != KILN_SUCCESS) return st;
        }
        if (want_dw && b.shared_weights != 0 && b.plan->weight_numel > 0) {
            if (b.edges == 0) {
                // An empty sum: adds nothing.
                if (b.accumulate_edge != 0) return KILN_SUCCESS;
                const cudaError_t err =
                    cudaMemsetAsync(b.dw, 0, b.plan->weight_numel * kiln::storage_bytes(b.dtype), b.stream);
                if (err != cudaSuccess) {
                    kiln::t_last_cuda_error = err;
                    return KILN_ERROR_CUDA;
                }
                return KILN_SUCCESS;
            }
            KILN_LAUNCH(grid_blocks(b.plan->weight_numel, kTpThreads), kTpThreads, 0, b.stream,
                        sum_weight_grads_kernel<T>)(static_cast<const C*>(b.workspace), parts,
                                                    b.plan->weight_numel, b.accumulate_edge,
                                                    static_cast<T*>(b.dw));
            return launch_status();
        }
        return KILN_SUCCESS;
    });
}

// The forward into out, or with `accumulate` added to it.
kiln_status launch_forward(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y, const void* w,
                           int32_t shared_weights, Graph g, int64_t nodes, void* out, cudaStream_t stream,
                           int accumulate = 0) {
    if (nodes == 0 || plan->dim_out == 0) return KILN_SUCCESS;
    return kiln::with_storage_type_or_f64(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (plan->wigner_cg != 0) {
            const int vector_rows = vector_rows_ok(plan, {x, y, w, out});
            KILN_LAUNCH(warp_blocks(nodes), kTpThreads, 0, stream, tp_fwd_channel_kernel<T>)(
                *plan, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(w), shared_weights,
                g, vector_rows, accumulate, nodes, static_cast<T*>(out));
        } else {
            KILN_LAUNCH(warp_blocks(nodes), kTpThreads, 0, stream, tp_fwd_kernel<T>)(
                *plan, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(w), shared_weights,
                g, accumulate, nodes, static_cast<T*>(out));
        }
        return launch_status();
    });
}

// The double backward: the gradients of L = ⟨gdx, dx⟩ + ⟨gdy, dy⟩ + ⟨gdw, dw⟩, (dx, dy, dw)
// being the backward of out = TP(x, y; w) given dout. The product is linear in each of x, y and
// w, so L = ⟨dout, TP(gdx, y; w) + TP(x, gdy; w) + TP(x, y; gdw)⟩ and each term is a forward
// and a backward with one operand replaced by its upstream gradient:
//   gdout = TP(gdx, y; w) + TP(x, gdy; w) + TP(x, y; gdw)
//   gx = dx(y := gdy) + dx(w := gdw),  gy = dy(x := gdx) + dy(w := gdw),
//   gw = dw(x := gdx) + dw(y := gdy).
// Three passes (one per upstream gradient given; NULL is zero), each a forward adding into
// gdout and a backward without the gradient of the operand it replaced, adding into what an
// earlier pass wrote: the kernels, their determinism and their workspace are the backward's.
// Outputs no pass reaches are zeroed.
struct DoubleBackward {
    Backward base;  // operands, graph, sizes, workspace, stream (its dx, dy, dw unused)
    const void *gdx, *gdy, *gdw;
    void *gx, *gy, *gw, *gdout;
};

kiln_status zero_fill(void* p, int64_t elems, kiln_dtype dtype, cudaStream_t stream) {
    if (elems == 0) return KILN_SUCCESS;
    const cudaError_t err = cudaMemsetAsync(p, 0, elems * kiln::storage_bytes(dtype), stream);
    if (err != cudaSuccess) {
        kiln::t_last_cuda_error = err;
        return KILN_ERROR_CUDA;
    }
    return KILN_SUCCESS;
}

kiln_status launch_double_backward(const DoubleBackward& d) {
    const Backward& b = d.base;
    const void* upstream[3] = {d.gdx, d.gdy, d.gdw};
    bool wrote_out = false, wrote_x = false, wrote_y = false, wrote_w = false;
    for (int pass = 0; pass < 3; ++pass) {
        if (upstream[pass] == nullptr) continue;
        Backward p = b;
        if (pass == 0) p.x = upstream[0];
        if (pass == 1) p.y = upstream[1];
        if (pass == 2) p.w = upstream[2];
        kiln_status st = launch_forward(b.dtype, b.plan, p.x, p.y, p.w, b.shared_weights, b.g, b.nodes, d.gdout,
                                        b.stream, wrote_out ? 1 : 0);
        if (st != KILN_SUCCESS) return st;
        wrote_out = true;
        p.dx = pass == 0 ? nullptr : d.gx;
        p.dy = pass == 1 ? nullptr : d.gy;
        p.dw = pass == 2 ? nullptr : d.gw;
        // Pass 0 writes dy and dw (it runs first), pass 1 only dw, pass 2 only dy.
        p.accumulate_dx = wrote_x ? 1 : 0;
        p.accumulate_edge = (pass == 1 ? wrote_w : wrote_y) ? 1 : 0;
        st = launch_backward(p);
        if (st != KILN_SUCCESS) return st;
        wrote_x = wrote_x || p.dx != nullptr;
        wrote_y = wrote_y || p.dy != nullptr;
        wrote_w = wrote_w || p.dw != nullptr;
    }
    const kiln_tp_plan& pl = *b.plan;
    const int64_t wn = b.shared_weights != 0 ? pl.weight_numel : b.edges * pl.weight_numel;
    const struct {
        bool wrote;
        void* p;
        int64_t elems;
    } outputs[4] = {{wrote_x, d.gx, b.nodes * pl.dim1},
                    {wrote_y, d.gy, b.edges * pl.dim2},
                    {wrote_w, d.gw, wn},
                    {wrote_out, d.gdout, b.nodes * pl.dim_out}};
    for (const auto& o : outputs) {
        if (o.wrote) continue;
        const kiln_status st = zero_fill(o.p, o.elems, b.dtype, b.stream);
        if (st != KILN_SUCCESS) return st;
    }
    return KILN_SUCCESS;
}

// Bytes of the graph build's workspace: per order (receiver, sender) fill counters [nodes] and
// the placed edge ids [edges], int32; -1 when the sizes are invalid (negative, past the int32
// offsets, or edges without a node to join).
int64_t graph_workspace_bytes(int64_t nodes, int64_t edges) {
    if (nodes < 0 || edges < 0 || nodes >= INT32_MAX || edges > INT32_MAX || (nodes == 0 && edges > 0)) return -1;
    return 8 * (nodes + edges);
}

// The layouts the build writes (kiln_equivariant_graph_build's outputs).
struct GraphLayouts {
    int32_t *src, *dst, *dst_ptr, *dst_perm, *src_perm, *src_ptr;
};

kiln_status launch_graph_build(const int32_t* src, const int32_t* dst, int64_t nodes, int64_t edges,
                               const GraphLayouts& out, int32_t* status, void* workspace, cudaStream_t stream) {
    int32_t* fill = static_cast<int32_t*>(workspace);  // [2 nodes]: dst's counters, then src's
    int32_t* slots = fill + 2 * nodes;                  // [2 edges]
    KILN_LAUNCH(grid_blocks(nodes + 1, kGraphThreads), kGraphThreads, 0, stream, graph_init_kernel)(
        nodes, out.dst_ptr, out.src_ptr, fill, status);
    kiln_status st = launch_status();
    if (st != KILN_SUCCESS || edges == 0) return st;
    const unsigned edge_blocks = grid_blocks(edges, kGraphThreads);
    KILN_LAUNCH(edge_blocks, kGraphThreads, 0, stream, graph_count_kernel)(src, dst, nodes, edges, out.src, out.dst,
                                                                          out.dst_ptr, out.src_ptr, status);
    st = launch_status();
    if (st != KILN_SUCCESS) return st;
    KILN_LAUNCH(2, kGraphThreads, 0, stream, graph_scan_kernel)(nodes, out.dst_ptr, out.src_ptr);
    st = launch_status();
    if (st != KILN_SUCCESS) return st;
    const GraphOrder by_dst{out.dst, out.dst_ptr, fill, slots, out.dst_perm};
    const GraphOrder by_src{out.src, out.src_ptr, fill + nodes, slots + edges, out.src_perm};
    KILN_LAUNCH(dim3(edge_blocks, 2), kGraphThreads, 0, stream, graph_place_kernel)(by_dst, by_src, edges, status);
    st = launch_status();
    if (st != KILN_SUCCESS) return st;
    KILN_LAUNCH(dim3(grid_blocks(nodes, kGraphWarps), 2), kGraphThreads, 0, stream, graph_rank_kernel)(
        by_dst, by_src, nodes, status);
    return launch_status();
}

// Pointers of the operands: NULL only where the tensor is empty; aligned to the storage size.
kiln_status check_operands(kiln_dtype dtype, std::initializer_list<std::pair<const void*, int64_t>> tensors) {
    const int64_t elem = kiln::storage_bytes(dtype);
    for (const auto& t : tensors) {
        if (t.second > 0 && t.first == nullptr) return KILN_ERROR_NULL_POINTER;
    }
    for (const auto& t : tensors) {
        if (!is_aligned(t.first, elem)) return KILN_ERROR_MISALIGNED;
    }
    return KILN_SUCCESS;
}

// A backward's arguments, or with `d` the double backward's (its upstream gradients optional,
// each shaped as x, y or w; gdout shaped as out), in the C ABI's order: dtype, plan, sizes,
// pointers, alignment, workspace size.
kiln_status check_backward(const Backward& b, int64_t workspace_given, const DoubleBackward* d) {
    if (!kiln::valid_dtype_or_f64(b.dtype)) return KILN_ERROR_INVALID_DTYPE;
    const kiln_status p = check_plan(b.dtype, b.plan);
    if (p != KILN_SUCCESS) return p;
    const kiln_tp_plan& pl = *b.plan;
    const Graph& g = b.g;
    const bool graph = g.src != nullptr || g.dst != nullptr || g.dst_ptr != nullptr || g.dst_perm != nullptr ||
                       g.src_perm != nullptr || g.src_ptr != nullptr;
    if (!fits(b.dtype, b.nodes, pl.dim1) || !fits(b.dtype, b.nodes, pl.dim_out) || !fits(b.dtype, b.edges, pl.dim2) ||
        !fits(b.dtype, b.edges, pl.weight_numel) || (!graph && b.nodes != b.edges) || b.nodes > INT32_MAX ||
        b.edges > INT32_MAX) {
        return KILN_ERROR_INVALID_SIZE;
    }
    // The backward reads src_ptr (and per edge src, dst, src_perm); the double backward's
    // forward passes read dst_ptr as well.
    if (graph && (g.src_ptr == nullptr || (d != nullptr && g.dst_ptr == nullptr) ||
                  (b.edges > 0 && (g.src == nullptr || g.dst == nullptr || g.src_perm == nullptr)))) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t wn = b.shared_weights != 0 ? pl.weight_numel : b.edges * pl.weight_numel;
    const int64_t needed = workspace_bytes(b.dtype, b.edges, pl.weight_numel, b.shared_weights);
    if (needed < 0) return KILN_ERROR_INVALID_SIZE;
    if (needed > 0 && b.workspace == nullptr) return KILN_ERROR_NULL_POINTER;
    const int64_t out_elems = b.nodes * pl.dim_out;
    const kiln_status ops = check_operands(b.dtype, {{b.x, b.nodes * pl.dim1},
                                                     {b.y, b.edges * pl.dim2},
                                                     {b.w, wn},
                                                     {b.dout, out_elems},
                                                     {b.dx, b.nodes * pl.dim1},
                                                     {b.dy, b.edges * pl.dim2},
                                                     {b.dw, wn},
                                                     {d != nullptr ? d->gdout : nullptr, d != nullptr ? out_elems : 0}});
    if (ops != KILN_SUCCESS) return ops;
    if (d != nullptr) {
        // Given upstream gradients: aligned as any operand (NULL stands for zeros).
        const kiln_status up = check_operands(b.dtype, {{d->gdx, 0}, {d->gdy, 0}, {d->gdw, 0}});
        if (up != KILN_SUCCESS) return up;
    }
    if (!is_aligned(g.src, 4) || !is_aligned(g.dst, 4) || !is_aligned(g.dst_ptr, 4) || !is_aligned(g.dst_perm, 4) ||
        !is_aligned(g.src_perm, 4) || !is_aligned(g.src_ptr, 4) || !is_aligned(b.workspace, partial_bytes(b.dtype))) {
        return KILN_ERROR_MISALIGNED;
    }
    if (workspace_given < needed) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    return KILN_SUCCESS;
}

}  // namespace
}  // namespace kiln::equivariant

// ------------------------------------------------------------------------------------------
// C ABI (kernels/include/kiln.h). Checks in the order: dtype, sizes, values, pointers,
// alignment; a pointer may be NULL where its tensor is empty.
// ------------------------------------------------------------------------------------------

namespace eq = kiln::equivariant;
using kiln::is_aligned;
using kiln::launch_status;

extern "C" {

kiln_status kiln_equivariant_sh_fwd(kiln_dtype dtype, const void* vec, int64_t n, int32_t lmax,
                                    kiln_sh_normalization normalization, int32_t normalize, void* sh, void* stream) {
    if (!kiln::valid_dtype_or_f64(dtype)) return KILN_ERROR_INVALID_DTYPE;
    const kiln_status sizes = eq::check_sh_sizes(n, lmax);
    if (sizes != KILN_SUCCESS) return sizes;
    if (!eq::valid_normalization(normalization)) return KILN_ERROR_INVALID_VALUE;
    if (n == 0) return KILN_SUCCESS;
    if (vec == nullptr || sh == nullptr) return KILN_ERROR_NULL_POINTER;
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(vec, elem) || !is_aligned(sh, elem)) return KILN_ERROR_MISALIGNED;
    const auto s = static_cast<cudaStream_t>(stream);
    const unsigned blocks = eq::grid_blocks(n, eq::kShThreads);
    return kiln::with_storage_type_or_f64(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const eq::ShScale<kiln::compute_t<T>> scale = eq::sh_scale<kiln::compute_t<T>>(normalization);
        return eq::with_lmax(lmax, [&](auto l) {
            constexpr int L = decltype(l)::value;
            KILN_LAUNCH(blocks, eq::kShThreads, 0, s, eq::sh_fwd_kernel<T, L>)(static_cast<const T*>(vec), n, scale,
                                                                               normalize, static_cast<T*>(sh));
            return launch_status();
        });
    });
}

kiln_status kiln_equivariant_sh_bwd(kiln_dtype dtype, const void* vec, const void* dsh, int64_t n, int32_t lmax,
                                    kiln_sh_normalization normalization, int32_t normalize, void* dvec, void* stream) {
    if (!kiln::valid_dtype_or_f64(dtype)) return KILN_ERROR_INVALID_DTYPE;
    const kiln_status sizes = eq::check_sh_sizes(n, lmax);
    if (sizes != KILN_SUCCESS) return sizes;
    if (!eq::valid_normalization(normalization)) return KILN_ERROR_INVALID_VALUE;
    if (n == 0) return KILN_SUCCESS;
    if (vec == nullptr || dsh == nullptr || dvec == nullptr) return KILN_ERROR_NULL_POINTER;
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(vec, elem) || !is_aligned(dsh, elem) || !is_aligned(dvec, elem)) return KILN_ERROR_MISALIGNED;
    const auto s = static_cast<cudaStream_t>(stream);
    const unsigned blocks = eq::grid_blocks(n, eq::kShThreads);
    return kiln::with_storage_type_or_f64(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const eq::ShScale<kiln::compute_t<T>> scale = eq::sh_scale<kiln::compute_t<T>>(normalization);
        return eq::with_lmax(lmax, [&](auto l) {
            constexpr int L = decltype(l)::value;
            KILN_LAUNCH(blocks, eq::kShThreads, 0, s, eq::sh_bwd_kernel<T, L>)(
                static_cast<const T*>(vec), static_cast<const T*>(dsh), n, scale, normalize, static_cast<T*>(dvec));
            return launch_status();
        });
    });
}

int64_t kiln_equivariant_workspace_bytes(int64_t edges, int64_t weight_numel, int32_t shared_weights) {
    return kiln_equivariant_workspace_bytes_for(KILN_DTYPE_F32, edges, weight_numel, shared_weights);
}

int64_t kiln_equivariant_workspace_bytes_for(kiln_dtype dtype, int64_t edges, int64_t weight_numel,
                                             int32_t shared_weights) {
    if (!kiln::valid_dtype_or_f64(dtype) || !eq::fits(dtype, edges, weight_numel) || weight_numel < 0) return -1;
    return eq::workspace_bytes(dtype, edges, weight_numel, shared_weights);
}

kiln_status kiln_equivariant_tp_fwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x1, const void* x2,
                                    const void* w, int32_t shared_weights, int64_t batch, void* out, void* stream) {
    return kiln_equivariant_conv_fwd(dtype, plan, x1, x2, w, shared_weights, nullptr, nullptr, nullptr, batch, batch,
                                     out, stream);
}

kiln_status kiln_equivariant_tp_bwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x1, const void* x2,
                                    const void* w, int32_t shared_weights, const void* dout, int64_t batch, void* dx1,
                                    void* dx2, void* dw, void* workspace, int64_t workspace_bytes, void* stream) {
    return kiln_equivariant_conv_bwd(dtype, plan, x1, x2, w, shared_weights, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, dout, batch, batch, dx1, dx2, dw, workspace, workspace_bytes, stream);
}

kiln_status kiln_equivariant_conv_fwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y,
                                      const void* w, int32_t shared_weights, const int32_t* src, const int32_t* dst_ptr,
                                      const int32_t* dst_perm, int64_t nodes, int64_t edges, void* out, void* stream) {
    if (!kiln::valid_dtype_or_f64(dtype)) return KILN_ERROR_INVALID_DTYPE;
    const kiln_status p = eq::check_plan(dtype, plan);
    if (p != KILN_SUCCESS) return p;
    const bool graph = src != nullptr || dst_ptr != nullptr || dst_perm != nullptr;
    if (!eq::fits(dtype, nodes, plan->dim1) || !eq::fits(dtype, nodes, plan->dim_out) ||
        !eq::fits(dtype, edges, plan->dim2) || !eq::fits(dtype, edges, plan->weight_numel) || (!graph && nodes != edges) ||
        nodes > INT32_MAX || edges > INT32_MAX) {
        return KILN_ERROR_INVALID_SIZE;
    }
    if (graph && (dst_ptr == nullptr || (edges > 0 && src == nullptr))) return KILN_ERROR_NULL_POINTER;
    const int64_t wn = shared_weights != 0 ? plan->weight_numel : edges * plan->weight_numel;
    const kiln_status ops = eq::check_operands(
        dtype, {{x, nodes * plan->dim1}, {y, edges * plan->dim2}, {w, wn}, {out, nodes * plan->dim_out}});
    if (ops != KILN_SUCCESS) return ops;
    if (!is_aligned(src, 4) || !is_aligned(dst_ptr, 4) || !is_aligned(dst_perm, 4)) return KILN_ERROR_MISALIGNED;
    const eq::Graph g{src, nullptr, dst_ptr, dst_perm, nullptr, nullptr};
    return eq::launch_forward(dtype, plan, x, y, w, shared_weights, g, nodes, out, static_cast<cudaStream_t>(stream));
}

kiln_status kiln_equivariant_conv_bwd(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y,
                                      const void* w, int32_t shared_weights, const int32_t* src, const int32_t* dst,
                                      const int32_t* dst_ptr, const int32_t* src_perm, const int32_t* src_ptr,
                                      const void* dout, int64_t nodes, int64_t edges, void* dx, void* dy, void* dw,
                                      void* workspace, int64_t workspace_bytes, void* stream) {
    const eq::Backward b{dtype,
                         plan,
                         x,
                         y,
                         w,
                         shared_weights,
                         eq::Graph{src, dst, dst_ptr, nullptr, src_perm, src_ptr},
                         dout,
                         nodes,
                         edges,
                         dx,
                         dy,
                         dw,
                         workspace,
                         static_cast<cudaStream_t>(stream)};
    const kiln_status st = eq::check_backward(b, workspace_bytes, nullptr);
    return st != KILN_SUCCESS ? st : eq::launch_backward(b);
}

kiln_status kiln_equivariant_tp_bwd2(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x1, const void* x2,
                                     const void* w, int32_t shared_weights, const void* dout, const void* gdx1,
                                     const void* gdx2, const void* gdw, int64_t batch, void* gx1, void* gx2, void* gw,
                                     void* gdout, void* workspace, int64_t workspace_bytes, void* stream) {
    return kiln_equivariant_conv_bwd2(dtype, plan, x1, x2, w, shared_weights, nullptr, nullptr, nullptr, nullptr,
                                      nullptr, nullptr, dout, gdx1, gdx2, gdw, batch, batch, gx1, gx2, gw, gdout,
                                      workspace, workspace_bytes, stream);
}

kiln_status kiln_equivariant_conv_bwd2(kiln_dtype dtype, const kiln_tp_plan* plan, const void* x, const void* y,
                                       const void* w, int32_t shared_weights, const int32_t* src, const int32_t* dst,
                                       const int32_t* dst_ptr, const int32_t* dst_perm, const int32_t* src_perm,
                                       const int32_t* src_ptr, const void* dout, const void* gdx, const void* gdy,
                                       const void* gdw,
                                       int64_t nodes, int64_t edges, void* gx, void* gy, void* gw, void* gdout,
                                       void* workspace, int64_t workspace_bytes, void* stream) {
    const eq::DoubleBackward d{eq::Backward{dtype,
                                            plan,
                                            x,
                                            y,
                                            w,
                                            shared_weights,
                                            eq::Graph{src, dst, dst_ptr, dst_perm, src_perm, src_ptr},
                                            dout,
                                            nodes,
                                            edges,
                                            gx,
                                            gy,
                                            gw,
                                            workspace,
                                            static_cast<cudaStream_t>(stream)},
                               gdx,
                               gdy,
                               gdw,
                               gx,
                               gy,
                               gw,
                               gdout};
    const kiln_status st = eq::check_backward(d.base, workspace_bytes, &d);
    return st != KILN_SUCCESS ? st : eq::launch_double_backward(d);
}

int64_t kiln_equivariant_graph_workspace_bytes(int64_t nodes, int64_t edges) {
    return eq::graph_workspace_bytes(nodes, edges);
}

kiln_status kiln_equivariant_graph_build(const int32_t* src, const int32_t* dst, int64_t nodes, int64_t edges,
                                         int32_t* src_out, int32_t* dst_out, int32_t* dst_ptr, int32_t* dst_perm,
                                         int32_t* src_perm, int32_t* src_ptr, int32_t* status, void* workspace,
                                         int64_t workspace_bytes, void* stream) {
    const int64_t needed = eq::graph_workspace_bytes(nodes, edges);
    if (needed < 0) return KILN_ERROR_INVALID_SIZE;
    const bool edge_outputs = src_out != nullptr && dst_out != nullptr && dst_perm != nullptr && src_perm != nullptr;
    if (dst_ptr == nullptr || src_ptr == nullptr || status == nullptr ||
        (edges > 0 && (src == nullptr || dst == nullptr || !edge_outputs)) || (needed > 0 && workspace == nullptr)) {
        return KILN_ERROR_NULL_POINTER;
    }
    const std::initializer_list<const void*> pointers = {src,     dst,      dst_ptr, dst_perm, src_perm,
                                                         src_ptr, src_out, dst_out, status,   workspace};
    for (const void* p : pointers) {
        if (!is_aligned(p, 4)) return KILN_ERROR_MISALIGNED;
    }
    if (workspace_bytes < needed) return KILN_ERROR_WORKSPACE_TOO_SMALL;
    const eq::GraphLayouts out{src_out, dst_out, dst_ptr, dst_perm, src_perm, src_ptr};
    return eq::launch_graph_build(src, dst, nodes, edges, out, status, workspace, static_cast<cudaStream_t>(stream));
}

kiln_status kiln_equivariant_hessian_fwd(kiln_dtype dtype, const void* edge_feat, const void* node_feat,
                                         const int32_t* dst, const int32_t* src_perm, const int32_t* src_ptr,
                                         const int32_t* atom_mol, const int32_t* mol_first, const int64_t* mol_offset,
                                         int64_t atoms, int64_t edges, int64_t molecules, void* hessian, void* stream) {
    if (!kiln::valid_dtype_or_f64(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (atoms < 0 || edges < 0 || molecules < 0 || atoms > INT32_MAX / 3 || edges > INT32_MAX || molecules > atoms) {
        return KILN_ERROR_INVALID_SIZE;
    }
    if (atoms == 0) return KILN_SUCCESS;
    if (node_feat == nullptr || hessian == nullptr || src_ptr == nullptr || atom_mol == nullptr ||
        mol_first == nullptr || mol_offset == nullptr ||
        (edges > 0 && (edge_feat == nullptr || dst == nullptr || src_perm == nullptr))) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(edge_feat, elem) || !is_aligned(node_feat, elem) || !is_aligned(hessian, elem) ||
        !is_aligned(dst, 4) || !is_aligned(src_perm, 4) || !is_aligned(src_ptr, 4) || !is_aligned(atom_mol, 4) ||
        !is_aligned(mol_first, 4) || !is_aligned(mol_offset, 8)) {
        return KILN_ERROR_MISALIGNED;
    }
    const eq::Molecules m{atom_mol, mol_first, mol_offset};
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type_or_f64(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(eq::grid_blocks(3 * atoms, eq::kHessWarps), eq::kHessThreads, 0, s, eq::hessian_fwd_kernel<T>)(
            static_cast<const T*>(edge_feat), static_cast<const T*>(node_feat), dst, src_perm, src_ptr, m, atoms,
            static_cast<T*>(hessian));
        return launch_status();
    });
}

kiln_status kiln_equivariant_hessian_bwd(kiln_dtype dtype, const void* dhessian, const int32_t* src, const int32_t* dst,
                                         const int32_t* atom_mol, const int32_t* mol_first, const int64_t* mol_offset,
                                         int64_t atoms, int64_t edges, int64_t molecules, void* dedge_feat,
                                         void* dnode_feat, void* stream) {
    if (!kiln::valid_dtype_or_f64(dtype)) return KILN_ERROR_INVALID_DTYPE;
    if (atoms < 0 || edges < 0 || molecules < 0 || atoms > INT32_MAX / 3 || edges > INT32_MAX || molecules > atoms) {
        return KILN_ERROR_INVALID_SIZE;
    }
    if (atoms == 0) return KILN_SUCCESS;
    if (dhessian == nullptr || dnode_feat == nullptr || atom_mol == nullptr || mol_first == nullptr ||
        mol_offset == nullptr || (edges > 0 && (dedge_feat == nullptr || src == nullptr || dst == nullptr))) {
        return KILN_ERROR_NULL_POINTER;
    }
    const int64_t elem = kiln::storage_bytes(dtype);
    if (!is_aligned(dhessian, elem) || !is_aligned(dedge_feat, elem) || !is_aligned(dnode_feat, elem) ||
        !is_aligned(src, 4) || !is_aligned(dst, 4) || !is_aligned(atom_mol, 4) || !is_aligned(mol_first, 4) ||
        !is_aligned(mol_offset, 8)) {
        return KILN_ERROR_MISALIGNED;
    }
    const eq::Molecules m{atom_mol, mol_first, mol_offset};
    const auto s = static_cast<cudaStream_t>(stream);
    return kiln::with_storage_type_or_f64(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        KILN_LAUNCH(eq::grid_blocks(edges + atoms, eq::kHessThreads), eq::kHessThreads, 0, s,
                    eq::hessian_bwd_kernel<T>)(static_cast<const T*>(dhessian), src, dst, m, edges, atoms,
                                               static_cast<T*>(dedge_feat), static_cast<T*>(dnode_feat));
        return launch_status();
    });
}

}  // extern "C"

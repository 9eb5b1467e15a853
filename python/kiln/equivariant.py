"""Equivariant ops in e3nn's conventions (kernels/include/kiln.h, shared/REFERENCE.md §5).

Real spherical harmonics: ``sh [N, (lmax+1)²] = Y⁰..Y^lmax(vec [N, 3])`` for 0 ≤ lmax ≤ 4, in
e3nn's basis (y the polar axis; Y¹ = √3·(x, y, z) in 'component' normalization). With
``normalize`` the vector is divided by its norm first (the zero vector maps to 0 and gets a zero
gradient). ``normalization``: 'component' (|Y^l(x̂)|² = 2l+1), 'norm' (|Y^l(x̂)| = 1) or
'integral' (component / √(4π)).

HIP Hessian assembly: per edge e = (src_e → dst_e) a 9-vector ``edge_feat [edges, 9]`` and per
atom ``node_feat [atoms, 9]`` (l = 0, 1, 2) become 3×3 blocks
``M = Σ_l Σ_m wigner_3j(1, 1, l)[:, :, m]·h^l_m``; ``H[i, j] += M_e``, ``H[j, i] += M_eᵀ``,
``H[i, i] += N_i + N_iᵀ``. Molecules are ``n_atoms[k]`` consecutive atoms (edges within one);
the result is the dense ``[3n, 3n]`` Hessian (row 3i + a, column 3j + b) of a single molecule,
or every molecule's concatenated (``[Σ (3n)²]``), exactly symmetric, in the features' dtype.
src, dst: int32 ``[edges]``. As in the Rust API (kiln::equivariant::hessian) the indices are
read to the host and checked here; the device layout (edges sorted by source, molecule tables)
is built on the host.
"""

from collections import namedtuple

import numpy as np

from ._abi import CONSTANTS
from ._launch import I32, Launch, is_torch

LMAX = 4
NORMALIZATIONS = {
    "component": CONSTANTS["KILN_SH_COMPONENT"],
    "norm": CONSTANTS["KILN_SH_NORM"],
    "integral": CONSTANTS["KILN_SH_INTEGRAL"],
}
HESSIAN_FEAT = 9

HessianGrads = namedtuple("HessianGrads", "dedge_feat dnode_feat")
HessianGrads.__doc__ = "Gradients of hessian: dedge_feat [edges, 9], dnode_feat [atoms, 9]."


def sh_dim(lmax):
    """Width (lmax + 1)² of the harmonics Y⁰..Y^lmax."""
    return (int(lmax) + 1) ** 2


def _sh_args(op, lmax, normalization):
    if isinstance(lmax, bool) or not isinstance(lmax, (int, np.integer)):
        raise TypeError(f"{op}: lmax must be an int, got {type(lmax).__name__}")
    if not 0 <= int(lmax) <= LMAX:
        raise ValueError(f"{op}: lmax must be in 0..{LMAX}, got {lmax}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{op}: unknown normalization {normalization!r}; kiln has {', '.join(NORMALIZATIONS)}")
    return int(lmax), NORMALIZATIONS[normalization]


def spherical_harmonics(vec, lmax, normalization="component", normalize=True):
    """Y⁰..Y^lmax of vec (f32/f16/bf16 ``[N, 3]``): ``[N, (lmax+1)²]`` in vec's dtype."""
    op = "equivariant/sh fwd"
    lmax, norm = _sh_args(op, lmax, normalization)
    with Launch(op, vec, "vec") as L:
        dt = L.check(vec, "vec", shape=(None, 3))
        n = int(vec.shape[0])
        vp = L.ptr(vec)
        sh, shp = L.empty((n, sh_dim(lmax)), vec)
        L.call("kiln_equivariant_sh_fwd", dt, vp, n, lmax, norm, int(bool(normalize)), shp)
        return sh


def spherical_harmonics_backward(vec, dsh, lmax, normalization="component", normalize=True):
    """The gradient ``[N, 3]`` of Σ dsh·Y(vec) with respect to vec; dsh ``[N, (lmax+1)²]`` in
    vec's dtype."""
    op = "equivariant/sh bwd"
    lmax, norm = _sh_args(op, lmax, normalization)
    with Launch(op, vec, "vec") as L:
        dt = L.check(vec, "vec", shape=(None, 3))
        n = int(vec.shape[0])
        L.check(dsh, "dsh", shape=(n, sh_dim(lmax)), like=vec)
        vp, gp = L.ptr(vec), L.ptr(dsh)
        dvec, dvp = L.empty((n, 3), vec)
        L.call("kiln_equivariant_sh_bwd", dt, vp, gp, n, lmax, norm, int(bool(normalize)), dvp)
        return dvec


# ----------------------------------------------------------------------------- HIP Hessian
def _host(x):
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


class _Hessian:
    """Validated operands of the Hessian (the checks of kiln::equivariant::validate_hessian)."""

    def __init__(self, L, edge_feat, node_feat, src, dst, n_atoms):
        op = L.op
        self.dt = L.check(node_feat, "node_feat")
        if node_feat.ndim != 2 or int(node_feat.shape[1]) != HESSIAN_FEAT:
            raise ValueError(f"{op}: node_feat has shape {list(node_feat.shape)}, expected [atoms, 9]")
        L.check(edge_feat, "edge_feat", shape=(None, HESSIAN_FEAT), like=node_feat)
        if n_atoms is None:
            n_atoms = [int(node_feat.shape[0])]
        elif isinstance(n_atoms, (int, np.integer)) and not isinstance(n_atoms, bool):
            n_atoms = [int(n_atoms)]
        else:
            try:
                n_atoms = [int(n) for n in n_atoms]
            except TypeError:
                raise TypeError(f"{op}: n_atoms must be None, an int or a sequence of ints, "
                                f"got {type(n_atoms).__name__}") from None
        if not n_atoms or any(n <= 0 for n in n_atoms):
            raise ValueError(f"{op}: n_atoms must be one or more molecules of at least one atom, got {n_atoms}")
        atoms = sum(n_atoms)
        if atoms > (2**31 - 1) // 3:
            raise ValueError(f"{op}: n_atoms: {atoms} atoms, at most 2^31/3")
        if tuple(node_feat.shape) != (atoms, HESSIAN_FEAT):
            raise ValueError(f"{op}: node_feat has shape {list(node_feat.shape)}, expected [{atoms}, 9] "
                             f"(atoms = sum of n_atoms)")
        edges = int(edge_feat.shape[0])
        L.check(src, "src", dtypes=(I32,), shape=(edges,))
        L.check(dst, "dst", dtypes=(I32,), shape=(edges,))
        s, d = _host(src).astype(np.int64), _host(dst).astype(np.int64)
        for name, v in (("src", s), ("dst", d)):
            bad = np.flatnonzero((v < 0) | (v >= atoms))
            if bad.size:
                e = int(bad[0])
                raise ValueError(f"{op}: {name}: edge {e} has index {int(v[e])}, outside 0..{atoms}")
        mol = np.repeat(np.arange(len(n_atoms), dtype=np.int32), n_atoms)
        bad = np.flatnonzero(mol[s] != mol[d])
        if bad.size:
            e = int(bad[0])
            raise ValueError(f"{op}: dst: edge {e} joins atoms {int(s[e])} and {int(d[e])} of different molecules")
        n = np.asarray(n_atoms, dtype=np.int64)
        self.atoms, self.edges, self.molecules = atoms, edges, len(n_atoms)
        self.shape = (3 * n_atoms[0], 3 * n_atoms[0]) if len(n_atoms) == 1 else (int((9 * n * n).sum()),)
        first = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
        offset = np.concatenate([[0], np.cumsum(9 * n * n)]).astype(np.int64)
        perm = np.argsort(s, kind="stable").astype(np.int32)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(s, minlength=atoms))]).astype(np.int32)
        self.host = dict(src=s.astype(np.int32), dst=d.astype(np.int32), src_perm=perm, src_ptr=ptr, atom_mol=mol,
                         mol_first=first, mol_offset=offset)

    def ptrs(self, L, *names):
        """Device pointers of the index tables, each padded by one unread element (never empty)."""
        out = []
        for name in names:
            v = np.concatenate([self.host[name], np.zeros(1, self.host[name].dtype)])
            if L.torch:
                import torch

                v = torch.from_numpy(v).to(L.device)
            out.append(L.ptr(v))
        return out


def hessian(edge_feat, node_feat, src, dst, n_atoms=None):
    """The HIP Hessian (module doc): edge_feat ``[edges, 9]``, node_feat ``[atoms, 9]`` (same
    float dtype), src/dst int32 ``[edges]``, n_atoms None (one molecule of every atom), an int
    or a sequence (molecules of consecutive atoms). Returns ``[3n, 3n]`` for one molecule, else
    ``[Σ (3n)²]``."""
    op = "equivariant/hessian fwd"
    with Launch(op, node_feat, "node_feat") as L:
        h = _Hessian(L, edge_feat, node_feat, src, dst, n_atoms)
        ep, np_ = L.ptr(edge_feat), L.ptr(node_feat)
        dp, permp, ptrp, molp, firstp, offp = h.ptrs(L, "dst", "src_perm", "src_ptr", "atom_mol", "mol_first",
                                                     "mol_offset")
        out, outp = L.empty(h.shape, node_feat)
        L.call("kiln_equivariant_hessian_fwd", h.dt, ep, np_, dp, permp, ptrp, molp, firstp, offp, h.atoms, h.edges,
               h.molecules, outp)
        return out


def hessian_backward(edge_feat, node_feat, src, dst, n_atoms, dhessian):
    """Gradients of ``hessian`` given dhessian (its shape and dtype):
    ``HessianGrads(dedge_feat, dnode_feat)``. The features give the shapes (their values are not
    read: the Hessian is linear in them)."""
    op = "equivariant/hessian bwd"
    with Launch(op, node_feat, "node_feat") as L:
        h = _Hessian(L, edge_feat, node_feat, src, dst, n_atoms)
        L.check(dhessian, "dhessian", shape=h.shape, like=node_feat)
        gp = L.ptr(dhessian)
        sp, dp, molp, firstp, offp = h.ptrs(L, "src", "dst", "atom_mol", "mol_first", "mol_offset")
        de, dep = L.empty(tuple(edge_feat.shape), node_feat)
        dn, dnp = L.empty(tuple(node_feat.shape), node_feat)
        L.call("kiln_equivariant_hessian_bwd", h.dt, gp, sp, dp, molp, firstp, offp, h.atoms, h.edges, h.molecules,
               dep, dnp)
        return HessianGrads(de, dn)


__all__ = ["LMAX", "NORMALIZATIONS", "HessianGrads", "sh_dim", "spherical_harmonics", "spherical_harmonics_backward",
           "hessian", "hessian_backward"]

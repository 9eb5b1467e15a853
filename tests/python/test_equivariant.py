"""kiln.equivariant (spherical harmonics, HIP Hessian) on the emulated library, against numpy
formulas written from shared/REFERENCE.md §5 (e3nn basis: l = 1 is (x, y, z), y the polar axis),
identities for l = 3, 4 (addition theorem, parity, homogeneity, the polar axis) and finite
differences for the backward; plus the argument checks."""
import math

import numpy as np
import pytest

import kiln
from kiln import equivariant as eq

S3, S5, S15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
SCALE = {"component": lambda l: 1.0, "norm": lambda l: 1 / math.sqrt(2 * l + 1),
         "integral": lambda l: 1 / math.sqrt(4 * math.pi)}


def rng(seed=0):
    return np.random.default_rng(seed)


def sh_ref(v, lmax, normalization="component", normalize=True):
    """f64 Y⁰..Y^lmax (lmax ≤ 2) of v [N, 3] in e3nn's basis (REFERENCE.md §5)."""
    v = np.asarray(v, np.float64)
    if normalize:
        r = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(r > 0, v / np.where(r > 0, r, 1), 0.0)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    blocks = [np.ones((len(v), 1))]
    if lmax >= 1:
        blocks.append(S3 * v)
    if lmax >= 2:
        blocks.append(np.stack([S15 * x * z, S15 * x * y, S5 * (y * y - (x * x + z * z) / 2), S15 * y * z,
                                S15 / 2 * (z * z - x * x)], axis=1))
    return np.concatenate([b * SCALE[normalization](l) for l, b in enumerate(blocks)], axis=1)


def legendre(l, t):
    return [np.ones_like(t), t, (3 * t**2 - 1) / 2, (5 * t**3 - 3 * t) / 2, (35 * t**4 - 30 * t**2 + 3) / 8][l]


def block(sh, l):
    return sh[:, l * l:(l + 1) ** 2].astype(np.float64)


def vecs(n, seed=0):
    return (rng(seed).normal(size=(n, 3)) * 1.7).astype(np.float32)


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
@pytest.mark.parametrize("normalize", [True, False])
def test_sh_forward_l2_against_numpy(normalization, normalize):
    v = vecs(37)
    v[3] = 0  # the zero vector: Y⁰ only
    v[4] = [0, 2.5, 0]  # on the polar axis
    for lmax in (0, 1, 2):
        got = eq.spherical_harmonics(v, lmax, normalization, normalize)
        assert got.dtype == np.float32 and got.shape == (37, (lmax + 1) ** 2)
        np.testing.assert_allclose(got, sh_ref(v, lmax, normalization, normalize), rtol=2e-6, atol=2e-6)


def test_sh_forward_float16():
    v = vecs(20).astype(np.float16)
    got = eq.spherical_harmonics(v, 2)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), sh_ref(v.astype(np.float64), 2), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("l", [3, 4])
def test_sh_l3_l4_identities(l):
    a, b = vecs(50, 1), vecs(50, 2)
    ya, yb = block(eq.spherical_harmonics(a, 4), l), block(eq.spherical_harmonics(b, 4), l)
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    # addition theorem: Σ_m Y_l^m(â) Y_l^m(b̂) = (2l + 1) P_l(â·b̂) (component), so |Y_l|² = 2l + 1
    np.testing.assert_allclose((ya * yb).sum(1), (2 * l + 1) * legendre(l, (ua * ub).sum(1)), atol=2e-5 * (2 * l + 1))
    np.testing.assert_allclose((ya**2).sum(1), 2 * l + 1, rtol=2e-6 * (2 * l + 1))
    # 'norm': |Y_l| = 1; 'integral': component / √(4π)
    yn = block(eq.spherical_harmonics(a, 4, "norm"), l)
    np.testing.assert_allclose(np.linalg.norm(yn, axis=1), 1.0, rtol=3e-6)
    yi = block(eq.spherical_harmonics(a, 4, "integral"), l)
    np.testing.assert_allclose(yi * math.sqrt(4 * math.pi), ya, rtol=2e-6, atol=2e-6)
    # parity (-1)^l, homogeneity of degree l without normalisation
    np.testing.assert_allclose(block(eq.spherical_harmonics(-a, 4), l), (-1) ** l * ya, atol=1e-6)
    raw = block(eq.spherical_harmonics(a, 4, normalize=False), l)
    r = np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(raw, ya * r**l, rtol=1e-5, atol=1e-5)
    # the polar axis y: only m = 0 (the middle component), = √(2l + 1)
    polar = block(eq.spherical_harmonics(np.array([[0, 3, 0], [0, -1, 0]], np.float32), 4), l)
    want = np.zeros((2, 2 * l + 1))
    want[:, l] = [math.sqrt(2 * l + 1), (-1) ** l * math.sqrt(2 * l + 1)]
    np.testing.assert_allclose(polar, want, atol=1e-5)


def fd_grad(f, v, h):
    """Central differences of the scalar f at every entry of v (f64)."""
    g = np.zeros_like(v, dtype=np.float64)
    for idx in np.ndindex(v.shape):
        p, m = v.astype(np.float64).copy(), v.astype(np.float64).copy()
        p[idx] += h
        m[idx] -= h
        g[idx] = (f(p) - f(m)) / (2 * h)
    return g


@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
@pytest.mark.parametrize("normalize", [True, False])
def test_sh_backward_l2_finite_differences_f64(normalization, normalize):
    v = vecs(9, 3)
    dsh = rng(4).normal(size=(9, 9)).astype(np.float32)
    got = eq.spherical_harmonics_backward(v, dsh, 2, normalization, normalize)
    assert got.dtype == np.float32 and got.shape == (9, 3)
    want = fd_grad(lambda x: (dsh * sh_ref(x, 2, normalization, normalize)).sum(), v.astype(np.float64), 1e-6)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("lmax", [3, 4])
def test_sh_backward_l4_finite_differences_of_kiln(lmax):
    v = vecs(6, 5) + np.float32(0.5)
    dsh = rng(6).normal(size=(6, (lmax + 1) ** 2)).astype(np.float32)
    got = eq.spherical_harmonics_backward(v, dsh, lmax)

    def f(x):
        return (dsh.astype(np.float64) * eq.spherical_harmonics(x.astype(np.float32), lmax)).sum()

    want = fd_grad(f, v, 1e-2)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_sh_backward_zero_vector():
    v = np.zeros((2, 3), np.float32)
    g = eq.spherical_harmonics_backward(v, np.ones((2, 25), np.float32), 4)
    assert np.array_equal(g, np.zeros((2, 3), np.float32))


# ----------------------------------------------------------------------------- HIP Hessian
def hessian_basis():
    """B[a, b, c]: wigner_3j(1, 1, l)[a, b, m] at c = offset(l) + m (REFERENCE.md §5 values)."""
    B = np.zeros((3, 3, 9))
    B[:, :, 0] = np.eye(3) / math.sqrt(3)
    eps = np.zeros((3, 3, 3))
    for (a, b, c), s in {(0, 1, 2): 1, (1, 2, 0): 1, (2, 0, 1): 1, (1, 0, 2): -1, (2, 1, 0): -1, (0, 2, 1): -1}.items():
        eps[a, b, c] = s
    B[:, :, 1:4] = eps / math.sqrt(6)

    def sym(a, b):
        m = np.zeros((3, 3))
        m[a, b] = m[b, a] = 1
        return m

    B[:, :, 4] = sym(0, 2) / math.sqrt(10)
    B[:, :, 5] = sym(0, 1) / math.sqrt(10)
    B[:, :, 6] = np.diag([-1, 2, -1]) / math.sqrt(30)
    B[:, :, 7] = sym(1, 2) / math.sqrt(10)
    B[:, :, 8] = np.diag([-1, 0, 1]) / math.sqrt(10)
    return B


def hessian_ref(ef, nf, src, dst, n_atoms):
    """f64 dense Hessians, concatenated per molecule (flattened)."""
    B = hessian_basis()
    out, first = [], 0
    for n in n_atoms:
        H = np.zeros((3 * n, 3 * n))
        for e in range(len(src)):
            i, j = src[e] - first, dst[e] - first
            if 0 <= i < n:
                M = B @ ef[e].astype(np.float64)
                H[3 * i:3 * i + 3, 3 * j:3 * j + 3] += M
                H[3 * j:3 * j + 3, 3 * i:3 * i + 3] += M.T
        for i in range(n):
            N = B @ nf[first + i].astype(np.float64)
            H[3 * i:3 * i + 3, 3 * i:3 * i + 3] += N + N.T
        out.append(H.ravel())
        first += n
    return np.concatenate(out)


def graph(n_atoms, edges_per_mol, seed=0):
    g = rng(seed)
    src, dst, first = [], [], 0
    for n, k in zip(n_atoms, edges_per_mol):
        src += list(first + g.integers(0, n, k))
        dst += list(first + g.integers(0, n, k))
        first += n
    perm = g.permutation(len(src))  # edges in no particular order
    return np.array(src, np.int32)[perm], np.array(dst, np.int32)[perm]


def feats(edges, atoms, seed=0, dtype=np.float32):
    g = rng(seed)
    return g.normal(size=(edges, 9)).astype(dtype), g.normal(size=(atoms, 9)).astype(dtype)


def test_hessian_basis_is_wigner_3j():
    B = hessian_basis()  # Frobenius-normalised per l: orthogonal 3x3 slices of norm² 1 / (2l + 1)
    G = np.einsum("abc,abd->cd", B, B)
    np.testing.assert_allclose(G, np.diag([1.0] + [1 / 3] * 3 + [1 / 5] * 5), atol=1e-15)


def test_hessian_one_molecule_against_numpy():
    src, dst = graph([5], [11])
    src[0], dst[0] = 2, 2  # a self-loop
    ef, nf = feats(11, 5)
    H = eq.hessian(ef, nf, src, dst)
    assert H.shape == (15, 15) and H.dtype == np.float32
    assert np.array_equal(H, H.T)
    np.testing.assert_allclose(H.ravel(), hessian_ref(ef, nf, src, dst, [5]), rtol=1e-5, atol=1e-5)
    assert np.array_equal(eq.hessian(ef, nf, src, dst, 5), H)


def test_hessian_molecules_against_numpy():
    n_atoms = [3, 1, 4]
    src, dst = graph(n_atoms, [4, 2, 7], seed=1)
    ef, nf = feats(len(src), 8, seed=2)
    H = eq.hessian(ef, nf, src, dst, n_atoms)
    assert H.shape == (9 * (9 + 1 + 16),)
    np.testing.assert_allclose(H, hessian_ref(ef, nf, src, dst, n_atoms), rtol=1e-5, atol=1e-5)
    off = 0
    for n in n_atoms:
        m = H[off:off + 9 * n * n].reshape(3 * n, 3 * n)
        assert np.array_equal(m, m.T)
        off += 9 * n * n


def test_hessian_no_edges_float16():
    ef, nf = feats(0, 3, dtype=np.float16)
    e = np.zeros(0, np.int32)
    H = eq.hessian(ef, nf, e, e)
    assert H.dtype == np.float16 and np.array_equal(H, H.T)
    np.testing.assert_allclose(H.astype(np.float64).ravel(), hessian_ref(ef, nf, e, e, [3]), rtol=2e-3, atol=2e-3)


def test_hessian_backward_against_numpy_and_adjoint():
    n_atoms = [4, 3]
    src, dst = graph(n_atoms, [6, 5], seed=3)
    ef, nf = feats(len(src), 7, seed=4)
    dh = rng(5).normal(size=(9 * 16 + 9 * 9,)).astype(np.float32)
    g = eq.hessian_backward(ef, nf, src, dst, n_atoms, dh)
    assert g.dedge_feat.shape == (11, 9) and g.dnode_feat.shape == (7, 9)
    # the Hessian is linear in the features: the gradient is the reference's adjoint, column by column
    basis = np.eye(9)
    want_de = np.zeros((11, 9))
    want_dn = np.zeros((7, 9))
    for c in range(9):
        for e in range(11):
            z = np.zeros((11, 9))
            z[e] = basis[c]
            want_de[e, c] = dh @ hessian_ref(z, np.zeros((7, 9)), src, dst, n_atoms)
        for i in range(7):
            z = np.zeros((7, 9))
            z[i] = basis[c]
            want_dn[i, c] = dh @ hessian_ref(np.zeros((11, 9)), z, src, dst, n_atoms)
    np.testing.assert_allclose(g.dedge_feat, want_de, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g.dnode_feat, want_dn, rtol=1e-5, atol=1e-5)
    # <dH, H(ef, nf)> = <dedge, ef> + <dnode, nf>, through the library alone
    lhs = dh.astype(np.float64) @ eq.hessian(ef, nf, src, dst, n_atoms).astype(np.float64)
    rhs = (g.dedge_feat * ef).sum(dtype=np.float64) + (g.dnode_feat * nf).sum(dtype=np.float64)
    assert abs(lhs - rhs) < 1e-4 * (1 + abs(lhs))


# ----------------------------------------------------------------------------- argument checks
def test_sh_argument_errors():
    v = vecs(4)
    with pytest.raises(ValueError, match=r"equivariant/sh fwd: lmax must be in 0\.\.4, got 5"):
        eq.spherical_harmonics(v, 5)
    with pytest.raises(TypeError, match=r"equivariant/sh fwd: lmax must be an int"):
        eq.spherical_harmonics(v, 2.0)
    with pytest.raises(ValueError, match=r"equivariant/sh bwd: unknown normalization 'unit'"):
        eq.spherical_harmonics_backward(v, np.zeros((4, 9), np.float32), 2, "unit")
    with pytest.raises(ValueError, match=r"equivariant/sh fwd: vec has shape \[4, 4\], expected \[\*, 3\]"):
        eq.spherical_harmonics(vecs(4, 1).repeat(2, 1)[:, :4].copy(), 2)
    with pytest.raises(TypeError, match=r"equivariant/sh fwd: vec has dtype float64"):
        eq.spherical_harmonics(v.astype(np.float64), 2)
    with pytest.raises(TypeError, match=r"equivariant/sh fwd: vec must be a numpy array or a torch tensor"):
        eq.spherical_harmonics(v.tolist(), 2)
    with pytest.raises(ValueError, match=r"equivariant/sh bwd: dsh has shape \[4, 4\], expected \[4, 9\]"):
        eq.spherical_harmonics_backward(v, np.zeros((4, 4), np.float32), 2)
    with pytest.raises(TypeError, match=r"equivariant/sh bwd: dsh has dtype float16, it must match"):
        eq.spherical_harmonics_backward(v, np.zeros((4, 9), np.float16), 2)
    with pytest.raises(ValueError, match=r"equivariant/sh fwd: vec must be contiguous"):
        eq.spherical_harmonics(vecs(4, 2).repeat(2, 0)[::2], 2)


def test_hessian_argument_errors():
    src, dst = graph([2, 2], [2, 2])
    ef, nf = feats(4, 4)
    op = "equivariant/hessian fwd"
    with pytest.raises(ValueError, match=op + r": node_feat has shape \[4, 9\], expected \[5, 9\]"):
        eq.hessian(ef, nf, src, dst, [2, 3])
    with pytest.raises(ValueError, match=op + r": node_feat has shape \[4, 8\], expected \[atoms, 9\]"):
        eq.hessian(ef, nf[:, :8].copy(), src, dst)
    with pytest.raises(ValueError, match=op + r": edge_feat has shape \[4, 3\], expected \[\*, 9\]"):
        eq.hessian(ef[:, :3].copy(), nf, src, dst)
    with pytest.raises(TypeError, match=op + r": edge_feat has dtype float16, it must match"):
        eq.hessian(ef.astype(np.float16), nf, src, dst)
    with pytest.raises(TypeError, match=op + r": src has dtype int64; kiln takes int32"):
        eq.hessian(ef, nf, src.astype(np.int64), dst)
    with pytest.raises(ValueError, match=op + r": dst has shape \[3\], expected \[4\]"):
        eq.hessian(ef, nf, src, dst[:3].copy())
    bad = src.copy()
    bad[1] = 4
    with pytest.raises(ValueError, match=op + r": src: edge 1 has index 4, outside 0\.\.4"):
        eq.hessian(ef, nf, bad, dst)
    cross = np.array([0, 1, 2, 3], np.int32)
    with pytest.raises(ValueError, match=op + r": dst: edge 0 joins atoms 0 and 3 of different molecules"):
        eq.hessian(ef, nf, cross, cross[::-1].copy(), [2, 2])
    with pytest.raises(ValueError, match=op + r": n_atoms must be one or more molecules of at least one atom"):
        eq.hessian(ef, nf, src, dst, [4, 0])
    with pytest.raises(ValueError, match="n_atoms must be one or more"):
        eq.hessian(ef, nf, src, dst, [])
    with pytest.raises(ValueError, match=r"equivariant/hessian bwd: dhessian has shape \[12, 12\], expected \[72\]"):
        eq.hessian_backward(ef, nf, src, dst, [2, 2], np.zeros((12, 12), np.float32))
    with pytest.raises(TypeError, match=r"equivariant/hessian bwd: dhessian has dtype float16"):
        eq.hessian_backward(ef, nf, src, dst, None, np.zeros((12, 12), np.float16))


def test_exported():
    assert kiln.equivariant is eq and "equivariant" in kiln.__all__

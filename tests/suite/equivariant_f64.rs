//! The equivariant family in f64 storage with f64 math: every kernel (spherical harmonics,
//! tensor product, convolution, Hessian; forward and backward) against the f64 reference at
//! f64 tolerances that any f32 step would fail, the registry entries through the generic
//! check (an f64 naive yardstick), and gradients against central differences of the f64
//! kernels themselves, a check only f64 can pass at a tight tolerance.

use kiln::equivariant::{self, Sh, ShNormalization, TpPlan, cpu, sh_dim};
use kiln::{DType, Device, Tensor};

use crate::common::{assert_rows, dot, emu_shapes, kernel_devices, rng};
use crate::equivariant::{
    abs, abs_plan, fd_plans, hessian_grad_bound, hessian_term_bound, molecule_edges, randn, random_vectors,
    sorted_graph,
};

/// f64 rounding error of a value summed from terms of total size `mag`: 64 ulps of the terms
/// (sums of at most a few hundred products), on top of the f64 elementwise tolerance.
fn f64_tol(want: f64, mag: f64) -> f64 {
    let (rtol, atol) = DType::F64.tolerance();
    atol + rtol * want.abs() + 64.0 * f64::EPSILON * mag
}

/// Every element of an f64 device result within [`f64_tol`] of the reference; and the same
/// reference rounded to f32 fails the tolerance somewhere, so the check cannot pass an f32
/// kernel.
fn assert_f64_close(got: &Tensor, want: &[f64], mag: &[f64], what: &str) {
    assert_eq!(got.dtype(), DType::F64, "{what}: dtype");
    let got = got.to_f64_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = f64_tol(*w, *m);
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (err {:e}, tol {tol:e})", (g - w).abs());
    }
    let f32_passes = want.iter().zip(mag).all(|(w, m)| ((*w as f32) as f64 - w).abs() <= f64_tol(*w, *m));
    assert!(!f32_passes || want.iter().all(|w| (*w as f32) as f64 == *w), "{what}: the tolerance would pass f32");
}

fn f64_tensor(v: &[f64], shape: &[usize], device: &Device) -> Tensor {
    Tensor::from_f64(v, shape, DType::F64).unwrap().to_device(device).unwrap()
}

fn i32_tensor(v: &[i32], device: &Device) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap().to_device(device).unwrap()
}

#[test]
fn f64_spherical_harmonics_match_reference() {
    let mut rng = rng();
    for device in kernel_devices() {
        for (n, lmax, normalization, normalize) in [
            (7, 4, ShNormalization::Component, true),
            (11, 4, ShNormalization::Integral, false),
            (5, 2, ShNormalization::Norm, true),
        ] {
            let s = Sh { lmax, normalization, normalize };
            let d = sh_dim(lmax);
            let v = random_vectors(&mut rng, n);
            let g = randn(&mut rng, n * d);
            let (vt, gt) = (f64_tensor(&v, &[n, 3], &device), f64_tensor(&g, &[n, d], &device));
            let y = equivariant::spherical_harmonics(&s, &vt).unwrap();
            let dx = equivariant::spherical_harmonics_backward(&s, &vt, &gt).unwrap();
            let want_y = s.forward(&v).unwrap();
            let want_dx = s.backward(&v, &g).unwrap();
            // Terms of size up to max(r, 1)^l per Y (vectors of norm ≤ 2: 16 at l = 4), and
            // Σ|dsh|·(l+1)·√(2l+1)·16/min(r, 1) per dvec element.
            let what = format!("{device} f64 lmax={lmax} {normalization} normalize={normalize}");
            assert_f64_close(&y, &want_y, &vec![16.0 * 3.0; want_y.len()], &format!("Y {what}"));
            let mag: Vec<f64> = (0..n)
                .flat_map(|i| {
                    let r = v[3 * i..3 * i + 3].iter().map(|a| a * a).sum::<f64>().sqrt();
                    let sum: f64 = g[i * d..(i + 1) * d].iter().map(|a| a.abs()).sum();
                    [sum * 5.0 * 3.0 * 16.0 / r.clamp(1e-30, 1.0); 3]
                })
                .collect();
            assert_f64_close(&dx, &want_dx, &mag, &format!("dvec {what}"));
        }
    }
}

#[test]
fn f64_tensor_product_and_convolution_match_reference() {
    let mut rng = rng();
    for device in kernel_devices() {
        for plan in fd_plans() {
            let aplan = abs_plan(&plan);
            let (d1, d2, dk, nw) =
                (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
            for shared in [true, false] {
                for graph in [false, true] {
                    let (nodes, edges) = if graph { (6, 13) } else { (4, 4) };
                    let (x, y, g) =
                        (randn(&mut rng, nodes * d1), randn(&mut rng, edges * d2), randn(&mut rng, nodes * dk));
                    let wshape: Vec<usize> = if shared { vec![nw] } else { vec![edges, nw] };
                    let w = randn(&mut rng, wshape.iter().product());
                    let (xt, yt, wt, gt) = (
                        f64_tensor(&x, &[nodes, d1], &device),
                        f64_tensor(&y, &[edges, d2], &device),
                        f64_tensor(&w, &wshape, &device),
                        f64_tensor(&g, &[nodes, dk], &device),
                    );
                    let what = format!("{device} f64 {} shared={shared} graph={graph}", plan.irreps_out);
                    let (out, grads, want, want_g, mag, mag_g) = if graph {
                        let (src, dst) = sorted_graph(&mut rng, nodes, edges);
                        let (s64, d64): (Vec<i64>, Vec<i64>) =
                            (src.iter().map(|&v| v as i64).collect(), dst.iter().map(|&v| v as i64).collect());
                        let (st, dt) = (i32_tensor(&src, &device), i32_tensor(&dst, &device));
                        (
                            equivariant::conv(&plan, &xt, &yt, &wt, &st, &dt).unwrap(),
                            equivariant::conv_backward(&plan, (&xt, &yt, &wt), &st, &dt, &gt).unwrap(),
                            cpu::conv_forward(&plan, &x, &y, &w, &s64, &d64).unwrap(),
                            cpu::conv_backward(&plan, &x, &y, &w, &s64, &d64, &g).unwrap(),
                            cpu::conv_forward(&aplan, &abs(&x), &abs(&y), &abs(&w), &s64, &d64).unwrap(),
                            cpu::conv_backward(&aplan, &abs(&x), &abs(&y), &abs(&w), &s64, &d64, &abs(&g)).unwrap(),
                        )
                    } else {
                        (
                            equivariant::tensor_product(&plan, &xt, &yt, &wt).unwrap(),
                            equivariant::tensor_product_backward(&plan, &xt, &yt, &wt, &gt).unwrap(),
                            cpu::tp_forward(&plan, &x, &y, &w, nodes).unwrap(),
                            cpu::tp_backward(&plan, &x, &y, &w, &g, nodes).unwrap(),
                            cpu::tp_forward(&aplan, &abs(&x), &abs(&y), &abs(&w), nodes).unwrap(),
                            cpu::tp_backward(&aplan, &abs(&x), &abs(&y), &abs(&w), &abs(&g), nodes).unwrap(),
                        )
                    };
                    assert_f64_close(&out, &want, &mag, &format!("out {what}"));
                    assert_f64_close(&grads.dx1, &want_g.dx1, &mag_g.dx1, &format!("dx {what}"));
                    assert_f64_close(&grads.dx2, &want_g.dx2, &mag_g.dx2, &format!("dy {what}"));
                    assert_f64_close(&grads.dw, &want_g.dw, &mag_g.dw, &format!("dw {what}"));
                }
            }
        }
    }
}

#[test]
fn f64_hessian_matches_reference_and_is_symmetric() {
    let mut rng = rng();
    for device in kernel_devices() {
        for n_atoms in [vec![4usize], vec![3, 1, 2]] {
            let atoms: usize = n_atoms.iter().sum();
            let (src, dst) = molecule_edges(&mut rng, &n_atoms, 2);
            let edges = src.len();
            let (ef, nf) = (randn(&mut rng, edges * 9), randn(&mut rng, atoms * 9));
            let (s64, d64): (Vec<i64>, Vec<i64>) =
                (src.iter().map(|&v| v as i64).collect(), dst.iter().map(|&v| v as i64).collect());
            let (eft, nft) = (f64_tensor(&ef, &[edges, 9], &device), f64_tensor(&nf, &[atoms, 9], &device));
            let (st, dt) = (i32_tensor(&src, &device), i32_tensor(&dst, &device));
            let h = equivariant::hessian(&eft, &nft, &st, &dt, &n_atoms).unwrap();
            let want = cpu::hessian_forward(&ef, &nf, &s64, &d64, &n_atoms).unwrap();
            let what = format!("{device} f64 n_atoms={n_atoms:?}");
            assert_f64_close(&h, &want, &hessian_term_bound(&ef, &nf, &src, &dst, &n_atoms), &format!("H {what}"));
            let hv = h.to_f64_vec().unwrap();
            let mut at = 0;
            for &n in &n_atoms {
                let m = 3 * n;
                for r in 0..m {
                    for c in 0..m {
                        assert_eq!(hv[at + r * m + c].to_bits(), hv[at + c * m + r].to_bits(), "{what} H[{r},{c}]");
                    }
                }
                at += m * m;
            }
            let dh = randn(&mut rng, want.len());
            let dht = f64_tensor(&dh, h.shape(), &device);
            let (de, dn) = equivariant::hessian_backward(&eft, &nft, &st, &dt, &n_atoms, &dht).unwrap();
            let (wde, wdn) = cpu::hessian_backward(&ef, &nf, &s64, &d64, &n_atoms, &dh).unwrap();
            let (mde, mdn) = hessian_grad_bound(&dh, &src, &dst, &n_atoms);
            assert_f64_close(&de, &wde, &mde, &format!("d edge_feat {what}"));
            assert_f64_close(&dn, &wdn, &mdn, &format!("d node_feat {what}"));
        }
    }
}

#[test]
fn f64_registry_entries_match_reference_on_every_device() {
    let mut rng = rng();
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        for op in kiln::registry::select(&["equivariant/".into()]) {
            if op.full_name() == "equivariant/graph" {
                // Indices only: no floating-point storage to run in f64.
                assert_eq!(op.dtypes(), [DType::I32]);
                continue;
            }
            assert!(op.dtypes().contains(&DType::F64), "{} takes f64", op.full_name());
            let shapes = if device.is_emu() { emu_shapes(op.as_ref()) } else { op.check_shapes() };
            let host = !device.is_emu() && !device.is_cuda();
            let shapes: Vec<_> = if host { shapes.into_iter().take(2).collect() } else { shapes };
            let rows = kiln::check::check_shapes(op.as_ref(), &device, &[DType::F64], &shapes, &mut rng).unwrap();
            assert!(!rows.is_empty());
            for row in &rows {
                assert_eq!(row.dtype, "f64");
                // An f64 check: a tolerance an f32 result could not meet.
                assert!(row.tol < 1e-6, "{row:?}: tolerance not an f64 one");
            }
            assert_rows(&rows);
        }
    }
}

/// The 4th-order central difference (8(f(x+h) − f(x−h)) − (f(x+2h) − f(x−2h))) / 12h.
fn central_difference4(f: impl Fn(f64) -> f64, h: f64) -> f64 {
    (8.0 * (f(h) - f(-h)) - (f(2.0 * h) - f(-2.0 * h))) / (12.0 * h)
}

/// Gradient entry `got` against a finite difference `fd`: within 1e-8·(1 + |fd|). With h =
/// 2^-10 an f64 kernel's rounding reaches ~1e-12 here; an f32 kernel's ~1e-3.
fn assert_fd(got: f64, fd: f64, what: &str) {
    assert!((got - fd).abs() <= 1e-8 * (1.0 + fd.abs()), "{what}: kernel {got} vs finite difference {fd}");
}

const H: f64 = 1.0 / 1024.0;

#[test]
fn f64_kernel_gradients_match_central_differences_of_the_kernel() {
    let mut rng = rng();
    for device in kernel_devices() {
        // Spherical harmonics: L = ⟨dsh, Y(vec)⟩, nonlinear in vec (4th-order differences).
        let s = Sh { lmax: 4, normalization: ShNormalization::Component, normalize: true };
        let (n, d) = (3, sh_dim(4));
        let v: Vec<f64> = random_vectors(&mut rng, n);
        let g = randn(&mut rng, n * d);
        let gt = f64_tensor(&g, &[n, d], &device);
        let loss = |v: &[f64]| {
            let y = equivariant::spherical_harmonics(&s, &f64_tensor(v, &[n, 3], &device)).unwrap();
            dot(&y.to_f64_vec().unwrap(), &g)
        };
        let dv = equivariant::spherical_harmonics_backward(&s, &f64_tensor(&v, &[n, 3], &device), &gt).unwrap();
        let dv = dv.to_f64_vec().unwrap();
        for k in 0..3 * n {
            let fd = central_difference4(
                |h| {
                    let mut p = v.clone();
                    p[k] += h;
                    loss(&p)
                },
                H,
            );
            assert_fd(dv[k], fd, &format!("{device} sh dvec[{k}]"));
        }

        // Convolution: L = ⟨dout, conv(x, y, w)⟩, linear in each operand.
        let plan: TpPlan = fd_plans().remove(0);
        let (d1, d2, dk, nw) = (plan.irreps_in1.dim(), plan.irreps_in2.dim(), plan.irreps_out.dim(), plan.weight_numel);
        let (nodes, edges) = (4, 7);
        let (src, dst) = sorted_graph(&mut rng, nodes, edges);
        let (st, dt) = (i32_tensor(&src, &device), i32_tensor(&dst, &device));
        let ops = [randn(&mut rng, nodes * d1), randn(&mut rng, edges * d2), randn(&mut rng, edges * nw)];
        let shapes = [vec![nodes, d1], vec![edges, d2], vec![edges, nw]];
        let dout = randn(&mut rng, nodes * dk);
        let tensors =
            |o: &[Vec<f64>; 3]| -> Vec<Tensor> { (0..3).map(|i| f64_tensor(&o[i], &shapes[i], &device)).collect() };
        let conv_loss = |o: &[Vec<f64>; 3]| {
            let t = tensors(o);
            dot(&equivariant::conv(&plan, &t[0], &t[1], &t[2], &st, &dt).unwrap().to_f64_vec().unwrap(), &dout)
        };
        let t = tensors(&ops);
        let grads = equivariant::conv_backward(
            &plan,
            (&t[0], &t[1], &t[2]),
            &st,
            &dt,
            &f64_tensor(&dout, &[nodes, dk], &device),
        )
        .unwrap();
        let got = [grads.dx1.to_f64_vec().unwrap(), grads.dx2.to_f64_vec().unwrap(), grads.dw.to_f64_vec().unwrap()];
        for (which, name) in ["dx", "dy", "dw"].iter().enumerate() {
            let len = ops[which].len();
            for k in (0..len).step_by(len.div_ceil(8)) {
                let fd = central_difference4(
                    |h| {
                        let mut p = ops.clone();
                        p[which][k] += h;
                        conv_loss(&p)
                    },
                    H,
                );
                assert_fd(got[which][k], fd, &format!("{device} conv {name}[{k}]"));
            }
        }
    }
}

//! The registry entries `equivariant/tp` and `equivariant/conv` as `kiln run` drives them:
//! string parameters (irreps, mode) resolved by `Params::for_op`, runs on the emulator against
//! the f64 reference in both modes and directions, the parameters' typed errors, and index
//! `.npy` files in int64.

use kiln::check::check_problem;
use kiln::equivariant::TpPlan;
use kiln::registry::{Array, Direction, Op, Params, Problem, Tensors, find};
use kiln::{DType, Device, Error, Tensor, npy};

use crate::common::{assert_rows, kernel_devices, rng};

/// `--param NAME=VALUE` pairs.
fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A uvu (MACE-like, weights per edge) and a uvw (fully connected, shared weights)
/// configuration, as a user would pass them: irreps strings and the mode.
const MODES: [[(&str, &str); 4]; 2] = [
    [("irreps_in1", "4x0e+4x1o"), ("irreps_in2", "1x0e+1x1o+1x2e"), ("irreps_out", "4x0e+4x1o+4x2e"), ("mode", "uvu")],
    [("irreps_in1", "2x0e+3x1o"), ("irreps_in2", "1x0e+1x1o"), ("irreps_out", "3x0e+2x1o+1x1e"), ("mode", "uvw")],
];

fn dim1(pairs: &[(&str, &str); 4]) -> usize {
    pairs[0].1.parse::<kiln::equivariant::Irreps>().unwrap().dim()
}

/// The run `kiln run <op> --param …` makes: parameters from the given strings, inputs of the
/// matching shapes (as a user's .npy files would hold).
fn user_problem(op: &dyn Op, dir: Direction, pairs: &[(&str, &str); 4], rows: usize) -> Problem {
    let mut p = op.random_problem(dir, &[rows, dim1(pairs)], &mut rng());
    p.params = Params::for_op(op, &given(pairs)).unwrap();
    p
}

#[test]
fn tp_and_conv_runs_match_the_reference_in_both_modes_and_directions() {
    let devices = kernel_devices();
    if devices.is_empty() {
        eprintln!("skipped: no emulator or GPU");
        return;
    }
    for device in devices {
        for name in ["equivariant/tp", "equivariant/conv"] {
            let op = find(name).unwrap();
            for pairs in &MODES {
                for dir in Direction::BOTH {
                    let p = user_problem(op.as_ref(), dir, pairs, 19);
                    // The plan the run uses is e3nn's for these strings.
                    let plan = TpPlan::with_mode(
                        pairs[3].1.parse().unwrap(),
                        &pairs[0].1.parse().unwrap(),
                        &pairs[1].1.parse().unwrap(),
                        &pairs[2].1.parse().unwrap(),
                        kiln::equivariant::PathNormalization::Element,
                    )
                    .unwrap();
                    assert!(!plan.instructions.is_empty());
                    assert_eq!(p.get("w").unwrap().shape.last(), Some(&plan.weight_numel));
                    for dtype in [DType::F32, DType::BF16] {
                        let rows = check_problem(op.as_ref(), dir, dtype, &p, &device, pairs[3].1).unwrap();
                        assert_eq!(rows.len(), if dir == Direction::Fwd { 1 } else { 3 });
                        assert_rows(&rows);
                    }
                }
            }
        }
    }
}

/// The registry's conv on the emulator equals its tp scattered over the edges by hand: the
/// same strings drive both entries.
#[test]
fn conv_entry_is_tp_entry_then_scatter_sum() {
    let Some(device) = crate::common::emu() else { return };
    let (tp, conv) = (find("equivariant/tp").unwrap(), find("equivariant/conv").unwrap());
    let p = user_problem(conv.as_ref(), Direction::Fwd, &MODES[0], 24);
    let (x, y, w) = (p.get("x").unwrap(), p.get("y").unwrap(), p.get("w").unwrap());
    let (src, dst) = (&p.get("src").unwrap().data, &p.get("dst").unwrap().data);
    assert!(!dst.contains(&0.0), "node 0 receives nothing");
    let run = |op: &dyn Op, inputs: Vec<(&str, Array)>, out_shape: Vec<usize>| -> Vec<f64> {
        let mut problem = Problem { params: p.params.clone(), ..Problem::default() };
        problem.inputs = inputs.into_iter().map(|(k, a)| (k.to_string(), a.clone())).collect();
        let t = problem.tensors(op, Direction::Fwd, DType::F32, &device).unwrap();
        let mut outputs = Tensors::new();
        outputs.insert("out".into(), Tensor::full(&out_shape, DType::F32, f64::NAN, &device).unwrap());
        op.run(Direction::Fwd, &t, &p.params, &mut outputs).unwrap();
        outputs["out"].to_f64_vec().unwrap()
    };
    let d1 = x.shape[1];
    let gathered: Vec<f64> =
        src.iter().flat_map(|&s| x.data[s as usize * d1..(s as usize + 1) * d1].to_vec()).collect();
    let edges = src.len();
    let messages = run(
        tp.as_ref(),
        vec![("x1", Array::new(vec![edges, d1], gathered)), ("x2", y.clone()), ("w", w.clone())],
        vec![edges, 36],
    );
    let nodes = x.shape[0];
    let fused = run(conv.as_ref(), p.inputs.iter().map(|(k, a)| (k.as_str(), a.clone())).collect(), vec![nodes, 36]);
    let mut scattered = vec![0.0; nodes * 36];
    for (e, &d) in dst.iter().enumerate() {
        for k in 0..36 {
            scattered[d as usize * 36 + k] += messages[e * 36 + k];
        }
    }
    assert!(fused[..36].iter().all(|&v| v == 0.0), "node 0 gets zeros");
    for (i, (f, s)) in fused.iter().zip(&scattered).enumerate() {
        assert!((f - s).abs() <= 1e-5 * (1.0 + s.abs()), "out[{i}]: {f} vs {s}");
    }
}

#[test]
fn string_params_are_typed() {
    let tp = find("equivariant/tp").unwrap();
    let sh = find("equivariant/sh").unwrap();
    let err = |r: kiln::Result<Params>| r.expect_err("bad parameter");
    // Defaults: the first check configuration; numbers keep their defaults and parsing.
    let d = Params::for_op(tp.as_ref(), &[]).unwrap();
    assert_eq!((d.string("mode").unwrap(), d.string("irreps_in1").unwrap()), ("uvu", "4x0e+4x1o"));
    let s = Params::for_op(sh.as_ref(), &given(&[("lmax", "2")])).unwrap();
    assert_eq!((s.number("lmax").unwrap(), s.number("normalize").unwrap()), (2.0, 1.0));
    let glu = find("glu/glu").unwrap();
    assert_eq!(Params::for_op(glu.as_ref(), &given(&[("gate_half", "second")])).unwrap().get("gate_half"), Some(&1.0));
    // Named values: each parameter's own names, its numeric codes still working.
    for (value, code) in [("component", 0.0), ("norm", 1.0), ("integral", 2.0), ("2", 2.0)] {
        let p = Params::for_op(sh.as_ref(), &given(&[("normalization", value)])).unwrap();
        assert_eq!(p.number("normalization").unwrap(), code, "normalization={value}");
    }
    let e = err(Params::for_op(sh.as_ref(), &given(&[("normalization", "unit")])));
    assert!(matches!(&e, Error::InvalidValue { arg: "normalization", reason } if reason.contains("integral")), "{e}");
    // A name belongs to its parameter only.
    let e = err(Params::for_op(sh.as_ref(), &given(&[("lmax", "first")])));
    assert!(matches!(e, Error::InvalidValue { arg: "lmax", .. }), "{e}");
    let e = err(Params::for_op(glu.as_ref(), &given(&[("gate_half", "norm")])));
    assert!(matches!(e, Error::InvalidValue { arg: "gate_half", .. }), "{e}");
    // Unknown parameter.
    let e = err(Params::for_op(tp.as_ref(), &given(&[("irreps", "1x0e")])));
    assert!(matches!(&e, Error::InvalidValue { arg: "param", reason } if reason.contains("irreps_in1")), "{e}");
    // A string for a number parameter, and a number where a string is read.
    let e = err(Params::for_op(sh.as_ref(), &given(&[("lmax", "two")])));
    assert!(matches!(e, Error::InvalidValue { arg: "lmax", .. }), "{e}");
    let mut p = tp.random_problem(Direction::Fwd, &[3, 16], &mut rng());
    p.params.insert("mode".into(), 1.0);
    let e = tp.reference(Direction::Fwd, &p).expect_err("mode as a number");
    assert!(matches!(&e, Error::InvalidValue { arg: "mode", reason } if reason.contains("string")), "{e}");
    assert!(matches!(p.params.number("irreps_in1"), Err(Error::InvalidValue { arg: "irreps_in1", .. })));
    // Malformed irreps, l above 4, an unknown mode: each names its parameter, in every entry
    // point that reads it.
    for (name, bad) in [("irreps_in1", "4x0q+4x1o"), ("irreps_out", "4x"), ("irreps_in2", "1x5e"), ("mode", "uuv")] {
        let mut p = tp.random_problem(Direction::Fwd, &[3, 16], &mut rng());
        p.params = Params::for_op(tp.as_ref(), &given(&[(name, bad)])).unwrap();
        let e = tp.outputs(Direction::Fwd, &p).expect_err(bad);
        assert!(matches!(&e, Error::InvalidValue { arg, .. } if *arg == name), "{name}={bad}: {e}");
        let t = p.tensors(tp.as_ref(), Direction::Fwd, DType::F32, &Device::Cpu).unwrap();
        let e = tp.run(Direction::Fwd, &t, &p.params, &mut Tensors::new()).expect_err(bad);
        assert!(matches!(&e, Error::InvalidValue { arg, .. } if *arg == name), "{name}={bad}: {e}");
    }
}

#[test]
fn irreps_that_do_not_match_the_data_are_shape_errors() {
    let mut devices = vec![Device::Cpu];
    devices.extend(kernel_devices());
    for op in [find("equivariant/tp").unwrap(), find("equivariant/conv").unwrap()] {
        let [x, y] = if op.name() == "tp" { ["x1", "x2"] } else { ["x", "y"] };
        // Data of the uvu configuration, parameters of the uvw one.
        let data = op.random_problem(Direction::Bwd, &[9, dim1(&MODES[0])], &mut rng());
        for (changed, arg) in [("irreps_in1", x), ("irreps_in2", y)] {
            let value = MODES[1].iter().find(|p| p.0 == changed).unwrap().1;
            let params = Params::for_op(op.as_ref(), &given(&[(changed, value)])).unwrap();
            for device in &devices {
                let t = data.tensors(op.as_ref(), Direction::Bwd, DType::F32, device).unwrap();
                let e = op.run(Direction::Bwd, &t, &params, &mut Tensors::new()).expect_err(changed);
                assert!(matches!(e, Error::Shape { arg: a, .. } if a == arg), "{device} {changed}: {e}");
            }
        }
        // Weights of another plan.
        let params = Params::for_op(op.as_ref(), &given(&[("irreps_out", "4x0e+4x1o")])).unwrap();
        let t = data.tensors(op.as_ref(), Direction::Fwd, DType::F32, &Device::Cpu).unwrap();
        let e = op.run(Direction::Fwd, &t, &params, &mut Tensors::new()).expect_err("w");
        assert!(matches!(e, Error::Shape { arg: "w", .. }), "{e}");
    }
}

/// The bytes of an int64 `.npy` file of `values` (numpy's default integer): written by hand,
/// so the reader is tested against the format, not against its own writer.
fn int64_npy(values: &[i64]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}", values.len());
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    bytes
}

#[test]
fn int64_indices_are_narrowed_with_a_range_check() {
    let dir = std::env::temp_dir().join(format!("kiln-npy-i64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("src.npy");
    std::fs::write(&path, int64_npy(&[0, 5, 2_147_483_647, 3])).unwrap();
    let a = npy::read_indices(&path, "src").unwrap();
    assert_eq!((a.shape.as_slice(), a.data.as_slice()), (&[4][..], &[0.0, 5.0, 2_147_483_647.0, 3.0][..]));
    // Round trip through the device's index dtype.
    let t = a.to_tensor(DType::I32).unwrap();
    assert_eq!(t.to_f64_vec().unwrap(), a.data);
    for bad in [2_147_483_648i64, -1, i64::MAX] {
        std::fs::write(&path, int64_npy(&[1, bad])).unwrap();
        let e = npy::read_indices(&path, "src").expect_err("out of the i32 index range");
        assert!(
            matches!(&e, Error::InvalidValue { arg: "src", reason } if reason.contains(&format!("element 1 is {}", bad as f64))),
            "{e}"
        );
    }
    // int32 files are read as they are.
    npy::write_i32(&path, &Array::new(vec![2], vec![4.0, 1.0])).unwrap();
    assert_eq!(npy::read_indices(&path, "src").unwrap().data, [4.0, 1.0]);
    std::fs::remove_dir_all(&dir).ok();
}

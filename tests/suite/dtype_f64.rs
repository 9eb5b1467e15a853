//! f64 storage outside the equivariant family: tensors keep every bit on every device, .npy
//! files round-trip it, and every other family rejects it with its typed dtype error (never a
//! panic, never a run).

use kiln::registry::{Array, Direction, Tensors, registry};
use kiln::{DType, Device, Error, Tensor, npy};

use crate::common::{kernel_devices, rng};

/// Values no f32 holds: 1 + 2^-40, π, a subnormal-free tiny and a huge one.
const EXACT: [f64; 6] = [1.0 + 1.0 / 1099511627776.0, std::f64::consts::PI, -1e-300, 1e300, 0.1, -0.0];

#[test]
fn f64_tensors_keep_every_bit_on_every_device() {
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let t = Tensor::from_f64(&EXACT, &[2, 3], DType::F64).unwrap().to_device(&device).unwrap();
        assert_eq!(t.dtype(), DType::F64);
        let back = t.to_f64_vec().unwrap();
        assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), EXACT.map(f64::to_bits), "{device}");
        let z = Tensor::zeros(&[4], DType::F64, &device).unwrap();
        assert_eq!(z.to_f64_vec().unwrap(), vec![0.0; 4]);
    }
    let t = Tensor::from_vec(EXACT.to_vec(), &[6]).unwrap();
    assert_eq!(t.dtype(), DType::F64);
}

#[test]
fn npy_f64_round_trip_is_exact_and_outputs_follow_the_dtype() {
    let dir = std::env::temp_dir().join(format!("kiln-npy-f64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Array::new(vec![3, 2], EXACT.to_vec());
    let path = dir.join("a.npy");
    npy::write_f64(&path, &a).unwrap();
    let back = npy::read(&path).unwrap();
    assert_eq!(back.shape, vec![3, 2]);
    assert_eq!(back.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), EXACT.map(f64::to_bits));
    // write_output: f64 for f64 outputs (exact), f32 for the other floats (rounded).
    npy::write_output(&path, &a, DType::F64).unwrap();
    assert_eq!(npy::read(&path).unwrap().data[0], EXACT[0]);
    npy::write_output(&path, &a, DType::F32).unwrap();
    assert_eq!(npy::read(&path).unwrap().data[0], 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every op outside the equivariant family (activation, arith, glu, norm, padding, attention), both
/// directions, on the host and every kernel device: f64 inputs are `Error::DType`.
#[test]
fn other_families_reject_f64_with_a_typed_error() {
    let mut rng = rng();
    for device in std::iter::once(Device::Cpu).chain(kernel_devices()) {
        let mut families = std::collections::BTreeSet::new();
        for op in registry().into_iter().filter(|op| op.family() != "equivariant") {
            assert!(!op.dtypes().contains(&DType::F64), "{} lists f64", op.full_name());
            let shape = op.check_shapes().into_iter().min_by_key(|s| s.iter().product::<usize>()).unwrap();
            for &dir in op.directions() {
                let problem = op.random_problem(dir, &shape, &mut rng);
                let inputs = problem.tensors(op.as_ref(), dir, DType::F64, &device).unwrap();
                let mut outputs = Tensors::new();
                for (spec, shape) in op.outputs(dir, &problem).unwrap() {
                    let t = Tensor::zeros(&shape, spec.storage.dtype(DType::F64), &device).unwrap();
                    outputs.insert(spec.name.to_string(), t);
                }
                let r = op.run(dir, &inputs, &problem.params, &mut outputs);
                assert!(
                    matches!(r, Err(Error::DType { .. })),
                    "{} {} on {device}: {r:?}",
                    op.full_name(),
                    if dir == Direction::Fwd { "fwd" } else { "bwd" }
                );
            }
            families.insert(op.family());
        }
        assert_eq!(
            families.into_iter().collect::<Vec<_>>(),
            ["activation", "arith", "attention", "glu", "norm", "padding"]
        );
    }
}

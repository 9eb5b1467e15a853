//! Every op's bench cases (what `kiln bench` and the criterion benches time): fixed, named
//! problems. Attention's own cases are checked in attention.rs.

use kiln::registry::{BENCH_SEED, registry, select, shape_label};

/// Every op names at least one case on each side, each label once; an op that does not name its
/// own cases has one, its bench shape, labelled by the shape.
#[test]
fn every_op_has_named_cases() {
    for op in registry() {
        for gpu in [false, true] {
            let cases = op.bench_cases(gpu);
            assert!(!cases.is_empty(), "{}", op.full_name());
            let labels: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.label.as_str()).collect();
            assert_eq!(labels.len(), cases.len(), "{}: {cases:?}", op.full_name());
            if op.family() != "attention" {
                let shape = if gpu { op.bench_shape_gpu() } else { op.bench_shape_cpu() };
                assert_eq!((cases.len(), cases[0].label.clone()), (1, shape_label(&shape)), "{}", op.full_name());
                assert_eq!(cases[0].shape, shape);
            }
        }
    }
}

/// The default case's problem is the op's random problem at the fixed seed: the same tensors on
/// every construction.
#[test]
fn default_case_is_the_same_problem_every_time() {
    use rand::SeedableRng;
    for name in ["activation/xgelu", "norm/layernorm", "padding/unpad"] {
        let op = select(&[name.into()]).remove(0);
        let case = op.bench_cases(false).remove(0);
        for &dir in op.directions() {
            let p = case.problem(dir);
            assert_eq!(p, op.bench_cases(false)[0].problem(dir), "{name} {dir}");
            let seeded =
                op.random_problem(dir, &op.bench_shape_cpu(), &mut rand::rngs::StdRng::seed_from_u64(BENCH_SEED));
            assert_eq!(p, seeded, "{name} {dir}");
        }
    }
    assert_eq!(shape_label(&[16384, 4096]), "16384x4096");
}

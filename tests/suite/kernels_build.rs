//! The kernel build: with `--features cuda`, every kernel is compiled for the default
//! architectures, and no kernel of any family spills or uses a stack frame (parsed from
//! the `ptxas -v` report build.rs keeps).

use kiln::build_info::{self, parse_ptxas_report};

#[test]
fn ptxas_report_parses() {
    let sample = "ptxas info    : Compiling entry function '_ZN4kiln10activation3fooEv' for 'sm_90a'\n\
                  ptxas info    : Function properties for _ZN4kiln10activation3fooEv\n    \
                  8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
                  ptxas info    : Used 40 registers, used 1 barriers, 380 bytes cmem[0]\n";
    let k = parse_ptxas_report(sample);
    assert_eq!(k.len(), 1);
    assert_eq!((k[0].arch.as_str(), k[0].stack_bytes, k[0].spill_store_bytes, k[0].registers), ("sm_90a", 8, 4, 40));
}

#[test]
fn no_kernel_spills_or_has_a_stack_frame() {
    if !build_info::CUDA_COMPILED {
        eprintln!("skipped: built without the cuda feature");
        return;
    }
    let kernels = parse_ptxas_report(build_info::PTXAS_REPORT);
    for family in ["activation", "glu", "padding", "norm"] {
        let ours: Vec<_> = kernels.iter().filter(|k| k.name.contains(family)).collect();
        assert!(!ours.is_empty(), "no {family} kernel in the ptxas report");
        let bad: Vec<_> =
            ours.iter().filter(|k| k.stack_bytes + k.spill_store_bytes + k.spill_load_bytes > 0).collect();
        assert!(bad.is_empty(), "{family} kernels with a stack frame or spills: {bad:#?}");
    }
}

#[test]
fn kernels_are_built_for_the_default_architectures() {
    if !build_info::CUDA_COMPILED || std::env::var_os("KILN_CUDA_ARCHS").is_some() {
        eprintln!("skipped: built without the cuda feature or with KILN_CUDA_ARCHS");
        return;
    }
    let kernels = parse_ptxas_report(build_info::PTXAS_REPORT);
    for arch in ["sm_80", "sm_90a"] {
        assert!(kernels.iter().any(|k| k.arch == arch), "nothing compiled for {arch}");
    }
    assert!(build_info::CUDA_ARCHS.contains("code=compute_80"), "no compute_80 PTX: {}", build_info::CUDA_ARCHS);
}

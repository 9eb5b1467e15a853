//! The emulator's own tests (feature `emu`): every detector catches its planted bug and names
//! it at the line marked `PLANTED: <case>` in kernels/emu/selftest/planted.cu, each correct
//! twin runs clean, and the warp collectives and atomics agree with their scalar definitions.

use std::ffi::{CStr, CString};

use kiln::ffi_emu::runtime::{
    kiln_emu_hang_seconds, kiln_emu_last_finding, kiln_emu_selftest, kiln_emu_set_checked, kiln_emu_set_hang_seconds,
};

const PLANTED: &str = include_str!("../../kernels/emu/selftest/planted.cu");

// cudaError_t values a failed launch reports.
const INVALID_CONFIGURATION: i32 = 9;
const ILLEGAL_ADDRESS: i32 = 700;
const MISALIGNED_ADDRESS: i32 = 716;
const LAUNCH_FAILURE: i32 = 719;

/// Runs a case; returns the launch's cudaError_t and, when it failed, the finding.
fn run(case: &str, buggy: bool, results: &mut [i32]) -> (i32, String) {
    // SAFETY: sets a flag; every test in this binary wants checked mode.
    unsafe { kiln_emu_set_checked(1) };
    let name = CString::new(case).expect("a case name");
    // SAFETY: `name` is NUL-terminated; results is a valid buffer of results.len() elements.
    let status =
        unsafe { kiln_emu_selftest(name.as_ptr(), i32::from(buggy), results.as_mut_ptr(), results.len() as i64) };
    // SAFETY: a NUL-terminated string owned by this thread's runtime state.
    let finding = unsafe { CStr::from_ptr(kiln_emu_last_finding()) }.to_string_lossy().into_owned();
    (status, if status == 0 { String::new() } else { finding })
}

/// The line of planted.cu that carries `PLANTED: <case>`.
fn planted_line(case: &str) -> usize {
    let marker = format!("PLANTED: {case}");
    PLANTED
        .lines()
        .position(|l| l.trim_end().ends_with(&marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no `{marker}` in planted.cu"))
}

fn caught(case: &str, kind: &str, code: i32) {
    let (status, finding) = run(case, true, &mut []);
    assert_eq!(status, code, "{case}: planted bug not reported with cudaError_t {code}: {finding}");
    assert!(finding.contains(kind), "{case}: finding does not say `{kind}`: {finding}");
    // The memory findings are located through the binary's line tables; a stripped binary (the
    // GPU bundle's) has none and says so, and then only the launch site names the kernel.
    let (at, located) = if finding.contains("no line tables") {
        let at = "launched at kernels/emu/selftest/planted.cu:".to_string();
        (at.clone(), finding.contains(&at))
    } else {
        let at = format!("planted.cu:{}", planted_line(case));
        // planted.cu:12 must not pass for planted.cu:120.
        let located =
            finding.match_indices(&at).any(|(i, _)| !finding[i + at.len()..].starts_with(|c: char| c.is_ascii_digit()));
        (at, located)
    };
    assert!(located, "{case}: finding is not located at {at}: {finding}");
    let (status, finding) = run(case, false, &mut []);
    assert_eq!(status, 0, "{case}: the correct twin reported {finding}");
}

#[test]
fn missing_barrier_is_a_race() {
    caught("missing_barrier", "data race", LAUNCH_FAILURE);
}

#[test]
fn reused_shared_slot_is_a_race() {
    caught("reused_slot", "data race", LAUNCH_FAILURE);
}

#[test]
fn off_by_one_write_is_out_of_bounds() {
    caught("off_by_one", "out-of-bounds access", ILLEGAL_ADDRESS);
}

#[test]
fn never_written_shared_half_is_uninitialised() {
    caught("unwritten_shared", "read of uninitialised memory", LAUNCH_FAILURE);
}

#[test]
fn overlapping_blocks_race() {
    caught("overlapping_blocks", "data race", LAUNCH_FAILURE);
}

#[test]
fn divergent_barriers_are_found() {
    caught("divergent_barrier", "barrier divergence", LAUNCH_FAILURE);
}

#[test]
fn exit_before_a_barrier_is_found() {
    caught("early_exit", "barrier divergence", LAUNCH_FAILURE);
}

#[test]
fn shuffle_naming_an_exited_lane_is_found() {
    caught("shuffle_exited", "invalid warp collective", LAUNCH_FAILURE);
}

#[test]
fn shuffle_reading_outside_its_mask_is_found() {
    caught("shuffle_outside_mask", "invalid warp collective", LAUNCH_FAILURE);
}

#[test]
fn syncwarp_orders_lanes_and_its_absence_races() {
    caught("syncwarp", "data race", LAUNCH_FAILURE);
}

#[test]
fn unwritten_global_read_is_found() {
    caught("uninit_global", "read of uninitialised memory", LAUNCH_FAILURE);
}

#[test]
fn misaligned_vector_load_is_found() {
    caught("misaligned", "misaligned access", MISALIGNED_ADDRESS);
}

#[test]
fn misaligned_vector_accesses_are_seen_at_their_width() {
    caught("misaligned_8_load", "misaligned access", MISALIGNED_ADDRESS);
    caught("misaligned_8_store", "misaligned access", MISALIGNED_ADDRESS);
    caught("misaligned_float4", "misaligned access", MISALIGNED_ADDRESS);
}

#[test]
fn deadlock_is_found() {
    caught("deadlock", "deadlock", LAUNCH_FAILURE);
    // Every distinct waiting site, with how many threads wait there, not the first few threads.
    let (_, finding) = run("deadlock", true, &mut []);
    let sites = finding.matches(" wait").count();
    assert!(sites >= 2, "each waiting site is named: {finding}");
    assert!(finding.contains("2 threads wait at a warp collective (__syncwarp"), "lane 0 of each warp: {finding}");
    assert!(finding.contains("threads wait at __syncthreads"), "the block's barrier: {finding}");
}

#[test]
fn a_spin_wait_ends_with_a_diagnosis() {
    // SAFETY: reads and sets a number; this test restores it.
    let default = unsafe { kiln_emu_hang_seconds() };
    unsafe { kiln_emu_set_hang_seconds(1.0) };
    let started = std::time::Instant::now();
    caught("spin", "has run", LAUNCH_FAILURE);
    unsafe { kiln_emu_set_hang_seconds(default) };
    assert!(started.elapsed().as_secs_f64() < 10.0, "the hang ended within seconds");
}

#[test]
fn dynamic_shared_overrun_is_found() {
    caught("dynamic_shared", "out-of-bounds access", ILLEGAL_ADDRESS);
}

#[test]
fn out_of_bounds_far_from_the_buffer_is_found() {
    caught("far_past_end", "out-of-bounds access", ILLEGAL_ADDRESS);
    caught("far_before_start", "out-of-bounds access", ILLEGAL_ADDRESS);
    caught("dynamic_shared_negative", "out-of-bounds access", ILLEGAL_ADDRESS);
    let (_, finding) = run("far_past_end", true, &mut []);
    assert!(finding.contains("past its end"), "reported against the table it indexes: {finding}");
    let (_, finding) = run("dynamic_shared_negative", true, &mut []);
    assert!(finding.contains("before the start of"), "a negative offset says so: {finding}");
}

#[test]
fn wild_and_freed_pointers_are_found() {
    caught("wild_pointer", "out-of-bounds access", ILLEGAL_ADDRESS);
    let (_, finding) = run("wild_pointer", true, &mut []);
    assert!(finding.contains("wild pointer"), "named as a wild pointer: {finding}");
    caught("use_after_free", "out-of-bounds access", ILLEGAL_ADDRESS);
    let (_, finding) = run("use_after_free", true, &mut []);
    assert!(finding.contains("freed 256-byte allocation"), "named as a use after free: {finding}");
    // Host pointers (the emulated library called from C or Python) are not wild.
    // Both as raw pointer arguments and inside a parameter block.
    let mut last = [0i32; 2];
    let (status, finding) = run("host_pointers", false, &mut last);
    assert_eq!(status, 0, "a launch on host memory reported {finding}");
    assert_eq!(last, [63, 62], "the kernels ran on the host buffers");
}

#[test]
fn ptx_operand_rules_are_enforced() {
    caught("ldmatrix_misaligned", "misaligned access", MISALIGNED_ADDRESS);
    caught("cp_async_misaligned", "misaligned access", MISALIGNED_ADDRESS);
}

#[test]
fn reading_a_cp_async_destination_before_its_wait_is_found() {
    caught("cp_async_stale", "cp.async still in flight", LAUNCH_FAILURE);
}

#[test]
fn a_fenced_ticket_reduction_is_legal_and_its_missing_fence_a_race() {
    caught("fence_reduction", "data race", LAUNCH_FAILURE);
    let mut total = [0i32];
    assert_eq!(run("fence_reduction", false, &mut total).0, 0);
    assert_eq!(total[0], 4 * 64, "the last block sums every partial");
}

#[test]
fn launch_configuration_is_checked() {
    let (status, _) = run("bad_config", true, &mut []);
    assert_eq!(status, INVALID_CONFIGURATION, "2048 threads per block must not launch");
    assert_eq!(run("bad_config", false, &mut []).0, 0);
}

#[test]
fn dynamic_shared_memory_above_48_kib_needs_the_opt_in() {
    const INVALID_VALUE: i32 = 1;
    let (status, _) = run("shared_opt_in", true, &mut []);
    assert_eq!(status, INVALID_VALUE, "64 KiB without cudaFuncSetAttribute must not launch");
    let mut sum = [0i32];
    let (status, finding) = run("shared_opt_in", false, &mut sum);
    assert_eq!(status, 0, "KILN_LAUNCH opts the kernel in: {finding}");
    assert_eq!(sum[0], 3, "the first and last float of the 64 KiB were both usable");
    let (status, _) = run("shared_too_big", true, &mut []);
    assert_eq!(status, INVALID_VALUE, "164 KiB is more than sm_80 allows");
}

#[test]
fn an_error_pending_from_other_work_is_not_kiln_s() {
    use kiln::activation::{self, Activation};
    use kiln::{DType, Device, Error, Tensor};
    const PENDING: u32 = 8; // KILN_ERROR_CUDA_PENDING
    let device = Device::emu().expect("emu");
    let x = Tensor::from_f32(&[1.0, -2.0, 3.0], &[3], DType::F32).unwrap().to_device(&device).unwrap();
    // Someone else's launch failed and nobody took its error yet.
    assert_eq!(run("leave_pending_error", false, &mut []).0, INVALID_CONFIGURATION);
    let err = activation::forward(&Activation::Silu, &x).unwrap_err();
    let Error::Kernel { status, message, .. } = &err else { panic!("not a kernel error: {err}") };
    assert_eq!(*status, PENDING, "{message}");
    assert!(
        message.contains("pending") && message.contains(&format!("cudaError_t {INVALID_CONFIGURATION}")),
        "{message}"
    );
    // Left for its owner, who then takes it; kiln launches again.
    assert_eq!(run("peek_error", false, &mut []).0, INVALID_CONFIGURATION, "kiln consumed another's error");
    assert_eq!(run("take_error", false, &mut []).0, INVALID_CONFIGURATION);
    let y = activation::forward(&Activation::Silu, &x).unwrap().to_f32_vec().unwrap();
    assert!((y[2] - 3.0 / (1.0 + (-3.0f32).exp())).abs() < 1e-6);
}

/// CUDA's definitions, lane by lane, of what `collectives_kernel` computes (64 threads, value
/// 3t + 1 per thread).
fn expected_collectives() -> Vec<i32> {
    const T: usize = 64;
    let v = |t: usize| (3 * t + 1) as i32;
    let mut out = vec![0; 12 * T];
    for t in 0..T {
        let lane = t % 32;
        let warp = t - lane;
        let lanes = warp..warp + 32;
        let r = [
            v(warp + (lane * 7) % 32),
            if lane >= 3 { v(t - 3) } else { v(t) },
            if lane + 5 < 32 { v(t + 5) } else { v(t) },
            v(warp + (lane ^ 6)),
            v(warp + (lane ^ 4)),
            if lane % 16 + 2 < 16 { v(t + 2) } else { v(t) },
            lanes.clone().filter(|&u| v(u) % 4 == 0).fold(0u32, |m, u| m | 1 << (u - warp)) as i32,
            i32::from(lanes.clone().any(|u| u == 40)),
            i32::from(lanes.clone().all(|u| v(u) > 10)),
            lanes.clone().map(v).sum(),
            lanes.clone().map(|u| if u % 2 == 0 { -v(u) } else { v(u) }).max().expect("32 lanes"),
            (0..T).filter(|u| u % 3 == 0).count() as i32,
        ];
        for (k, value) in r.into_iter().enumerate() {
            out[k * T + t] = value;
        }
    }
    out
}

#[test]
fn collectives_follow_cuda_semantics() {
    let mut results = vec![i32::MIN; 12 * 64];
    let (status, finding) = run("collectives", false, &mut results);
    assert_eq!(status, 0, "{finding}");
    let expected = expected_collectives();
    for (i, (got, want)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "result {} of thread {}", i / 64, i % 64);
    }
}

#[test]
fn allgather_hands_every_lane_every_record() {
    let mut results = vec![i32::MIN; 64];
    let (status, finding) = run("allgather", false, &mut results);
    assert_eq!(status, 0, "{finding}");
    for (t, &got) in results.iter().enumerate() {
        let (lane, warp) = (t % 32, t - t % 32);
        assert_eq!(got, 7 * (warp + (3 * lane) % 32) as i32 + 1, "thread {t}");
    }
}

#[test]
fn atomics_are_atomic_and_not_races() {
    let mut results = [0i32; 3];
    let (status, finding) = run("atomics", false, &mut results);
    assert_eq!(status, 0, "{finding}");
    assert_eq!(results[0], 5 * 64, "atomicAdd on an int from every thread");
    assert_eq!(results[1], 5 * 64, "atomicAdd of 0.5f from every thread, doubled");
    assert!((0..5).contains(&results[2]), "atomicCAS: one block claims the slot, got {}", results[2]);
}

//! The `kiln` command line, end to end.

use std::path::Path;
use std::process::Command;

use kiln::npy;
use kiln::registry::Array;

fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("run kiln");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn list_has_one_line_per_op_and_direction() {
    let (code, out, _) = kiln(&["list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), kiln::registry::registry().iter().map(|op| op.directions().len()).sum::<usize>());
    assert!(lines.contains(&"activation/xgelu bwd f32,f16,bf16"), "{out}");
    assert!(lines.contains(&"equivariant/conv bwd2 f32,f16,bf16,f64"), "{out}");
}

#[test]
fn info_runs_without_a_gpu() {
    let (code, out, _) = kiln(&["info"]);
    assert_eq!(code, 0);
    assert!(out.contains("cuda:") && out.contains("emu:") && out.contains("device:"), "{out}");
    let emu_line = out.lines().find(|l| l.starts_with("emu:")).unwrap_or_default();
    assert_eq!(emu_line.contains("checked mode"), kiln::build_info::EMU_COMPILED, "{out}");
}

#[test]
fn info_says_where_the_shared_libraries_are() {
    let (code, out, _) = kiln(&["info"]);
    assert_eq!(code, 0);
    let libs = [("libkiln.so", kiln::build_info::CUDA_COMPILED), ("libkiln_emu.so", kiln::build_info::EMU_COMPILED)];
    for (name, compiled) in libs {
        let line = out.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{out}"));
        if compiled {
            let path = line.rsplit(": ").next().unwrap_or_default();
            assert!(std::path::Path::new(path).is_file(), "{line}");
            assert!(path.ends_with(name), "{line}");
        } else {
            assert!(line.contains("not built"), "{line}");
        }
    }
}

#[test]
fn check_on_emu_compares_kernels_with_references() {
    let (code, out, err) =
        kiln(&["check", "--backend", "emu", "activation/xgelu", "glu/swiglu", "--max-elements", "5000"]);
    if !kiln::build_info::EMU_COMPILED {
        assert_eq!(code, 2);
        assert!(err.contains("`emu` feature"), "{err}");
        return;
    }
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("activation/xgelu") && out.contains("dalpha [4097]") && out.contains("glu/swiglu"), "{out}");
    assert!(out.contains("check on emu:") && !out.contains("FAIL"), "{out}");
}

#[test]
fn check_on_cpu_passes_and_reports_rows() {
    let (code, out, err) = kiln(&["check", "--backend", "cpu", "activation/x"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("finite differences dalpha") && out.contains("PASS"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn unknown_op_is_an_error() {
    let (code, _, err) = kiln(&["check", "--backend", "cpu", "no-such-op"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown op"), "{err}");
}

#[test]
fn run_reads_npy_and_writes_outputs() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = Array::new(vec![2, 3], vec![-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]);
    let dy = Array::new(vec![2, 3], vec![1.0; 6]);
    let slope = Array::new(vec![3], vec![0.1, 0.2, 0.3]);
    for (name, a) in [("x", &x), ("dy", &dy), ("slope", &slope)] {
        npy::write_f32(&dir.join(format!("{name}.npy")), a).unwrap();
    }
    let d = dir.to_str().unwrap();
    let (code, out, err) = kiln(&["run", "activation/prelu", "--dir", d, "--bwd", "--backend", "cpu"]);
    assert_eq!(code, 0, "{out}{err}");
    let dx = npy::read(&dir.join("dx.npy")).unwrap();
    let dslope = npy::read(&dir.join("dslope.npy")).unwrap();
    assert_eq!(dx.data, [0.1f32, 0.2, 0.3, 1.0, 1.0, 1.0].map(f64::from));
    assert_eq!(dslope.data.len(), 3);
    assert!((dslope.data[0] + 2.0).abs() < 1e-6 && (dslope.data[1] + 0.5).abs() < 1e-6 && dslope.data[2] == 0.0);

    let (code, _, err) = kiln(&["run", "activation/xgelu", "--dir", d, "--param", "beta=1", "--backend", "cpu"]);
    assert_eq!(code, 2);
    assert!(err.contains("beta"), "{err}");
    let (code, _, err) = kiln(&["run", "activation/jumprelu", "--dir", d, "--backend", "cpu"]);
    assert_eq!(code, 2, "missing theta.npy must fail");
    assert!(err.contains("theta.npy"), "{err}");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// `kiln run equivariant/tp` with irreps and mode as string parameters, on .npy files written
/// here: the output is e3nn's fully connected product, computed here from the same inputs.
#[test]
fn run_takes_irreps_and_mode_as_string_parameters() {
    use kiln::equivariant::{PathNormalization, TpPlan, cpu};
    let dir = std::env::temp_dir().join(format!("kiln-cli-tp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (in1, in2, out) = ("2x0e+1x1o", "1x0e+1x1o", "1x0e+2x1o+1x1e");
    let plan = TpPlan::with_mode(
        "uvw".parse().unwrap(),
        &in1.parse().unwrap(),
        &in2.parse().unwrap(),
        &out.parse().unwrap(),
        PathNormalization::Element,
    )
    .unwrap();
    let (batch, d1, d2) = (3, plan.irreps_in1.dim(), plan.irreps_in2.dim());
    // Values exact in f32, never zero.
    let values =
        |n: usize, k: usize| -> Vec<f64> { (0..n).map(|i| ((i * 7 + k) % 11) as f64 / 8.0 - 0.6875).collect() };
    let (x1, x2, w) = (values(batch * d1, 1), values(batch * d2, 2), values(plan.weight_numel, 3));
    for (name, shape, data) in
        [("x1", vec![batch, d1], &x1), ("x2", vec![batch, d2], &x2), ("w", vec![plan.weight_numel], &w)]
    {
        npy::write_f32(&dir.join(format!("{name}.npy")), &Array::new(shape, data.clone())).unwrap();
    }
    let d = dir.to_str().unwrap();
    let backend = if kiln::build_info::EMU_COMPILED { "emu" } else { "cpu" };
    let params = [
        "--param",
        &format!("irreps_in1={in1}"),
        "--param",
        &format!("irreps_in2={in2}"),
        "--param",
        &format!("irreps_out={out}"),
        "--param",
        "mode=uvw",
    ]
    .map(str::to_string);
    let mut args: Vec<&str> = vec!["run", "equivariant/tp", "--dir", d, "--backend", backend];
    args.extend(params.iter().map(String::as_str));
    let (code, stdout, err) = kiln(&args);
    assert_eq!(code, 0, "{stdout}{err}");
    let got = npy::read(&dir.join("out.npy")).unwrap();
    let want = cpu::tp_forward(&plan, &x1, &x2, &w, batch).unwrap();
    assert_eq!(got.shape, [batch, plan.irreps_out.dim()]);
    for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "out[{i}]: {g} vs {w}");
    }
    // The double backward: dout and the upstream gradients in, the four gradients out.
    let dk = plan.irreps_out.dim();
    let (dout, gdx1, gdx2, gdw) =
        (values(batch * dk, 4), values(batch * d1, 5), values(batch * d2, 6), values(plan.weight_numel, 7));
    for (name, shape, data) in [
        ("dout", vec![batch, dk], &dout),
        ("gdx1", vec![batch, d1], &gdx1),
        ("gdx2", vec![batch, d2], &gdx2),
        ("gdw", vec![plan.weight_numel], &gdw),
    ] {
        npy::write_f32(&dir.join(format!("{name}.npy")), &Array::new(shape, data.clone())).unwrap();
    }
    let mut bwd2 = args.clone();
    bwd2.push("--bwd2");
    let (code, stdout, err) = kiln(&bwd2);
    assert_eq!(code, 0, "{stdout}{err}");
    let up = cpu::Upstream { gdx1: Some(&gdx1), gdx2: Some(&gdx2), gdw: Some(&gdw) };
    let want = cpu::tp_double_backward(&plan, &x1, &x2, &w, &dout, batch, up).unwrap();
    for (name, want) in [("gx1", &want.gx1), ("gx2", &want.gx2), ("gw", &want.gw), ("gdout", &want.gdout)] {
        let got = npy::read(&dir.join(format!("{name}.npy"))).unwrap();
        assert_eq!(got.data.len(), want.len(), "{name}");
        for (i, (g, w)) in got.data.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{name}[{i}]: {g} vs {w}");
        }
    }
    // An op without a double backward refuses it by name.
    let (code, _, err) = kiln(&["run", "equivariant/sh", "--dir", d, "--bwd2", "--backend", "cpu"]);
    assert_eq!(code, 2);
    assert!(err.contains("equivariant/sh has no bwd2 direction"), "{err}");
    // A malformed irreps string and a word for a number parameter are errors naming them.
    let mut bad = args.clone();
    bad.extend(["--param", "irreps_out=2x1q"]);
    let (code, _, err) = kiln(&bad);
    assert_eq!(code, 2);
    assert!(err.contains("argument `irreps_out`"), "{err}");
    let (code, _, err) = kiln(&["run", "equivariant/sh", "--dir", d, "--param", "lmax=two", "--backend", "cpu"]);
    assert_eq!(code, 2);
    assert!(err.contains("argument `lmax`") && err.contains("takes a number"), "{err}");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

#[test]
fn bench_on_cpu_writes_json() {
    let path = std::env::temp_dir().join(format!("kiln-bench-{}.json", std::process::id()));
    let (code, out, err) =
        kiln(&["bench", "--backend", "cpu", "activation/relu", "--runs", "1", "--json", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(v["ceilings"]["copy_gbps"].as_f64().unwrap() > 0.0);
    assert_eq!(v["results"].as_array().unwrap().len(), 6, "relu fwd+bwd in three dtypes");
    // Each row names its fixed case: relu's one case is its CPU bench shape.
    for r in v["results"].as_array().unwrap() {
        assert_eq!((r["case"].as_str(), r["shape"].clone()), (Some("256x1024"), serde_json::json!([256, 1024])), "{r}");
    }
    assert!(out.contains("seed 0x6b696c6e") && out.contains("256x1024"), "{out}");
    let _ = std::fs::remove_file(path);
}

/// Bench problems are fixed: a seed is refused rather than silently ignored.
#[test]
fn bench_refuses_a_seed() {
    let (code, _, err) = kiln(&["bench", "--backend", "cpu", "activation/relu", "--runs", "1", "--seed", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("seed") && err.contains("fixed problems"), "{err}");
}

/// The sweep's arguments are checked before any device work: a direction other than fwd/bwd, a
/// head dim without variants and a backend that cannot time kernels are errors naming them.
#[test]
fn sweep_refuses_bad_arguments() {
    let (code, _, err) = kiln(&["sweep", "--backend", "cpu", "--dir", "sideways"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dir") && err.contains("sideways"), "{err}");
    let (code, _, err) = kiln(&["sweep", "--backend", "cpu", "--dir", "bwd", "--head-dim", "96"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("head-dim") && err.contains("96"), "{err}");
    let (code, _, err) = kiln(&["sweep", "--backend", "cpu", "--dir", "bwd", "--head-dim", "64"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("backend"), "{err}");
}

/// `--case` keeps the cases whose label contains it (here on the CPU reference, attention's
/// small cases); a filter no case matches is an error before anything is timed.
#[test]
fn bench_case_filter_selects_by_label() {
    let args = ["bench", "--backend", "cpu", "attention/alibi", "--runs", "1", "--dtype", "bf16", "--case"];
    let (code, out, err) = kiln(&[&args[..], &["causal geometric"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("attention/alibi")).collect();
    assert_eq!(rows.len(), 2, "fwd and bwd of one case\n{out}");
    assert!(rows.iter().all(|r| r.contains(" B2xS128xH2xD64 causal geometric ")), "{out}");
    let (code, out, err) = kiln(&[&args[..], &["B99"]].concat());
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("case") && !out.contains("attention/alibi"), "{out}{err}");
}

/// Attention's emulator cases by name, each timed once per direction: B2·S128, H2, D64, full
/// and causal, every bias.
#[test]
fn bench_on_emu_names_the_attention_cases() {
    if !kiln::build_info::EMU_COMPILED {
        return;
    }
    let (code, out, err) = kiln(&["bench", "--backend", "emu", "attention/alibi", "--runs", "1", "--dtype", "bf16"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("attention/alibi")).collect();
    assert_eq!(rows.len(), 12, "{out}");
    for mode in ["full", "causal"] {
        for bias in ["nobias", "alibi", "geometric"] {
            let label = format!(" B2xS128xH2xD64 {mode} {bias} ");
            assert_eq!(rows.iter().filter(|r| r.contains(&label)).count(), 2, "{label}: fwd and bwd\n{out}");
        }
    }
}

#[test]
fn bench_table_header_names_every_column() {
    let (code, out, err) = kiln(&["bench", "--backend", "cpu", "activation/xgelu", "--runs", "1", "--dtype", "f32"]);
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().find(|l| l.starts_with("op ")).unwrap_or_else(|| panic!("no header: {out}"));
    assert!(header.trim_end().ends_with("TFLOP/s"), "{header}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("activation/xgelu")).collect();
    assert!(!rows.is_empty(), "{out}");
    for row in rows {
        // Every field has a fixed width, so the columns line up only if the lines are as long.
        assert_eq!(row.chars().count(), header.chars().count(), "\n{header}\n{row}");
    }
}

#[test]
fn bench_on_emu_times_the_emulated_kernels() {
    if !kiln::build_info::EMU_COMPILED {
        return;
    }
    let (code, out, err) = kiln(&["bench", "--backend", "emu", "activation/relu", "--runs", "1", "--dtype", "bf16"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("device emu") && out.lines().filter(|l| l.starts_with("activation/relu")).count() == 2,
        "{out}"
    );
}

/// scripts/perf-record.py on a minimal GPU-run folder: the measured figures land in latest.json
/// and the card's table with perf/model.json's traffic ratio beside them.
#[test]
fn perf_record_puts_the_model_beside_the_measurements() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3");
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-perf-record-{}", std::process::id()));
    let (out, perf) = (dir.join("out"), dir.join("perf"));
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, text: &str| std::fs::write(out.join(name), text).unwrap();
    write("REVISION", "commit abc\nkernels_tree def\ndirty no\n");
    write("nvidia-smi.txt", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n");
    write(
        "check.json",
        r#"{"results":[{"op":"activation/relu","dir":"fwd","dtype":"bf16","pass":true,"max_err":0.0},
            {"op":"attention/alibi","dir":"fwd","dtype":"bf16","pass":true,"max_err":0.01}]}"#,
    );
    write(
        "bench.json",
        r#"{"results":[{"op":"activation/relu","dir":"fwd","dtype":"bf16","variant":"default","gbps":2800.0,
            "tflops":0.7,"pct_of_copy":93.3,"shape":[1,2]}],"ceilings":{"copy_gbps":3000}}"#,
    );
    // Two named cases of one op, direction and dtype: an entry each, the verdict on both.
    write(
        "bench_attention.json",
        r#"{"results":[{"op":"attention/alibi","dir":"fwd","dtype":"bf16","case":"B16xS1024xH16xD128 full nobias",
            "variant":"","gbps":1.0,"tflops":300.0,"pct_of_copy":0.1,"shape":[16,1024,16,16,128]},
            {"op":"attention/alibi","dir":"fwd","dtype":"bf16","case":"B8xS2048xH16xD128 causal alibi",
            "variant":"","gbps":1.0,"tflops":250.0,"pct_of_copy":0.1,"shape":[8,2048,16,16,128]}],
            "ceilings":{"copy_gbps":3000}}"#,
    );
    // A rerun after a fix (another commit) replaces the verdict it has and keeps the rest.
    let rerun = dir.join("rerun");
    std::fs::create_dir_all(&rerun).unwrap();
    let write2 = |name: &str, text: &str| std::fs::write(rerun.join(name), text).unwrap();
    write2("REVISION", "commit fix\nkernels_tree ghi\ndirty no\n");
    write2("nvidia-smi.txt", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n");
    write2(
        "check.json",
        r#"{"results":[{"op":"norm/layernorm","dir":"bwd","dtype":"f32","pass":true,"max_err":1e-7}]}"#,
    );
    write(
        "check_attention.json",
        r#"{"results":[{"op":"norm/layernorm","dir":"bwd","dtype":"f32","pass":false,"max_err":1e-5}]}"#,
    );
    write2("tests.log", "test norm::x ... ok\ntest result: ok. 2 passed; 0 failed\n");
    // e3nn's convolution times alone (benches/peers/equivariant.py); kiln's come from the bench.
    write2(
        "bench.json",
        r#"{"results":[{"op":"equivariant/conv","dir":"fwd","dtype":"f32","variant":"","gbps":1.0,"tflops":1.0,
            "pct_of_copy":1.0,"median_us":400.0,"shape":[100000,1152]},
            {"op":"equivariant/conv","dir":"bwd","dtype":"f32","variant":"","gbps":1.0,"tflops":1.0,
            "pct_of_copy":1.0,"median_us":1100.0,"shape":[100000,1152]}],"ceilings":{"copy_gbps":3000}}"#,
    );
    write2(
        "peers.json",
        r#"{"env":{},"notes":[],"results":[
            {"op":"equivariant/conv","dir":"fwd","dtype":"f32","shape":[100000,1152],"kiln_ms":null,
             "peers":{"e3nn_compile":4.0},"ratios":{}},
            {"op":"equivariant/conv","dir":"fwd+bwd","dtype":"f32","shape":[100000,1152],"kiln_ms":null,
             "peers":{"e3nn_compile":15.0},"ratios":{}}]}"#,
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/perf-record.py");
    let status =
        Command::new("python3").arg(script).arg(&out).arg(&rerun).env("KILN_PERF_DIR", &perf).status().unwrap();
    assert!(status.success());
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(perf.join("latest.json")).unwrap()).unwrap();
    let relu = &latest["results"][0];
    assert_eq!((relu["op"].as_str(), relu["gbps"].as_f64()), (Some("activation/relu"), Some(2800.0)));
    // perf/model.json models activation/relu fwd bf16 at every byte once.
    assert_eq!(relu["model_traffic_ratio"].as_f64(), Some(1.0), "{relu}");
    assert_eq!(latest["card"].as_str(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(relu["case"].as_str(), Some("1x2"), "a row without a case is named by its shape: {relu}");
    let attention: Vec<_> =
        latest["results"].as_array().unwrap().iter().filter(|e| e["op"] == "attention/alibi").collect();
    let cases: Vec<_> =
        attention.iter().map(|e| (e["case"].as_str(), e["tflops"].as_f64(), e["pass"].as_bool())).collect();
    assert_eq!(
        cases,
        [
            (Some("B16xS1024xH16xD128 full nobias"), Some(300.0), Some(true)),
            (Some("B8xS2048xH16xD128 causal alibi"), Some(250.0), Some(true))
        ],
        "{attention:?}"
    );
    assert_eq!(attention[1]["shape"], serde_json::json!([8, 2048, 16, 16, 128]));
    let norm = latest["results"].as_array().unwrap().iter().find(|e| e["op"] == "norm/layernorm").unwrap();
    assert_eq!((norm["pass"].as_bool(), norm["commit"].as_str()), (Some(true), Some("fix")), "{norm}");
    assert_eq!(relu["commit"].as_str(), Some("abc"), "{relu}");
    assert_eq!(latest["runs"][1]["tests"][0].as_str(), Some("test result: ok. 2 passed; 0 failed"));
    let conv = |dir: &str| {
        latest["results"].as_array().unwrap().iter().find(|e| e["op"] == "equivariant/conv" && e["dir"] == dir).unwrap()
    };
    // kiln fwd 0.4 ms against 4 ms; fwd + bwd 1.5 ms against 15 ms.
    assert_eq!(conv("fwd")["peers"]["e3nn_compile"].as_f64(), Some(0.1), "{}", conv("fwd"));
    assert_eq!(conv("fwd+bwd")["peers"]["e3nn_compile"].as_f64(), Some(0.1), "{}", conv("fwd+bwd"));
    let table = std::fs::read_dir(&perf)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "md"));
    let table = std::fs::read_to_string(table.unwrap().path()).unwrap();
    assert!(
        table.contains("| activation/relu | fwd | bf16 | 1x2 | True | 0.0 | 2800.0 | 93.3 | - | 1.0 | 100.0 | 0.7 |"),
        "{table}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `kiln run … --dtype f64` computes in f64 and writes f64 `.npy` outputs (an f32 file would
/// lose the precision an f64 check needs); the default f32 run still writes f32.
#[test]
fn run_in_f64_writes_f64_npy() {
    use kiln::equivariant::{Sh, ShNormalization};
    let dir = std::env::temp_dir().join(format!("kiln-run-f64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Components no f32 holds, so an f32 path anywhere shows in the result.
    let vec: Vec<f64> = (0..12).map(|i| (i as f64 * 0.7 - 3.1) * (1.0 + 1e-10)).collect();
    npy::write_f64(&dir.join("vec.npy"), &Array::new(vec![4, 3], vec.clone())).unwrap();
    let d = dir.to_str().unwrap();
    let backend = if kiln::build_info::EMU_COMPILED { "emu" } else { "cpu" };
    let base = ["run", "equivariant/sh", "--dir", d, "--backend", backend, "--param", "lmax=3"];
    let (code, stdout, err) = kiln(&[&base[..], &["--dtype", "f64", "--param", "normalization=0"]].concat());
    assert_eq!(code, 0, "{stdout}{err}");
    let out = dir.join("sh.npy");
    let header = std::fs::read(&out).unwrap();
    assert!(String::from_utf8_lossy(&header[..128]).contains("'descr': '<f8'"), "an f64 file");
    let got = npy::read(&out).unwrap();
    let sh = Sh { lmax: 3, normalization: ShNormalization::Component, normalize: true };
    let want = sh.forward(&vec).unwrap();
    assert_eq!(got.shape, [4, 16]);
    for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-13 + 1e-12 * w.abs(), "sh[{i}]: {g} vs {w}");
    }
    // The default dtype writes f32.
    let (code, stdout, err) = kiln(&[&base[..], &["--param", "normalization=0"]].concat());
    assert_eq!(code, 0, "{stdout}{err}");
    let header = std::fs::read(&out).unwrap();
    assert!(String::from_utf8_lossy(&header[..128]).contains("'descr': '<f4'"), "an f32 file");
    // A family without f64 kernels refuses the dtype by name.
    let (code, _, err) = kiln(&["run", "activation/relu", "--dir", d, "--backend", "cpu", "--dtype", "f64"]);
    assert_ne!(code, 0);
    assert!(err.contains("dtype"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plot_draws_the_record_on_file_one_svg_per_family() {
    let out = std::env::temp_dir().join(format!("kiln-cli-plot-{}", std::process::id()));
    let record = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/latest.json");
    let (code, stdout, stderr) = kiln(&["plot", "--input", record.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for family in ["activation", "attention", "glu", "norm", "padding"] {
        let path = out.join(format!("{family}.svg"));
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(&format!("kiln {family} on NVIDIA")), "{family}");
    }
    std::fs::remove_dir_all(&out).unwrap();
    let (code, _, stderr) = kiln(&["plot", "--input", "/nonexistent/latest.json", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("input") && stderr.contains("/nonexistent/latest.json"), "{stderr}");
}

/// A run past a second with stderr piped (as here, a CI log, a file): no progress bar, the
/// table on stdout as it always was (the bar is for terminals only).
#[test]
fn long_runs_draw_no_progress_bar_when_stderr_is_not_a_terminal() {
    let start = std::time::Instant::now();
    let (code, stdout, stderr) = kiln(&["bench", "--backend", "cpu", "--runs", "1", "norm/rmsnorm"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(start.elapsed() > kiln::progress::SHOW_AFTER, "the run must outlast the bar's delay");
    assert!(stderr.is_empty(), "stderr: {stderr:?}");
    let rows = stdout.lines().filter(|l| l.starts_with("norm/rmsnorm")).count();
    assert!(rows >= 2, "{stdout}");
}

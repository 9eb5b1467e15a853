//! The kiln command line: info, list, check, bench, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln::bench::{BenchRow, copy_bandwidth, time_op};
use kiln::check::{CheckRow, check_shapes};
use kiln::progress::Progress;
use kiln::registry::{BENCH_SEED, Direction, Op, Params, Storage, Tensors, find, registry, select};
use kiln::{DType, Device, Error, Result, Tensor, build_info};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

#[derive(Parser)]
#[command(name = "kiln", version, about = "Fused CUDA kernels with CPU references: list, check, bench and run them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, backends compiled in (cuda, emu), compiled architectures and the device.
    Info,
    /// One line per op and direction: `<family>/<op> <fwd|bwd> <dtypes>`.
    List,
    /// Check ops against their references (cuda, emu) or the references against themselves (cpu).
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Time ops on fixed, named problems (each op's bench cases; one seed): GB/s against the
    /// bytes model, % of the measured copy bandwidth, TFLOP/s against the FLOP model.
    Bench {
        #[command(flatten)]
        common: Common,
        /// Timed runs per configuration (median reported).
        #[arg(long)]
        runs: Option<usize>,
        /// Only the bench cases whose label contains one of these (repeatable; e.g.
        /// `--case "B8xS2048xH16xD128 causal"`); every case when none.
        #[arg(long = "case")]
        cases: Vec<String>,
    },
    /// Sweep the attention kernels' tile variants (kiln.h `kiln_attention_alibi_fwd_variant`,
    /// `kiln_attention_alibi_bwd_variant`): each checked against the reference, then timed on
    /// fixed dense bf16 shapes (16k tokens, D = 128 and 64, causal and not, no bias and ALiBi) in
    /// two rounds, the list forwards then backwards; the fastest passing variant of each case and
    /// direction is marked `*`. First the ceilings: mma.sync, ldmatrix and L2 read bandwidth
    /// (microbenchmarks checked by their checksums).
    Sweep {
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Timed runs per median (on a GPU).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// The small shapes (B = 2 · S = 64, H = 2, two cases per head dim): the emulator's rehearsal.
        #[arg(long)]
        small: bool,
        /// Head dims to sweep (comma-separated; 128 and 64 have variants).
        #[arg(long, value_delimiter = ',', default_values_t = [128usize, 64])]
        head_dim: Vec<usize>,
        /// Directions to sweep (comma-separated: fwd, bwd).
        #[arg(long = "dir", value_delimiter = ',', default_values_t = [String::from("fwd"), String::from("bwd")])]
        directions: Vec<String>,
        /// Also write the rows as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A MODEL of each op's memory traffic, counted on the emulator (no GPU needed): DRAM bytes
    /// against the op's ideal, sectors per warp load/store, shared-memory wavefronts, the
    /// bandwidth-bound time on an H100 and, in a build with `cuda`, the sm_90 occupancy of the
    /// busiest launch and the DRAM bytes it keeps in flight per SM (the latency model). `--backend`
    /// is ignored: it always runs on the emulator.
    Model {
        #[command(flatten)]
        common: Common,
        /// Main-input shape, e.g. `256,1024` (default: each op's CPU bench shape).
        #[arg(long, value_delimiter = ',')]
        shape: Vec<usize>,
        /// Also print every call site (sectors or wavefronts per request, file:line).
        #[arg(long)]
        sites: bool,
    },
    /// Draw the last GPU run on record (perf/latest.json) as one SVG chart per family: each op
    /// in % of copy bandwidth (attention: TFLOP/s) and kiln's time over each peer's.
    Plot {
        /// The record to draw.
        #[arg(long, default_value = "perf/latest.json")]
        input: PathBuf,
        /// Directory receiving `<family>.svg`.
        #[arg(long, default_value = "perf/plots")]
        out: PathBuf,
    },
    /// Run one op on .npy inputs from DIR and write its outputs there as f32 .npy.
    Run {
        /// `<family>/<op>`, as `kiln list` prints it.
        op: String,
        /// Directory holding `<input>.npy` and receiving `<output>.npy`.
        #[arg(long)]
        dir: PathBuf,
        /// Run the backward (inputs include `dy`).
        #[arg(long)]
        bwd: bool,
        /// Run the double backward (ops whose `kiln list` rows name bwd2; inputs include `dout`
        /// and the upstream gradients).
        #[arg(long, conflicts_with = "bwd")]
        bwd2: bool,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Storage dtype the inputs are cast to.
        #[arg(long, default_value = "f32", value_parser = parse_dtype)]
        dtype: DType,
        /// A parameter, `NAME=VALUE` (repeatable): a number (`gate_half` also takes `first` or
        /// `second`, `normalization` `component`, `norm` or `integral`) or, where the op takes
        /// one, a string (`irreps_in1=8x0e+8x1o`, `mode=uvu`).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
}

#[derive(clap::Args)]
struct Common {
    /// Substrings of `<family>/<op>` to select (all ops when none).
    filters: Vec<String>,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Only these dtypes (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_dtype)]
    dtype: Vec<DType>,
    /// RNG seed of check and model (a fresh one, printed, when absent); bench takes none: its
    /// problems are fixed (`kiln::registry::BENCH_SEED`).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// check: only shapes with at most this many elements (quick runs, sanitizers; the
    /// emulator's default is 262144).
    #[arg(long)]
    max_elements: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Backend {
    /// CUDA when compiled in and a device is present, else the emulator when compiled in, else
    /// the CPU references.
    Auto,
    /// The CPU references.
    Cpu,
    /// The CUDA kernels (fails without a device or without the `cuda` feature).
    Cuda,
    /// The same kernels in kiln's CUDA emulator on the CPU, checked for out-of-bounds accesses,
    /// uninitialised reads, races and barrier divergence (needs the `emu` feature; slow).
    Emu,
}

/// `kiln check --backend emu` skips larger check shapes unless `--max-elements` says otherwise:
/// checked emulation runs a few million element accesses per second.
const EMU_CHECK_MAX_ELEMENTS: usize = 1 << 18;

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    DType::parse(s).ok_or_else(|| {
        format!("unknown dtype `{s}`: expected f32, f16, bf16 or f64 (f64: the equivariant family only)")
    })
}

/// `NAME=VALUE`, split; the op's declared kinds decide how VALUE is read (`Params::for_op`).
fn parse_param(s: &str) -> std::result::Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))?;
    Ok((name.to_string(), value.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::List => list(),
        Command::Check { common } => check(&common),
        Command::Bench { common, runs, cases } => bench(&common, runs, &cases),
        Command::Model { common, shape, sites } => model(&common, &shape, sites),
        Command::Sweep { backend, runs, small, head_dim, directions, json } => {
            sweep(backend, runs, small, head_dim, &directions, json)
        }
        Command::Plot { input, out } => plot(&input, &out),
        Command::Run { op, dir, bwd, bwd2, backend, dtype, params } => {
            let direction = match (bwd, bwd2) {
                (_, true) => Direction::Bwd2,
                (true, false) => Direction::Bwd,
                (false, false) => Direction::Fwd,
            };
            run(&op, &dir, direction, backend, dtype, &params)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn plot(input: &std::path::Path, out: &std::path::Path) -> Result<ExitCode> {
    let record = std::fs::read_to_string(input)
        .map_err(|e| Error::InvalidValue { arg: "input", reason: format!("{}: {e}", input.display()) })?;
    for path in kiln::plot::plot_record(&record, out)? {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn device_for(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::Cpu),
        Backend::Cuda if !build_info::CUDA_COMPILED => Err(Error::CudaNotCompiled),
        Backend::Cuda => Device::cuda(0),
        Backend::Emu => Device::emu(),
        // Kernels run wherever they can: a GPU, else the emulator (slow, but the kernels' own
        // sources, checked), else only the references.
        Backend::Auto => Ok(Device::cuda(0)
            .ok()
            .filter(|_| build_info::CUDA_COMPILED)
            .or_else(|| Device::emu().ok())
            .unwrap_or(Device::Cpu)),
    }
}

/// One line saying what `device` runs, printed before results.
fn describe_backend(device: &Device) -> String {
    match device {
        Device::Cuda(_) => format!("backend cuda ({device}): the kernels on the GPU"),
        Device::Emu(emu) => format!(
            "backend emu: the kernels' own sources in kiln's CUDA emulator on the CPU (checked mode {}); \
             timings measure the emulator, not a GPU",
            if emu.checked() { "on" } else { "off" }
        ),
        Device::Cpu => "backend cpu: the f64 CPU references only (build with --features emu to run the kernels on \
                        the emulator, or --features cuda on a GPU machine)"
            .to_string(),
    }
}

fn rng_for(seed: Option<u64>) -> StdRng {
    let seed = seed.unwrap_or_else(rand::random);
    println!("seed {seed} (replay with --seed {seed})");
    StdRng::seed_from_u64(seed)
}

fn info() -> Result<ExitCode> {
    println!("kiln {}", env!("CARGO_PKG_VERSION"));
    if build_info::CUDA_COMPILED {
        println!("cuda: compiled, C ABI version {}", abi_version());
        println!("archs: {}", build_info::CUDA_ARCHS);
        println!("nvcc: {}", build_info::NVCC);
        let kernels = build_info::parse_ptxas_report(build_info::PTXAS_REPORT);
        let worst_regs = kernels.iter().map(|k| k.registers).max().unwrap_or(0);
        let spilling = kernels.iter().filter(|k| k.spill_store_bytes + k.spill_load_bytes + k.stack_bytes > 0).count();
        println!(
            "kernels: {} (kernel, arch) builds, max {worst_regs} registers, {spilling} with stack or spills",
            kernels.len()
        );
    } else {
        println!("cuda: not compiled (build with --features cuda)");
    }
    match Device::emu() {
        Ok(Device::Emu(emu)) => println!(
            "emu: compiled, checked mode {} (KILN_EMU_CHECK=0 turns it off)",
            if emu.checked() { "on" } else { "off" }
        ),
        Ok(_) => unreachable!("Device::emu returns the emulator"),
        Err(_) => println!("emu: not compiled (build with --features emu)"),
    }
    shared_libraries();
    match Device::cuda(0) {
        Ok(Device::Cuda(d)) => {
            let i = d.info()?;
            println!(
                "device: {} (sm_{}{}), {} SMs, {:.1} GiB",
                i.name,
                i.compute_capability.0,
                i.compute_capability.1,
                i.sm_count,
                i.total_memory as f64 / (1u64 << 30) as f64
            );
        }
        Ok(_) => unreachable!("Device::cuda returns a CUDA device"),
        Err(e) => println!("device: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the shared libraries of the C ABI are (build/shared.rs): beside this executable (cargo
/// copies them to `target/<profile>/`; the GPU bundle carries them), else where the build wrote
/// them.
fn shared_libraries() {
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    let libs = [
        ("libkiln.so", "CUDA", build_info::CUDA_COMPILED, option_env!("KILN_SHARED_CUDA_BUILT"), "--features cuda"),
        (
            "libkiln_emu.so",
            "emulated",
            build_info::EMU_COMPILED,
            option_env!("KILN_SHARED_EMU_BUILT"),
            "--features emu",
        ),
    ];
    println!("shared libraries (the C ABI for Python, C, C++; scripts/build-shared.sh):");
    for (name, what, compiled, built, feature) in libs {
        // A build without the feature links no library (a file beside the binary would be another build's).
        let found = beside
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| compiled && p.is_file())
            .or_else(|| built.filter(|b| !b.is_empty()).map(PathBuf::from).filter(|p| p.is_file()));
        match (found, built.filter(|b| compiled && !b.is_empty())) {
            (Some(p), _) => println!("  {name} ({what}): {}", p.display()),
            (None, Some(b)) => {
                println!("  {name} ({what}): not here (built at {b}; the GPU bundle carries libkiln.so)")
            }
            (None, None) => println!("  {name} ({what}): not built (build with {feature})"),
        }
    }
}

#[cfg(feature = "cuda")]
fn abi_version() -> i32 {
    // SAFETY: returns a constant.
    unsafe { kiln::ffi::kiln_version() }
}

#[cfg(not(feature = "cuda"))]
fn abi_version() -> i32 {
    kiln::ffi::KILN_ABI_VERSION as i32
}

fn list() -> Result<ExitCode> {
    for op in registry() {
        let dtypes: Vec<&str> = op.dtypes().iter().map(|d| d.name()).collect();
        for &dir in op.directions() {
            println!("{} {dir} {}", op.full_name(), dtypes.join(","));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn selected(common: &Common) -> Result<Vec<Box<dyn Op>>> {
    let ops = select(&common.filters);
    if ops.is_empty() {
        return Err(Error::UnknownOp(common.filters.join(" ")));
    }
    Ok(ops)
}

fn dtypes(common: &Common, op: &dyn Op) -> Vec<DType> {
    op.dtypes().iter().copied().filter(|d| common.dtype.is_empty() || common.dtype.contains(d)).collect()
}

fn check(common: &Common) -> Result<ExitCode> {
    let device = device_for(common.backend)?;
    println!("{}", describe_backend(&device));
    let mut rng = rng_for(common.seed);
    let mut rows: Vec<CheckRow> = Vec::new();
    println!("{:<24} {:<4} {:<5} {:<44} {:>11} {:>11}  result", "op", "dir", "dtype", "what", "max_err", "tol");
    let ops = selected(common)?;
    let mut progress = Progress::new(ops.len() as u64, "check");
    for op in ops {
        progress.start_step(&op.full_name());
        let new_rows = if !device.runs_kernels() {
            // The host path is the reference: check the reference against itself.
            op.self_checks(&mut rng)
        } else {
            let default_limit = if device.is_emu() { EMU_CHECK_MAX_ELEMENTS } else { usize::MAX };
            let limit = common.max_elements.unwrap_or(default_limit);
            let shapes: Vec<Vec<usize>> =
                op.check_shapes().into_iter().filter(|s| s.iter().product::<usize>() <= limit).collect();
            check_shapes(op.as_ref(), &device, &dtypes(common, op.as_ref()), &shapes, &mut rng)?
        };
        for r in &new_rows {
            let verdict = if r.pass { "PASS" } else { "FAIL" };
            progress.println(&format!(
                "{:<24} {:<4} {:<5} {:<44} {:>11.3e} {:>11.3e}  {verdict}",
                r.op, r.dir, r.dtype, r.what, r.max_err, r.tol
            ));
        }
        rows.extend(new_rows);
        // Written after every op, so a run stopped by a time limit (the GPU session's) still
        // leaves what it checked.
        write_check_json(common.json.as_deref(), &device, &rows)?;
        progress.finish_step();
    }
    progress.finish();
    write_check_json(common.json.as_deref(), &device, &rows)?;
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("check on {device}: {} passed, {failed} failed", rows.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn write_check_json(path: Option<&Path>, device: &Device, rows: &[CheckRow]) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let results: Vec<_> = rows
        .iter()
        .map(|r| json!({"op": r.op, "dir": r.dir, "dtype": r.dtype, "what": r.what, "max_err": finite(r.max_err), "tol": r.tol, "pass": r.pass}))
        .collect();
    write_json(path, &json!({"backend": device.to_string(), "results": results}))
}

fn write_bench_json(path: Option<&Path>, device: &Device, copy: f64, rows: &[BenchRow]) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let results: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({"op": r.op, "dir": r.dir, "dtype": r.dtype.name(), "case": r.case, "shape": r.shape,
                   "variant": r.variant, "median_us": r.median_us, "gbps": r.gbps, "tflops": r.tflops,
                   "pct_of_copy": 100.0 * r.gbps / copy})
        })
        .collect();
    write_json(path, &json!({"device": device.to_string(), "ceilings": {"copy_gbps": copy}, "results": results}))
}

/// JSON has no NaN: a NaN error is written as null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| Error::File { path: path.display().to_string(), reason: e.to_string() })
}

/// `kiln model`: every selected op, direction and dtype once in a traffic window.
fn model(common: &Common, shape: &[usize], sites: bool) -> Result<ExitCode> {
    let device = Device::emu()?;
    let mut rng = rng_for(common.seed);
    println!(
        "MODEL, not a measurement: traffic counted on kiln's CUDA emulator; time bound = DRAM bytes / {:.1} TB/s (H100)",
        kiln::model::H100_COPY_BYTES_PER_S / 1e12
    );
    let line = |c: [&str; 14]| {
        format!(
            "{:<24} {:<4} {:<5} {:<16} {:>6} {:>9} {:>6} {:>8} {:>6} {:>6} {:>8} {:>8} {:>5} {:>8}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13]
        )
    };
    println!(
        "{}",
        line([
            "op", "dir", "dtype", "shape", "launch", "ideal_MB", "ratio", "ld_sec/r", "ld_eff", "st_eff", "smem_wf",
            "smem_cf", "occ", "inflight"
        ])
    );
    let mut rows = Vec::new();
    for op in selected(common)? {
        let shape = if shape.is_empty() { op.bench_shape_cpu() } else { shape.to_vec() };
        for &dir in op.directions() {
            let problem = op.random_problem(dir, &shape, &mut rng);
            for dtype in dtypes(common, op.as_ref()) {
                let r = kiln::model::traffic(op.as_ref(), dir, dtype, &problem, &device)?;
                println!(
                    "{}",
                    line([
                        &r.op,
                        &r.dir,
                        r.dtype.name(),
                        &format!("{:?}", r.shape),
                        &r.launches.to_string(),
                        &format!("{:.2}", r.ideal_bytes as f64 / 1e6),
                        &format!("{:.3}", r.traffic_ratio),
                        &format!("{:.2}", r.load_sectors_per_request),
                        &format!("{:.2}", r.load_efficiency),
                        &format!("{:.2}", r.store_efficiency),
                        &format!("{:.2}", r.shared_wavefronts_per_request),
                        &r.shared_worst_conflict.to_string(),
                        &r.occupancy.map_or("-".to_string(), |o| format!("{:.0}%", 100.0 * o)),
                        &r.inflight_kib_per_sm.map_or("-".to_string(), |k| format!("{k:.1}K")),
                    ])
                );
                if sites {
                    print!("{}", kiln::model::last_sites());
                }
                rows.push(r);
            }
        }
    }
    if let Some(path) = &common.json {
        let results: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"op": r.op, "dir": r.dir, "dtype": r.dtype.name(), "shape": r.shape, "launches": r.launches,
                       "ideal_bytes": r.ideal_bytes, "dram_bytes": r.dram_bytes, "traffic_ratio": r.traffic_ratio,
                       "load_sectors_per_request": r.load_sectors_per_request, "load_efficiency": r.load_efficiency,
                       "load_bytes_per_request": r.load_bytes_per_request, "load_requests": r.load_requests,
                       "store_requests": r.store_requests, "shared_requests": r.shared_requests,
                       "store_sectors_per_request": r.store_sectors_per_request, "store_efficiency": r.store_efficiency,
                       "shared_wavefronts_per_request": r.shared_wavefronts_per_request,
                       "shared_worst_wavefronts": r.shared_worst_wavefronts,
                       "shared_conflicts_per_request": r.shared_conflicts_per_request,
                       "shared_worst_conflict": r.shared_worst_conflict, "h100_bound_us": r.h100_bound_us,
                       "sm90_occupancy": r.occupancy,
                       "inflight_bytes_per_warp": r.inflight_bytes_per_warp,
                       "inflight_kib_per_sm": r.inflight_kib_per_sm, "read_share": r.read_share,
                       "inflight_target_kib": r.inflight_target_kib})
            })
            .collect();
        let label = "model: memory traffic counted on kiln's CUDA emulator (not a GPU measurement); \
                     h100_bound_us = dram_bytes / 3.0 TB/s; sm90_occupancy = theoretical occupancy of the \
                     launch moving the most bytes, from the sm_90a ptxas report (null without a cuda build); \
                     inflight_kib_per_sm = the latency model's DRAM bytes in flight per SM of that launch (read \
                     bytes x 700 ns / warp lifetimes on the emulated timeline, x resident warps; ALU time not \
                     modelled, an upper bound); inflight_target_kib = what kiln holds that launch to: 32 KiB \
                     scaled down by min(1, 2 x read_share), its DRAM reads over reads and writes";
        write_json(path, &json!({"label": label, "results": results}))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of the bench table: the header and every row share these column widths (text
/// left-aligned, figures right-aligned).
fn bench_line([op, dir, dtype, case, variant, median_us, gbps, pct, tflops]: [&str; 9]) -> String {
    format!("{op:<24} {dir:<4} {dtype:<5} {case:<36} {variant:<10} {median_us:>10} {gbps:>9} {pct:>7} {tflops:>8}")
}

fn sweep(
    backend: Backend,
    runs: usize,
    small: bool,
    head_dims: Vec<usize>,
    directions: &[String],
    json: Option<PathBuf>,
) -> Result<ExitCode> {
    let mut dirs = Vec::new();
    for d in directions {
        dirs.push(match d.as_str() {
            "fwd" => Direction::Fwd,
            "bwd" => Direction::Bwd,
            other => {
                let reason = format!("`{other}`: expected fwd or bwd");
                return Err(Error::InvalidValue { arg: "dir", reason });
            }
        });
    }
    for &dir in &dirs {
        if let Some(d) = head_dims.iter().find(|&&d| kiln::sweep::variant_names(dir, d).is_empty()) {
            let reason = format!("{d}: only head dims 128 and 64 have tile variants");
            return Err(Error::InvalidValue { arg: "head-dim", reason });
        }
    }
    let device = device_for(backend)?;
    if matches!(device, Device::Cpu) {
        let reason = "the sweep times kernels: it needs --backend cuda or emu".to_string();
        return Err(Error::InvalidValue { arg: "backend", reason });
    }
    println!("{}", describe_backend(&device));
    // The ceilings first: mma.sync, ldmatrix and L2 bandwidth, each checked by its checksum.
    let micro = kiln::sweep::microbenchmarks(&device, small, runs)?;
    for m in &micro {
        println!("{:<16} {:>10.1} {:<8} checksum {}", m.name, m.value, m.unit, if m.pass { "PASS" } else { "FAIL" });
    }
    let options = kiln::sweep::SweepOptions { small, runs, head_dims, directions: dirs };
    println!(
        "{:<36} {:<4} {:>7} {:<27} {:>5} {:>10} {:>10} {:>8}",
        "case", "dir", "variant", "name", "gate", "round1_us", "round2_us", "TFLOP/s"
    );
    let micro_json: Vec<serde_json::Value> =
        micro.iter().map(|m| json!({ "name": m.name, "value": m.value, "unit": m.unit, "pass": m.pass })).collect();
    // Each case's rows as it finishes (and the JSON rewritten with every row so far).
    let mut printed = 0;
    let rows = kiln::sweep::sweep_attention(&device, &options, |rows| {
        for r in &rows[printed..] {
            println!(
                "{:<36} {:<4} {:>7} {:<27} {:>5} {:>10.1} {:>10.1} {:>8.1}{}",
                r.case,
                r.direction,
                r.variant,
                r.name,
                if r.pass { "PASS" } else { "FAIL" },
                r.median_us[0],
                r.median_us[1],
                r.tflops,
                if r.best { " *" } else { "" }
            );
        }
        printed = rows.len();
        let Some(path) = &json else { return Ok(()) };
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "case": r.case, "dir": r.direction.to_string(), "head_dim": r.head_dim,
                    "variant": r.variant, "name": r.name,
                    "pass": r.pass, "median_us": [r.median_us[0], r.median_us[1]], "tflops": r.tflops,
                    "best": r.best,
                })
            })
            .collect();
        write_json(path, &json!({ "device": device.to_string(), "runs": runs, "micro": micro_json, "rows": rows }))
    })?;
    let failed = rows.iter().filter(|r| !r.pass).count() + micro.iter().filter(|m| !m.pass).count();
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn bench(common: &Common, runs: Option<usize>, case_filters: &[String]) -> Result<ExitCode> {
    if common.seed.is_some() {
        let reason = format!("kiln bench times fixed problems (seed {BENCH_SEED:#x}); --seed is for check and model");
        return Err(Error::InvalidValue { arg: "seed", reason });
    }
    let device = device_for(common.backend)?;
    let ops = selected(common)?;
    let wanted = |label: &str| case_filters.is_empty() || case_filters.iter().any(|f| label.contains(f.as_str()));
    if !ops.iter().any(|op| op.bench_cases(device.is_cuda()).iter().any(|c| wanted(&c.label))) {
        let reason = format!("no bench case of the selected ops has a label containing any of {case_filters:?}");
        return Err(Error::InvalidValue { arg: "case", reason });
    }
    let (runs, copy_bytes) = match device {
        Device::Cpu | Device::Emu(_) => (runs.unwrap_or(5), 64 << 20),
        Device::Cuda(_) => (runs.unwrap_or(50), 1 << 30),
    };
    println!("{}", describe_backend(&device));
    let copy = copy_bandwidth(&device, copy_bytes, runs)?;
    println!("device {device}; copy bandwidth {copy:.1} GB/s ({} MiB copied; the ceiling below)", copy_bytes >> 20);
    println!("every problem is a fixed, named case (the `case` column) built from seed {BENCH_SEED:#x}");
    println!("{}", bench_line(["op", "dir", "dtype", "case", "variant", "median_us", "GB/s", "%copy", "TFLOP/s"]));
    let mut rows: Vec<BenchRow> = Vec::new();
    let steps: usize = ops
        .iter()
        .map(|op| op.bench_cases(device.is_cuda()).iter().filter(|c| wanted(&c.label)).count() * op.directions().len())
        .sum();
    let mut progress = Progress::new(steps as u64, "bench");
    for op in ops {
        // The emulator takes the CPU's small cases: it runs some 20-40 M elements/s unchecked.
        for case in op.bench_cases(device.is_cuda()).into_iter().filter(|c| wanted(&c.label)) {
            for &dir in op.directions() {
                progress.start_step(&format!("{} {dir} {}", op.full_name(), case.label));
                // One problem per case and direction, uploaded in each dtype: generating 2^26
                // random inputs costs more than timing them.
                let problem = case.problem(dir);
                for dtype in dtypes(common, op.as_ref()) {
                    let has_reduction =
                        op.reductions_are_optional() && op.outputs(dir, &problem)?.iter().any(|(o, _)| o.reduction);
                    let variants: &[bool] = if has_reduction { &[true, false] } else { &[true] };
                    for &with in variants {
                        let r = time_op(op.as_ref(), dir, dtype, &case, &problem, &device, runs, with)?;
                        progress.println(&bench_line([
                            &r.op,
                            &r.dir,
                            r.dtype.name(),
                            &r.case,
                            &r.variant,
                            &format!("{:.1}", r.median_us),
                            &format!("{:.1}", r.gbps),
                            &format!("{:.1}%", 100.0 * r.gbps / copy),
                            &format!("{:.2}", r.tflops),
                        ]));
                        rows.push(r);
                    }
                }
                // After every case and direction, as `check` does: a stopped run keeps its rows.
                write_bench_json(common.json.as_deref(), &device, copy, &rows)?;
                progress.finish_step();
            }
        }
    }
    progress.finish();
    write_bench_json(common.json.as_deref(), &device, copy, &rows)?;
    // Without a GPU the table above times the emulator or the references: the hardware's
    // figures, from the last GPU run on record, follow.
    if !device.is_cuda() {
        if let Some(lines) = kiln::perf_record::last_gpu_record() {
            println!();
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(
    name: &str,
    dir: &Path,
    direction: Direction,
    backend: Backend,
    dtype: DType,
    params: &[(String, String)],
) -> Result<ExitCode> {
    let op = find(name)?;
    if !op.directions().contains(&direction) {
        return Err(kiln::registry::no_direction(op.as_ref(), direction));
    }
    if !op.dtypes().contains(&dtype) {
        return Err(Error::DType { arg: "dtype", expected: format!("{:?}", op.dtypes()), got: dtype });
    }
    let values = Params::for_op(op.as_ref(), params)?;
    let device = device_for(backend)?;
    let mut problem = kiln::registry::Problem { params: values, ..Default::default() };
    for spec in op.inputs(direction) {
        let path = dir.join(format!("{}.npy", spec.name));
        if spec.optional && !path.exists() {
            continue;
        }
        // Indices may come as i64 (numpy's default integer): narrowed to i32 with a range check.
        let array = match spec.storage {
            Storage::I32 => kiln::npy::read_indices(&path, spec.name)?,
            _ => kiln::npy::read(&path)?,
        };
        problem.inputs.insert(spec.name.into(), array);
    }
    let inputs = problem.tensors(op.as_ref(), direction, dtype, &device)?;
    let outs = op.outputs(direction, &problem)?;
    let mut outputs = Tensors::new();
    for (spec, shape) in &outs {
        outputs.insert(spec.name.into(), Tensor::zeros(shape, spec.storage.dtype(dtype), &device)?);
    }
    op.run(direction, &inputs, &problem.params, &mut outputs)?;
    for (spec, _) in &outs {
        let t = &outputs[spec.name];
        let path = dir.join(format!("{}.npy", spec.name));
        let array = kiln::registry::Array::new(t.shape().to_vec(), t.to_f64_vec()?);
        kiln::npy::write_output(&path, &array, t.dtype())?;
        println!("wrote {} {:?}", path.display(), t.shape());
    }
    Ok(ExitCode::SUCCESS)
}

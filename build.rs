//! Build script: with the `cuda` feature, compiles `kernels/**/*.cu` with nvcc into a
//! static library linked with the static CUDA runtime (so binaries need only libcuda at
//! run time) and keeps the `ptxas -v` report for tests and `kiln info`.
//!
//! nvcc runs directly rather than through `cc::Build::file`, because cc turns compiler
//! stderr into cargo warnings and the ptxas report must be captured whole; `cc` still
//! archives the objects and picks the archiver.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/emu.rs"]
mod emu;
#[path = "build/shared.rs"]
mod shared;

/// SASS for A100 (sm_80) and H100 (sm_90a: wgmma/TMA-capable), plus compute_80 PTX so
/// newer GPUs can JIT. PTX newer than the driver fails to JIT: the toolchain is pinned.
const DEFAULT_ARCHS: &str = "sm_80,sm_90a,compute_80";

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "KILN_CUDA_ARCHS",
        "DOCS_RS",
        "RUSTC_WORKSPACE_WRAPPER",
        "KILN_DENY_WARNINGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if env::var_os("CARGO_FEATURE_EMU").is_some() {
        emu::build(&out);
    }
    let report_path = out.join("ptxas-report.txt");
    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some() && !type_check_only();
    if !cuda {
        fs::write(&report_path, "").expect("write ptxas report");
        println!("cargo:rustc-env=KILN_CUDA_ARCHS_BUILT=");
        println!("cargo:rustc-env=KILN_NVCC_BUILT=");
        return;
    }

    let nvcc = find_nvcc().unwrap_or_else(|| {
        eprintln!(
            "error: the `cuda` feature needs nvcc, and none was found in $NVCC, $CUDA_HOME, $CUDA_PATH, \
             $PATH or the project-local toolchain. Install the pinned CUDA 13.0 compiler with \
             `scripts/install-cuda.sh` (or set NVCC=/path/to/nvcc)."
        );
        std::process::exit(1);
    });
    let archs = env::var("KILN_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
    let gencode = gencode_flags(&archs);
    let version = Command::new(&nvcc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().to_string())
        .unwrap_or_default();

    let mut sources = Vec::new();
    collect_cu(Path::new("kernels"), &mut sources);
    // kernels/emu/ holds the emulator and its planted-bug kernels: emulator builds only.
    sources.retain(|p| !p.starts_with("kernels/emu"));
    sources.sort();
    // One nvcc per translation unit, in parallel (DESIGN.md: a TU per family keeps builds
    // parallel); results are collected in source order so the report is stable.
    let results: Vec<(PathBuf, std::process::Output)> = std::thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .iter()
            .map(|src| {
                println!("cargo:rerun-if-changed={}", src.display());
                let obj = out.join(src.with_extension("o").file_name().expect("a file name"));
                let (nvcc, gencode) = (&nvcc, &gencode);
                scope.spawn(move || {
                    let output = Command::new(nvcc)
                        .args(["-std=c++17", "-O3", "-Xptxas", "-v", "-Xcompiler", "-fPIC", "-Xcompiler", "-Wall"])
                        .args(["-Ikernels/include", "-Ikernels"])
                        .args(gencode)
                        .arg("-c")
                        .arg(src)
                        .arg("-o")
                        .arg(&obj)
                        .output()
                        .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
                    (obj, output)
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().expect("nvcc thread")).collect()
    });
    let mut report = String::new();
    let mut objects = Vec::new();
    for (src, (obj, output)) in sources.iter().zip(results) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        report.push_str(&format!("# {}\n{stderr}", src.display()));
        if !output.status.success() {
            eprintln!("{stderr}");
            eprintln!("error: nvcc failed on {}", src.display());
            std::process::exit(1);
        }
        report_warnings(&stderr, src, "nvcc");
        objects.push(obj);
    }
    fs::write(&report_path, &report).expect("write ptxas report");

    cc::Build::new().objects(&objects).cargo_warnings(false).compile("kiln_kernels");
    let lib_dir = cuda_lib_dir(&nvcc);
    shared::link_cuda(&out, &objects, &lib_dir);
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=static=cudart_static");
    for lib in ["stdc++", "dl", "rt", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-env=KILN_CUDA_ARCHS_BUILT={}", gencode.join(" "));
    println!("cargo:rustc-env=KILN_NVCC_BUILT={} ({version})", nvcc.display());
}

/// True where nothing will be linked, so the kernels need not be compiled: docs.rs, and clippy
/// (cargo runs it as the workspace's rustc wrapper, `clippy-driver`, and only type-checks). The
/// generated Rust (the emulated library's bindings) and the build's environment are still
/// written. Without this, `cargo clippy --all-features` recompiled every kernel with nvcc and
/// the host compiler (~2 minutes of CI on 2 cores), since check builds keep their own copy of
/// the build script's output.
/// Passes a kernel compiler's warnings on as cargo warnings; with KILN_DENY_WARNINGS set (CI's
/// scripts/test.sh) a warning fails the build instead, so a fresh clone's first build stays
/// silent (issue 30; the last one was nvcc's #177-D on attention.cu's key position, unused
/// outside geometric ALiBi).
pub(crate) fn report_warnings(stderr: &str, src: &Path, compiler: &str) {
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    for line in &warnings {
        println!("cargo:warning={line}");
    }
    if !warnings.is_empty() && env::var_os("KILN_DENY_WARNINGS").is_some() {
        eprintln!("{stderr}");
        eprintln!("error: {compiler} warned on {} and KILN_DENY_WARNINGS is set", src.display());
        std::process::exit(1);
    }
}

pub(crate) fn type_check_only() -> bool {
    let clippy = env::var_os("RUSTC_WORKSPACE_WRAPPER").is_some_and(|wrapper| {
        Path::new(&wrapper).file_stem().is_some_and(|stem| stem.to_string_lossy().starts_with("clippy-driver"))
    });
    clippy || env::var_os("DOCS_RS").is_some()
}

/// `sm_80,sm_90a,compute_80` (or `80,90a`) → nvcc `-gencode` flags: `sm_*` and bare
/// numbers are SASS, `compute_*` is PTX.
fn gencode_flags(archs: &str) -> Vec<String> {
    archs
        .split([',', ';', ' '])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            if let Some(v) = a.strip_prefix("compute_") {
                format!("-gencode=arch=compute_{v},code=compute_{v}")
            } else {
                let v = a.strip_prefix("sm_").unwrap_or(a);
                format!("-gencode=arch=compute_{v},code=sm_{v}")
            }
        })
        .collect()
}

pub(crate) fn collect_cu(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_cu(&p, out);
        } else if p.extension().is_some_and(|x| x == "cu") {
            out.push(p);
        }
    }
}

/// nvcc from $NVCC, $CUDA_HOME/$CUDA_PATH, $PATH, then the toolchain that
/// scripts/install-cuda.sh puts in `.cuda/` (no nvidia-smi needed).
pub(crate) fn find_nvcc() -> Option<PathBuf> {
    let exists = |p: PathBuf| p.is_file().then_some(p);
    if let Some(p) = env::var_os("NVCC") {
        return exists(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            if let Some(p) = exists(PathBuf::from(home).join("bin/nvcc")) {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        if let Some(p) = env::split_paths(&path).find_map(|d| exists(d.join("nvcc"))) {
            return Some(p);
        }
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    exists(root.join(".cuda/nvidia/cu13/bin/nvcc"))
}

/// The directory holding libcudart_static.a next to this nvcc (lib64 in a toolkit, lib in
/// the pip wheels).
fn cuda_lib_dir(nvcc: &Path) -> PathBuf {
    let root = nvcc.parent().and_then(Path::parent).unwrap_or(Path::new("/usr/local/cuda"));
    ["lib64", "lib", "targets/x86_64-linux/lib"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.join("libcudart_static.a").is_file())
        .unwrap_or_else(|| root.join("lib64"))
}

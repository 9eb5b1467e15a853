//! The shared libraries of the C ABI, for frameworks that load kiln at run time (the Python
//! package `python/kiln`, C and C++ programs): linked from the objects the static builds already
//! compiled, so they cost one link each.
//!
//! - `libkiln.so` (feature `cuda`): the nvcc objects + the static CUDA runtime (hidden), so it
//!   needs only the driver, like the Rust binaries, and cannot clash with a framework's own
//!   libcudart.
//! - `libkiln_emu.so` (feature `emu`): the emulated objects. They were compiled with the
//!   `kiln_emu_*` renaming prelude (so that both libraries link into one Rust binary); here the
//!   objects are first combined into one relocatable object (`ld -r`) whose kiln.h functions are
//!   renamed BACK to their header names (`objcopy --redefine-syms`), so the same header and the
//!   same ctypes code drive both libraries. It also exports the functions of
//!   `kernels/emu/include/kiln_emu.h` (emulated memory, checked mode, the last finding), which a
//!   caller needs to stage data into checked emulated memory and to explain a failed launch.
//!
//! A version script exports exactly those functions; everything else (C++ helpers, the CUDA
//! runtime, the emulator's `__tsan_*` hooks) is local. `tests/python/test_shared.py` compares
//! `nm -D` with the headers. Each library is written to `$OUT_DIR` and copied beside the crate's
//! binaries (`target/<profile>/`), where `scripts/build-shared.sh` and `kiln info` find it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `kiln_*` functions a header declares (the same scan the emulated build renames with).
fn header_functions(header: &str) -> Vec<String> {
    let text = fs::read_to_string(header).unwrap_or_else(|e| panic!("read {header}: {e}"));
    crate::emu::abi_function_names(&text)
}

fn version_script(out: &Path, name: &str, exported: &[String]) -> PathBuf {
    let mut s = String::from("{\n  global:\n");
    for f in exported {
        s.push_str(&format!("    {f};\n"));
    }
    s.push_str("  local:\n    *;\n};\n");
    let path = out.join(format!("{name}.map"));
    fs::write(&path, s).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn run(cmd: &mut Command, what: &str) {
    let output = cmd.output().unwrap_or_else(|e| panic!("could not run {what}: {e}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        eprintln!("error: {what} failed while linking kiln's shared library ({cmd:?})");
        std::process::exit(1);
    }
}

/// `target/<profile>/` from `$OUT_DIR` (`target/<profile>/build/kiln-<hash>/out`), where cargo
/// puts the crate's binaries.
fn profile_dir(out: &Path) -> Option<PathBuf> {
    out.ancestors().nth(3).map(Path::to_path_buf).filter(|p| p.is_dir())
}

/// Links `lib_name` (e.g. `libkiln.so`) from `inputs` with `libs`, exporting `exported`; returns
/// its path in `$OUT_DIR` and tells the crate where it is through `env_var`.
fn link(
    out: &Path,
    cxx: &Path,
    lib_name: &str,
    inputs: &[PathBuf],
    libs: &[String],
    exported: &[String],
    env_var: &str,
) {
    let map = version_script(out, lib_name, exported);
    let lib = out.join(lib_name);
    let mut cmd = Command::new(cxx);
    cmd.arg("-shared")
        .arg("-o")
        .arg(&lib)
        .args(inputs)
        .arg(format!("-Wl,--version-script={}", map.display()))
        .arg(format!("-Wl,-soname,{lib_name}"))
        // Every symbol resolved at link time: a missing one fails here, not in a user's dlopen.
        .arg("-Wl,-z,defs")
        .args(libs);
    run(&mut cmd, &format!("linking {lib_name}"));
    if let Some(dir) = profile_dir(out) {
        let dest = dir.join(lib_name);
        // Copy through a temporary file and rename, so a process that has the old copy loaded
        // keeps a consistent file.
        let tmp = dir.join(format!(".{lib_name}.tmp"));
        if fs::copy(&lib, &tmp).is_ok() {
            let _ = fs::rename(&tmp, &dest);
        }
    }
    println!("cargo:rustc-env={env_var}={}", lib.display());
}

/// `libkiln.so` from the nvcc objects, linked with the static CUDA runtime in `cuda_lib_dir`.
pub fn link_cuda(out: &Path, objects: &[PathBuf], cuda_lib_dir: &Path) {
    let cxx = cc::Build::new().cpp(true).get_compiler().path().to_path_buf();
    let exported = header_functions("kernels/include/kiln.h");
    let libs: Vec<String> = vec![
        format!("-L{}", cuda_lib_dir.display()),
        "-l:libcudart_static.a".into(),
        "-ldl".into(),
        "-lrt".into(),
        "-lpthread".into(),
    ];
    link(out, &cxx, "libkiln.so", objects, &libs, &exported, "KILN_SHARED_CUDA_BUILT");
}

/// `libkiln_emu.so` from the emulated objects, with kiln.h's functions under their header names;
/// `extra_libs` (e.g. `gcov` for a coverage build) are linked in too.
pub fn link_emu(out: &Path, cxx: &Path, objects: &[PathBuf], extra_libs: &[&str]) {
    let abi = header_functions("kernels/include/kiln.h");
    let emu_api = header_functions("kernels/emu/include/kiln_emu.h");
    let combined = out.join("kiln_emu_shared.o");
    run(
        Command::new(cxx).args(["-r", "-nostdlib", "-o"]).arg(&combined).args(objects),
        "combining the emulated objects (-r)",
    );
    let mut renames = String::new();
    for f in &abi {
        renames.push_str(&format!("{} {f}\n", crate::emu::emu_name(f)));
    }
    let rename_file = out.join("kiln_emu_shared.redefine");
    fs::write(&rename_file, renames).expect("write the rename list");
    let objcopy = std::env::var("OBJCOPY").unwrap_or_else(|_| "objcopy".to_string());
    run(
        Command::new(&objcopy).arg(format!("--redefine-syms={}", rename_file.display())).arg(&combined),
        "objcopy --redefine-syms",
    );
    let exported: Vec<String> = abi.iter().chain(emu_api.iter()).cloned().collect();
    let libs: Vec<String> = extra_libs
        .iter()
        .map(|l| format!("-l{l}"))
        .chain(["-lstdc++".into(), "-lpthread".into(), "-ldl".into()])
        .collect();
    link(out, cxx, "libkiln_emu.so", &[combined], &libs, &exported, "KILN_SHARED_EMU_BUILT");
}

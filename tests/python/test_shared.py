"""The shared libraries export exactly the headers' functions, and a C (and C++) program compiled
against kiln.h links and runs on the emulated library."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, cuda_library

sys.path.insert(0, str(ROOT / "scripts"))


def header_functions(header):
    import importlib.util

    spec = importlib.util.spec_from_file_location("python_abi", ROOT / "scripts/python-abi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return set(mod.functions(header))


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def emu_library():
    return pathlib.Path(os.environ["KILN_LIBRARY"])


def test_python_abi_is_generated_from_the_headers():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/python-abi.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_emulated_library_exports_exactly_the_headers():
    want = header_functions("kernels/include/kiln.h") | header_functions("kernels/emu/include/kiln_emu.h")
    assert len(want) > 60
    got = exported(emu_library())
    assert got == want, f"missing {sorted(want - got)}, extra {sorted(got - want)}"


def test_cuda_library_exports_exactly_kiln_h():
    lib = cuda_library()
    if lib is None:
        pytest.skip("libkiln.so not built (cargo build --features cuda)")
    want = header_functions("kernels/include/kiln.h")
    got = exported(lib)
    assert got == want, f"missing {sorted(want - got)}, extra {sorted(got - want)}"
    # The static CUDA runtime is inside and hidden: only the driver is needed at run time.
    needed = subprocess.run(["readelf", "-d", str(lib)], check=True, capture_output=True, text=True).stdout
    assert "libcudart" not in needed


@pytest.mark.parametrize("lang", ["c", "c++"])
def test_c_program_links_and_runs_on_the_emulated_library(tmp_path, lang):
    compiler = shutil.which("cc" if lang == "c" else "c++")
    if compiler is None:
        pytest.fail(f"no {lang} compiler on PATH")
    lib = emu_library()
    exe = tmp_path / "kiln_example"
    std = ["-std=c11"] if lang == "c" else ["-x", "c++", "-std=c++17"]
    cmd = [compiler, *std, "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'kernels/include'}",
           str(ROOT / "examples/c/kiln_example.c"), f"-L{lib.parent}", "-l:" + lib.name,
           f"-Wl,-rpath,{lib.parent}", "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kiln_example: 8 of 8 checks passed" in r.stdout

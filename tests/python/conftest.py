"""Tests of the shared libraries and the Python package (scripts/test.sh runs them; no GPU needed).

The emulated library is taken from KILN_LIBRARY, else the newest target/{release,debug}/
libkiln_emu.so, else beside the package; the package from python/ (or an installed copy).
"""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))


def _newest(name):
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    found = [p for p in (target / "release" / name, target / "debug" / name) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def cuda_library():
    """libkiln.so: $KILN_CUDA_LIBRARY (scripts/test.sh names the one its cargo test built), else
    beside the emulated library, else the newest cargo build of it (or None)."""
    if os.environ.get("KILN_CUDA_LIBRARY"):
        return pathlib.Path(os.environ["KILN_CUDA_LIBRARY"])
    beside = pathlib.Path(os.environ["KILN_LIBRARY"]).parent / "libkiln.so"
    return beside if beside.is_file() else _newest("libkiln.so")


if not os.environ.get("KILN_LIBRARY"):
    lib = _newest("libkiln_emu.so")
    if lib is not None:
        os.environ["KILN_LIBRARY"] = str(lib)

"""Finding and loading kiln's shared libraries, and turning status codes into exceptions.

Two libraries export the same C ABI (kernels/include/kiln.h):
- ``libkiln.so``: the CUDA build; pointers are device pointers (torch CUDA tensors);
- ``libkiln_emu.so``: the emulated build (kiln's CUDA emulator, kernels/emu/); pointers are host
  pointers, and it also exports kiln_emu.h (emulated memory, checked mode, the last finding).

Where they are looked for, first hit wins:
1. ``KILN_LIBRARY``: a path to either library, or to a folder holding them; the other library
   is looked for beside the named one. When it is set, nowhere else;
2. otherwise beside this package (``scripts/build-shared.sh`` copies them there).
"""

import ctypes
import os
import pathlib
import threading

from . import _abi

NAMES = {"cuda": "libkiln.so", "emu": "libkiln_emu.so"}
_CTYPES = {
    "i32": ctypes.c_int32,
    "i64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
    "usize": ctypes.c_size_t,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
    "ptr": ctypes.c_void_p,
    "str": ctypes.c_char_p,
    None: None,
}
_STATUS_NAMES = {v: k for k, v in _abi.CONSTANTS.items() if k.startswith("KILN_ERROR_") or k == "KILN_SUCCESS"}
_DATA_NAMES = {v: k for k, v in _abi.CONSTANTS.items() if k.startswith("KILN_DATA_")}

_loaded = {}
_lock = threading.Lock()


class KilnError(RuntimeError):
    """A kiln launcher failed. ``status`` is the kiln_status code, ``op`` the Python call."""

    def __init__(self, message, status=None, op=None):
        super().__init__(message)
        self.status = status
        self.op = op


class KilnArgumentError(KilnError, ValueError):
    """The C ABI rejected an argument (a size, a scalar parameter, an alignment)."""


class LibraryNotFound(KilnError, OSError):
    """No shared library of the requested kind was found (see ``library()``)."""


def _is_emulated(lib):
    return hasattr(lib, "kiln_emu_malloc")


def _candidates(kind):
    name = NAMES[kind]
    env = os.environ.get("KILN_LIBRARY")
    if env:
        p = pathlib.Path(env)
        if p.is_dir():
            yield p / name
        else:
            yield p
            yield p.parent / name
        return  # an explicit path is authoritative: a typo must not silently load another copy
    yield pathlib.Path(__file__).resolve().parent / name


def _bind(lib, table):
    for fname, (ret, params) in table.items():
        try:
            f = getattr(lib, fname)
        except AttributeError:
            continue
        f.restype = _CTYPES[ret]
        f.argtypes = [_CTYPES[t] for t, _ in params]


def library(kind="emu"):
    """The loaded ``ctypes.CDLL`` of ``kind`` ("cuda" or "emu"), loaded once per process.

    Raises ``LibraryNotFound`` with the places looked at when there is none.
    """
    if kind not in NAMES:
        raise ValueError(f"kind must be 'cuda' or 'emu', got {kind!r}")
    with _lock:
        if kind in _loaded:
            return _loaded[kind]
        tried = []
        for path in _candidates(kind):
            if not path.is_file() or str(path) in tried:
                tried.append(str(path))
                continue
            tried.append(str(path))
            lib = ctypes.CDLL(str(path))
            if _is_emulated(lib) != (kind == "emu"):
                continue
            _bind(lib, _abi.FUNCTIONS)
            if kind == "emu":
                _bind(lib, _abi.EMU_FUNCTIONS)
            version = lib.kiln_version()
            if version != _abi.ABI_VERSION:
                raise KilnError(
                    f"{path} implements C ABI version {version}, this package speaks {_abi.ABI_VERSION}: "
                    "rebuild the library (scripts/build-shared.sh) or reinstall the package"
                )
            lib.kiln_path = str(path)
            _loaded[kind] = lib
            return lib
        what = "the CUDA library" if kind == "cuda" else "the emulated library"
        raise LibraryNotFound(
            f"kiln: {what} ({NAMES[kind]}) was not found; looked at: {', '.join(tried) or 'nothing'}. "
            "Build it with scripts/build-shared.sh, or set KILN_LIBRARY to its path."
        )


def has_function(name, kind="emu"):
    """Whether the C ABI this package was generated from declares ``name`` (e.g. a new op)."""
    return name in _abi.FUNCTIONS


def status_name(status):
    return _STATUS_NAMES.get(status, f"status {status}")


def data_status_name(code):
    return _DATA_NAMES.get(code, f"data status {code}")


def check(lib, status, op):
    """Raises the exception a non-zero kiln_status stands for."""
    if status == 0:
        return
    text = lib.kiln_status_string(status).decode()
    name = status_name(status)
    if status in (_abi.CONSTANTS["KILN_ERROR_CUDA"], _abi.CONSTANTS["KILN_ERROR_CUDA_PENDING"]):
        msg = f"{op}: {text} ({name}, cudaError_t {lib.kiln_last_cuda_error()})"
        if _is_emulated(lib):
            finding = lib.kiln_emu_last_finding().decode()
            if finding:
                msg += f"\n{finding}"
        raise KilnError(msg, status, op)
    raise KilnArgumentError(f"{op}: {text} ({name})", status, op)

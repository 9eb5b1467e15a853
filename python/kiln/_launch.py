"""One call of the C ABI on the arrays a Python caller holds.

``Launch(op, x)`` looks at the first tensor argument and picks the library:
- a torch CUDA tensor: ``libkiln.so``, pointers are ``data_ptr()``, the launch goes on the
  tensor's device and its current torch stream, outputs are new CUDA tensors;
- a numpy array or a torch CPU tensor: ``libkiln_emu.so``. Every input is staged into emulated
  device memory (``kiln_emu_malloc``: redzones and a shadow), outputs are emulated buffers that
  nothing has written, and results are copied back into new arrays of the caller's kind. So a
  kernel that reads out of bounds, reads what it never wrote or races fails here with the
  emulator's finding (checked mode, on by default; ``KILN_EMU_CHECK=0`` turns it off), exactly as
  in kiln's own tests.

Every argument is checked before anything is launched: its kind and device (``TypeError``), dtype
(``TypeError``), contiguity and shape (``ValueError``), each message naming the op and argument.
"""

import ctypes
import math

import numpy as np

from . import _abi, _lib

try:  # torch is optional: the package works with numpy alone.
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

C = _abi.CONSTANTS
F32, F16, BF16, I32, U8 = (C[f"KILN_DTYPE_{n}"] for n in ("F32", "F16", "BF16", "I32", "U8"))
FLOAT = (F32, F16, BF16)
DTYPE_NAMES = {F32: "float32", F16: "float16", BF16: "bfloat16", I32: "int32", U8: "uint8/bool"}
ITEMSIZE = {F32: 4, F16: 2, BF16: 2, I32: 4, U8: 1}

_NUMPY = {np.dtype(np.float32): F32, np.dtype(np.float16): F16, np.dtype(np.int32): I32, np.dtype(np.uint8): U8,
          np.dtype(np.bool_): U8}
_TORCH = {}
if torch is not None:
    _TORCH = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16, torch.int32: I32, torch.uint8: U8,
              torch.bool: U8}


def is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def kiln_dtype(x):
    """The kiln_dtype of an array, or None when kiln has none for it."""
    if is_torch(x):
        return _TORCH.get(x.dtype)
    dt = x.dtype
    if dt.name == "bfloat16":  # ml_dtypes.bfloat16, when installed
        return BF16
    return _NUMPY.get(dt)


def _describe(x):
    if is_torch(x):
        return f"a torch tensor on {x.device}"
    if isinstance(x, np.ndarray):
        return "a numpy array"
    return f"a {type(x).__name__}"


class Launch:
    """Stages arguments for one C ABI call and hands back its outputs (see the module doc)."""

    direct_host = False

    def __init__(self, op, first, first_name="x"):
        self.op = op
        if is_torch(first):
            self.torch = True
            self.cuda = first.is_cuda
            self.device = first.device
        elif isinstance(first, np.ndarray):
            self.torch = False
            self.cuda = False
            self.device = None
        else:
            raise TypeError(f"{op}: {first_name} must be a numpy array or a torch tensor, got {_describe(first)}")
        if is_torch(first) and not self.cuda and first.device.type != "cpu":
            raise TypeError(f"{op}: {first_name} is on {first.device}; kiln takes CUDA tensors and CPU tensors")
        self.lib = _lib.library("cuda" if self.cuda else "emu")
        # Pointers handed over as they are (no staging): CUDA tensors always; torch CPU tensors on
        # the emulated library when Launch.direct_host is set (tests use it to run the CUDA path's
        # pointer, offset, output and workspace handling without a GPU).
        self.direct = self.cuda or (self.torch and Launch.direct_host)
        self._emu = []  # emulated buffers to free
        self._back = []  # (emulated pointer, host array, bytes) to copy back after the call
        self._keep = []  # CUDA tensors that must live until the launch is enqueued

    # -- context manager: emulated buffers are freed whatever happens -----------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self._emu:
            self.lib.kiln_emu_free(p)
        self._emu.clear()
        return False

    # -- checks ---------------------------------------------------------------------------------
    def check(self, x, name, dtypes=FLOAT, shape=None, like=None):
        """Checks one array argument; returns its kiln dtype. ``shape`` is a tuple whose None
        entries match anything; ``like`` an array whose dtype x must share."""
        if is_torch(x) != self.torch or not (is_torch(x) or isinstance(x, np.ndarray)):
            want = "a torch tensor" if self.torch else "a numpy array"
            raise TypeError(f"{self.op}: {name} must be {want} like the other arguments, got {_describe(x)}")
        if self.torch and x.device != self.device:
            raise TypeError(f"{self.op}: {name} is on {x.device}, the other arguments on {self.device}")
        dt = kiln_dtype(x)
        if dt not in dtypes:
            allowed = ", ".join(DTYPE_NAMES[d] for d in dtypes)
            raise TypeError(f"{self.op}: {name} has dtype {x.dtype}; kiln takes {allowed} here")
        if like is not None and x.dtype != like.dtype:
            raise TypeError(f"{self.op}: {name} has dtype {x.dtype}, it must match the input's {like.dtype}")
        contiguous = x.is_contiguous() if self.torch else x.flags["C_CONTIGUOUS"]
        if not contiguous:
            hint = ".contiguous()" if self.torch else "np.ascontiguousarray(...)"
            raise ValueError(f"{self.op}: {name} must be contiguous (row-major); call {hint} first")
        if shape is not None:
            got = tuple(x.shape)
            if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
                want = "[" + ", ".join("*" if w is None else str(w) for w in shape) + "]"
                raise ValueError(f"{self.op}: {name} has shape {list(got)}, expected {want}")
        return dt

    # -- pointers -------------------------------------------------------------------------------
    def _host_ptr(self, x):
        return x.data_ptr() if self.torch else x.ctypes.data

    def _emu_alloc(self, nbytes):
        p = self.lib.kiln_emu_malloc(nbytes)
        if not p:
            raise MemoryError(f"{self.op}: the emulator could not allocate {nbytes} bytes")
        self._emu.append(p)
        return p

    def ptr(self, x, offset_elements=0):
        """The pointer the library reads x through (None for None), ``offset_elements`` in."""
        if x is None:
            return None
        nbytes = x.numel() * x.element_size() if self.torch else x.nbytes
        itemsize = x.element_size() if self.torch else x.itemsize
        if self.direct:
            self._keep.append(x)
            p = x.data_ptr()
            if p == 0:  # an empty tensor: the launcher reads nothing, but takes no NULL
                p = self._dummy()
            return p + offset_elements * itemsize
        p = self._emu_alloc(nbytes)
        if nbytes and self.lib.kiln_emu_memcpy(p, self._host_ptr(x), nbytes) != 0:
            raise _lib.KilnError(f"{self.op}: staging an argument into emulated memory failed")
        return p + offset_elements * itemsize

    def _dummy(self):
        t = torch.empty(256, dtype=torch.uint8, device=self.device)
        self._keep.append(t)
        return t.data_ptr()

    def empty(self, shape, dtype):
        """A new output of the caller's kind: ``(array, pointer)``. ``dtype`` is a kiln dtype or
        an array whose dtype the output takes. On the emulator the pointer is an unwritten
        emulated buffer, copied into the array after the call."""
        shape = tuple(int(s) for s in shape)
        if not isinstance(dtype, int):
            dt = dtype.dtype
        elif self.torch:
            dt = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16, I32: torch.int32, U8: torch.uint8}[dtype]
        else:
            dt = {F32: np.float32, F16: np.float16, I32: np.int32, U8: np.uint8}[dtype]
        if self.torch:
            arr = torch.empty(shape, dtype=dt, device=self.device)
        else:
            arr = np.empty(shape, dtype=dt)
        if self.direct:
            p = arr.data_ptr() or self._dummy()
            return arr, p
        nbytes = arr.numel() * arr.element_size() if self.torch else arr.nbytes
        p = self._emu_alloc(nbytes)
        self._back.append((p, arr, nbytes))
        return arr, p

    def copy_of(self, x):
        """A new output that starts as a copy of x, for a launcher that updates it in place:
        ``(array, pointer)``; on the emulator the staged copy comes back after the call."""
        arr = x.clone() if self.torch else np.array(x, copy=True)
        if self.direct:
            self._keep.append(arr)
            return arr, arr.data_ptr() or self._dummy()
        p = self.ptr(arr)
        self._back.append((p, arr, arr.numel() * arr.element_size() if self.torch else arr.nbytes))
        return arr, p

    def workspace(self, nbytes):
        """Scratch memory for a launcher (None when it needs none)."""
        if nbytes < 0:
            raise ValueError(f"{self.op}: the sizes are invalid (the workspace query returned {nbytes})")
        if nbytes == 0:
            return None
        if self.direct:
            t = torch.empty(int(nbytes), dtype=torch.uint8, device=self.device)
            self._keep.append(t)
            return t.data_ptr()
        return self._emu_alloc(int(nbytes))

    def zeros_word(self):
        """One int32 device word set to 0 (data statuses): ``(array, pointer)``."""
        arr, p = self.empty((1,), I32)
        if self.direct:
            arr.zero_()
        else:
            self.lib.kiln_emu_memset(p, 0, 4)
        return arr, p

    # -- the call -------------------------------------------------------------------------------
    def call(self, fname, *args):
        """Calls ``fname`` with ``args`` and the stream last; raises on a non-zero status, then
        copies emulated outputs back."""
        f = getattr(self.lib, fname)
        if self.cuda:
            with torch.cuda.device(self.device):
                stream = torch.cuda.current_stream(self.device).cuda_stream
                status = f(*args, stream)
        else:
            status = f(*args, None)
        _lib.check(self.lib, status, self.op)
        for p, arr, nbytes in self._back:
            if nbytes:
                dst = self._host_ptr(arr)
                ctypes.memmove(dst, p, nbytes)
        self._back.clear()
        self._keep.clear()


def numel(x):
    return int(x.numel()) if is_torch(x) else int(x.size)


def prod(shape):
    return int(math.prod(shape))

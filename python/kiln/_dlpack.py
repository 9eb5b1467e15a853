"""Arrays of other libraries (JAX, CuPy, …) through DLPack.

Every public function of kiln's families takes, besides numpy arrays and torch tensors, any array
that exports ``__dlpack__`` and ``__dlpack_device__``:

- on the CPU (kDLCPU) it is viewed as a numpy array (``np.from_dlpack``: no copy) and runs on the
  emulated library, as numpy does;
- on a CUDA device (kDLCUDA) it is viewed as a torch CUDA tensor (``torch.from_dlpack``, which
  also orders the producer's stream before torch's current one) and runs on the CUDA library;
  this needs torch.

The outputs come back as the caller's kind: the library of the first such argument converts them
with its ``from_dlpack`` (``jax.numpy.from_dlpack`` for JAX arrays, ``cupy.from_dlpack``, or
any library's module-level ``from_dlpack``); a library without one gets numpy arrays (CPU) or
torch tensors (CUDA). numpy arrays and torch tensors pass through untouched, at the cost of one
scan of the arguments.
"""

import functools
import importlib
import inspect

import numpy as np

from ._launch import is_torch

KDL_CPU = 1
KDL_CUDA = 2


def is_foreign(x):
    """Whether x is another library's array kiln reads through DLPack."""
    return (not isinstance(x, np.ndarray) and not is_torch(x) and hasattr(x, "__dlpack__")
            and hasattr(x, "__dlpack_device__"))


def _native(x, where):
    device = x.__dlpack_device__()
    kind = int(device[0])
    if kind == KDL_CPU:
        return np.from_dlpack(x)
    if kind == KDL_CUDA:
        try:
            import torch
        except ImportError:
            raise TypeError(f"{where}: a CUDA array through DLPack needs torch installed") from None
        return torch.utils.dlpack.from_dlpack(x)
    raise TypeError(f"{where}: DLPack device {tuple(device)} is neither the CPU nor a CUDA device")


def _converter(x):
    """The caller's ``from_dlpack`` for an array like x, or None."""
    root = type(x).__module__.split(".")[0]
    candidates = [("jax.numpy", "from_dlpack")] if root in ("jax", "jaxlib") else []
    candidates.append((root, "from_dlpack"))
    for module, name in candidates:
        try:
            f = getattr(importlib.import_module(module), name, None)
        except ImportError:
            f = None
        if callable(f):
            return f
    return None


def _back(result, convert):
    if result is None or isinstance(result, (bool, int, float, str)):
        return result
    if isinstance(result, np.ndarray) or is_torch(result):
        return convert(result)
    if isinstance(result, tuple):
        items = [_back(r, convert) for r in result]
        return type(result)(*items) if hasattr(result, "_fields") else tuple(items)
    if isinstance(result, list):
        return [_back(r, convert) for r in result]
    return result


def interop(f):
    """``f`` taking DLPack arrays in any argument and giving its outputs back in their kind."""
    where = f"{f.__module__}.{f.__qualname__}"

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        first = next((a for a in (*args, *kwargs.values()) if is_foreign(a)), None)
        if first is None:
            return f(*args, **kwargs)
        args = [_native(a, where) if is_foreign(a) else a for a in args]
        kwargs = {k: _native(v, where) if is_foreign(v) else v for k, v in kwargs.items()}
        convert = _converter(first)
        result = f(*args, **kwargs)
        return result if convert is None else _back(result, convert)

    return wrapper


def wrap_module(module):
    """Replaces each public function defined in ``module`` by its :func:`interop` form."""
    for name, f in list(vars(module).items()):
        if not name.startswith("_") and inspect.isfunction(f) and f.__module__ == module.__name__:
            setattr(module, name, interop(f))

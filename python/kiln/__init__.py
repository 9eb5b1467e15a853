"""kiln from Python: the C ABI of kiln's fused CUDA kernels through ctypes.

- torch CUDA tensors run on the CUDA library (``libkiln.so``), on the tensor's device and current
  stream;
- numpy arrays and torch CPU tensors run on the emulated library (``libkiln_emu.so``: the same
  kernel sources on kiln's CUDA emulator, checked), so everything is testable without a GPU.

Functional API per family: ``kiln.activation``, ``kiln.glu``, ``kiln.norm``, ``kiln.padding``,
``kiln.attention`` (``forward``/``backward`` returning arrays of the caller's kind), ``kiln.equivariant``
(spherical harmonics, HIP Hessian), ``kiln.arith`` (NAU, NMU, their regularisers). With torch
installed, ``kiln.nn`` has ``torch.autograd.Function`` wrappers and ``torch.nn.Module``s.
Other libraries' arrays (JAX, CuPy, …) come in through DLPack and their results go back in their
kind: CPU ones on the emulated library, CUDA ones (with torch installed) on the CUDA library.
The libraries are found through ``KILN_LIBRARY`` (a path to one of them or their folder) or
beside this package (``scripts/build-shared.sh`` puts them there).
"""

from . import _dlpack, activation, arith, attention, equivariant, glu, norm, padding
from ._abi import ABI_VERSION
from ._lib import KilnArgumentError, KilnError, LibraryNotFound, library

__version__ = "0.1.0"

# Every family's functions also take other libraries' arrays through DLPack (_dlpack.py).
for _module in (activation, arith, attention, equivariant, glu, norm, padding):
    _dlpack.wrap_module(_module)
del _module


def available(kind):
    """Whether the library of ``kind`` ("cuda" or "emu") can be loaded."""
    try:
        library(kind)
        return True
    except LibraryNotFound:
        return False


def emu_checked(on=None):
    """Reads (and with ``on``, sets) the emulator's checked mode; returns the mode in force."""
    lib = library("emu")
    if on is not None:
        lib.kiln_emu_set_checked(int(bool(on)))
    return bool(lib.kiln_emu_checked())


__all__ = [
    "ABI_VERSION",
    "KilnArgumentError",
    "KilnError",
    "LibraryNotFound",
    "activation",
    "arith",
    "attention",
    "available",
    "emu_checked",
    "equivariant",
    "glu",
    "library",
    "norm",
    "padding",
]

"""Other libraries' arrays through DLPack (python/kiln/_dlpack.py), here with numpy underneath:
``foreignlib`` is a stand-in array library (a module with ``from_dlpack`` and an array type that
exports ``__dlpack__``/``__dlpack_device__`` only), so the tests run without JAX or CuPy. The GPU
run covers CuPy on a CUDA device."""
import sys
import types

import numpy as np
import pytest

import kiln


class ForeignArray:
    """An array of another library: kiln sees only its DLPack protocol."""

    def __init__(self, a, device=(1, 0)):
        self._a = np.ascontiguousarray(a)
        self._device = device

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device

    def numpy(self):
        return self._a


foreignlib = types.ModuleType("foreignlib")
foreignlib.from_dlpack = lambda x: ForeignArray(np.from_dlpack(x))
ForeignArray.__module__ = "foreignlib"
sys.modules["foreignlib"] = foreignlib


def rng():
    return np.random.default_rng(20261207)


def test_an_activation_takes_and_returns_the_callers_kind():
    x = rng().standard_normal((7, 33)).astype(np.float32)
    y = kiln.activation.forward("gelu", ForeignArray(x))
    assert isinstance(y, ForeignArray)
    np.testing.assert_array_equal(y.numpy(), kiln.activation.forward("gelu", x))
    dx, dparam = kiln.activation.backward("silu", ForeignArray(x), ForeignArray(np.ones_like(x)))
    assert isinstance(dx, ForeignArray) and dparam is None
    np.testing.assert_array_equal(dx.numpy(), kiln.activation.backward("silu", x, np.ones_like(x))[0])


def test_named_tuples_keep_their_fields_and_keyword_arrays_convert():
    g = rng()
    x = g.standard_normal((5, 64)).astype(np.float32)
    gamma = g.standard_normal(64).astype(np.float32)
    residual = g.standard_normal((5, 64)).astype(np.float32)
    got = kiln.norm.forward("rmsnorm", ForeignArray(x), ForeignArray(gamma), residual=ForeignArray(residual),
                            residual_out=True)
    want = kiln.norm.forward("rmsnorm", x, gamma, residual=residual, residual_out=True)
    assert type(got) is type(want) and got._fields == want._fields
    for name in want._fields:
        w, v = getattr(want, name), getattr(got, name)
        assert (v is None) == (w is None), name
        if w is not None:
            assert isinstance(v, ForeignArray), name
            np.testing.assert_array_equal(v.numpy(), w, err_msg=name)


def test_index_arrays_and_mixed_arguments():
    g = rng()
    hidden = g.standard_normal((2, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=np.int32)
    got = kiln.padding.unpad(ForeignArray(hidden), mask=ForeignArray(mask))
    want = kiln.padding.unpad(hidden, mask=mask)
    for w, v in zip(want, got):
        if isinstance(w, np.ndarray):
            assert isinstance(v, ForeignArray)
            np.testing.assert_array_equal(v.numpy(), w)
        else:
            assert v == w


def test_numpy_and_plain_values_pass_through_untouched():
    x = rng().standard_normal((3, 4)).astype(np.float32)
    assert isinstance(kiln.activation.forward("relu", x), np.ndarray)
    assert kiln.equivariant.sh_dim(3) == 16
    assert kiln.activation.forward.__doc__ and "activation" in kiln.activation.forward.__doc__


def test_devices_other_than_the_cpu_and_cuda_are_refused():
    x = ForeignArray(np.ones((2, 2), np.float32), device=(14, 0))  # kDLOneAPI
    with pytest.raises(TypeError, match=r"kiln\.activation\.forward: DLPack device \(14, 0\)"):
        kiln.activation.forward("relu", x)


def test_a_library_without_from_dlpack_gets_numpy():
    class Bare(ForeignArray):
        pass

    Bare.__module__ = "no_such_library_here"
    y = kiln.activation.forward("relu", Bare(np.array([-1.0, 2.0], np.float32)))
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, [0.0, 2.0])

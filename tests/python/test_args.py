"""The Python module's argument checks: each names the op and the argument, with TypeError for
kinds and dtypes and ValueError for shapes, contiguity and values; nothing is launched."""
import os
import subprocess
import sys

import numpy as np
import pytest

import kiln
from conftest import ROOT, cuda_library


def f32(*shape):
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def test_not_an_array():
    with pytest.raises(TypeError, match=r"activation/relu fwd: x must be a numpy array or a torch tensor, got a list"):
        kiln.activation.forward("relu", [1.0, 2.0])


def test_unsupported_dtype():
    with pytest.raises(TypeError, match=r"activation/silu fwd: x has dtype float64; kiln takes float32, float16"):
        kiln.activation.forward("silu", np.ones(3))


def test_non_contiguous():
    with pytest.raises(ValueError, match=r"x must be contiguous .*np.ascontiguousarray"):
        kiln.activation.forward("gelu", f32(4, 6)[:, ::2])


def test_shape_and_dtype_mismatch():
    x = f32(3, 5)
    with pytest.raises(ValueError, match=r"activation/gelu bwd: dy has shape \[5, 3\], expected \[3, 5\]"):
        kiln.activation.backward("gelu", x, f32(5, 3))
    with pytest.raises(TypeError, match=r"dy has dtype float16, it must match the input's float32"):
        kiln.activation.backward("gelu", x, x.astype(np.float16))


def test_unknown_op_and_parameters():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        kiln.activation.forward("swish", f32(3))
    with pytest.raises(TypeError, match="smelu: the parameter beta is required"):
        kiln.activation.forward("smelu", f32(3))
    with pytest.raises(TypeError, match="unexpected parameter"):
        kiln.activation.forward("relu", f32(3), alpha=1.0)
    with pytest.raises(ValueError, match="unknown GLU 'swi'"):
        kiln.glu.forward("swi", f32(2, 4))
    with pytest.raises(TypeError, match="takes no alpha"):
        kiln.glu.forward("swiglu", f32(2, 4), alpha=0.5)


def test_scalar_domain_is_checked_by_the_library():
    with pytest.raises(kiln.KilnArgumentError, match=r"outside its domain \(KILN_ERROR_INVALID_VALUE\)") as e:
        kiln.activation.forward("smelu", f32(3), beta=-1.0)
    assert isinstance(e.value, ValueError) and e.value.status == 4
    with pytest.raises(ValueError, match="INVALID_VALUE"):
        kiln.activation.forward("xgelu", f32(3), alpha=float("nan"))


def test_channel_parameters():
    with pytest.raises(ValueError, match=r"prelu: slope has 4 channels but x's last dimension is 5"):
        kiln.activation.forward("prelu", f32(2, 5), slope=np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"slope has dtype float16; kiln takes float32 here"):
        kiln.activation.forward("prelu", f32(2, 5), slope=np.ones(5, np.float16))
    with pytest.raises(TypeError, match="jumprelu bwd: the bandwidth eps is required"):
        kiln.activation.backward("jumprelu", f32(2, 5), f32(2, 5), theta=np.ones(5, np.float32))


def test_glu_norm_padding_attention_shapes():
    with pytest.raises(ValueError, match=r"last dimension must be even"):
        kiln.glu.forward("swiglu", f32(2, 5))
    with pytest.raises(ValueError, match=r"b has shape \[2, 3\], expected \[2, 4\]"):
        kiln.glu.forward("swiglu", f32(2, 4), f32(2, 3))
    with pytest.raises(ValueError, match=r"order must be 1 or 2"):
        kiln.glu.forward("xswiglu", f32(2, 4), alpha=0.1, order=3)
    with pytest.raises(ValueError, match=r"norm/layernorm fwd: gamma has shape \[7\], expected \[8\]"):
        kiln.norm.forward("layernorm", f32(2, 8), np.ones(7, np.float32))
    with pytest.raises(TypeError, match="give exactly one of mask and seqlens"):
        kiln.padding.unpad(f32(2, 3, 4))
    with pytest.raises(TypeError, match=r"mask has dtype float32"):
        kiln.padding.unpad(f32(2, 3, 4), mask=f32(2, 3))
    q = np.ones((4, 2, 48), np.float16)
    cu = np.array([0, 4], np.int32)
    with pytest.raises(ValueError, match="head_dim 48 is not supported"):
        kiln.attention.forward(q, q, q, cu, cu)
    with pytest.raises(TypeError, match=r"q has dtype float32; kiln takes float16, bfloat16"):
        kiln.attention.forward(f32(4, 2, 32), f32(4, 2, 32), f32(4, 2, 32), cu, cu)
    q = np.ones((4, 4, 32), np.float16)
    with pytest.raises(ValueError, match="q's 4 heads must be a multiple of k's 3"):
        kiln.attention.forward(q, np.ones((4, 3, 32), np.float16), np.ones((4, 3, 32), np.float16), cu, cu)
    with pytest.raises(ValueError, match=r"slopes has shape \[3\], expected \[4\] or \[1, 4\]"):
        kiln.attention.forward(q, q, q, cu, cu, slopes=np.ones(3, np.float32))


def test_attention_backward_arguments():
    """The backward checks the forward's arguments and its own: out/dout like q, lse f32 [H, total_q],
    the optional gradients only with what they differentiate; the padded form checks its shapes."""
    assert kiln.attention.has_backward()
    q = np.ones((4, 2, 32), np.float16)
    cu = np.array([0, 4], np.int32)
    lse = np.zeros((2, 4), np.float32)
    slopes = kiln.attention.alibi_slopes(2)
    bwd = kiln.attention.backward
    with pytest.raises(ValueError, match=r"attention/alibi bwd: out has shape \[3, 2, 32\], expected \[4, 2, 32\]"):
        bwd(q, q, q, q[:3], lse, q, cu, cu)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: dout has shape \[4, 1, 32\], expected \[4, 2, 32\]"):
        bwd(q, q, q, q, lse, q[:, :1].copy(), cu, cu)
    with pytest.raises(TypeError, match=r"attention/alibi bwd: dout has dtype float32; kiln takes float16, bfloat16"):
        bwd(q, q, q, q, lse, q.astype(np.float32), cu, cu)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: lse has shape \[4, 2\], expected \[2, 4\]"):
        bwd(q, q, q, q, lse.T.copy(), q, cu, cu)
    with pytest.raises(TypeError, match=r"attention/alibi bwd: lse has dtype float16; kiln takes float32"):
        bwd(q, q, q, q, lse.astype(np.float16), q, cu, cu)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: lse must be contiguous"):
        bwd(q, q, q, q, np.zeros((4, 2), np.float32).T, q, cu, cu)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: slope_grad needs ALiBi slopes, but slopes is None"):
        bwd(q, q, q, q, lse, q, cu, cu, slope_grad=True)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: position_grad needs geometric ALiBi, but positions"):
        bwd(q, q, q, q, lse, q, cu, cu, slopes=slopes, slope_grad=True, position_grad=True)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: slopes has shape \[3\], expected \[2\] or \[1, 2\]"):
        bwd(q, q, q, q, lse, q, cu, cu, slopes=np.ones(3, np.float32), slope_grad=True)
    with pytest.raises(ValueError, match=r"attention/alibi bwd: positions has shape \[3, 3\], expected \[4, 3\]"):
        bwd(q, q, q, q, lse, q, cu, cu, slopes=slopes, positions=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"attention/alibi bwd: head_dim 48 is not supported"):
        q48 = np.ones((4, 2, 48), np.float16)
        bwd(q48, q48, q48, q48, lse, q48, cu, cu)
    with pytest.raises(TypeError, match=r"attention/alibi bwd: dout must be a numpy array like the other arguments"):
        bwd(q, q, q, q, lse, q.tolist(), cu, cu)
    try:
        import ml_dtypes
    except ImportError:
        pass
    else:
        with pytest.raises(TypeError, match=r"attention/alibi bwd: out has dtype bfloat16, it must match the input's "
                                            r"float16"):
            bwd(q, q, q, q.astype(ml_dtypes.bfloat16), lse, q, cu, cu)
    qp = np.ones((2, 2, 2, 32), np.float16)
    mask = np.ones((2, 2), bool)
    bwdp = kiln.attention.backward_padded
    with pytest.raises(ValueError, match=r"attention/alibi bwd \(padded\): lse has shape \[2, 4\], expected "
                                         r"\[2, 2, 2\]"):
        bwdp(qp, qp, qp, qp, lse, qp, mask)
    with pytest.raises(ValueError, match=r"attention/alibi bwd \(padded\): q must be \[batch, seqlen, heads, "
                                         r"head_dim\]"):
        bwdp(q, q, q, q, lse, q)
    with pytest.raises(ValueError, match=r"attention/alibi bwd \(padded\): a padding mask needs seqlen_k = seqlen_q"):
        k3 = np.ones((2, 3, 2, 32), np.float16)
        bwdp(qp, k3, k3, qp, np.zeros((2, 2, 2), np.float32), qp, mask)


def test_emulator_finding_surfaces_in_the_exception():
    """A launch the emulator fails (here: a buffer too short, through the raw library) raises
    KilnError with the finding's text and the kernel's source line."""
    lib = kiln.library("emu")
    x, y = lib.kiln_emu_malloc(64), lib.kiln_emu_malloc(32)
    try:
        lib.kiln_emu_memset(x, 0, 64)
        status = lib.kiln_activation_relu_fwd(0, x, y, 16, None)
        with pytest.raises(kiln.KilnError, match=r"(?s)KILN_ERROR_CUDA.*out-of-bounds.*kernels/activation.cu:\d+"):
            kiln._lib.check(lib, status, "relu")
    finally:
        lib.kiln_emu_free(x)
        lib.kiln_emu_free(y)


def test_library_not_found_names_the_places_and_the_fix(tmp_path):
    code = "import kiln, numpy as np; kiln.activation.forward('relu', np.ones(2, np.float32))"
    env = dict(os.environ, KILN_LIBRARY=str(tmp_path / "nowhere.so"), PYTHONPATH=str(ROOT / "python"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "LibraryNotFound" in r.stderr and "nowhere.so" in r.stderr and "scripts/build-shared.sh" in r.stderr


def test_cuda_library_without_a_gpu_is_an_error_not_a_crash():
    lib_path = cuda_library()
    if lib_path is None:
        pytest.skip("libkiln.so not built")
    lib_path = str(lib_path)
    code = (
        "import kiln._lib as l; lib = l.library('cuda'); s = lib.kiln_activation_relu_fwd(0, 256, 512, 4, None);\n"
        "print(s, l.status_name(s))"
    )
    env = dict(os.environ, KILN_LIBRARY=lib_path, PYTHONPATH=str(ROOT / "python"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "KILN_ERROR_CUDA" in r.stdout or r.stdout.startswith("0 ")

"""The peer benchmarks (benches/peers) need torch and a GPU, so they run only in the GPU bundle;
here they must compile, import, and decline cleanly without a CUDA device."""
import os
import subprocess
import sys

from conftest import ROOT

PEERS = ROOT / "benches/peers"


def test_peer_scripts_compile():
    files = sorted(PEERS.glob("*.py"))
    assert {f.name for f in files} >= {"common.py", "elementwise.py", "attention.py", "equivariant.py", "arith.py", "run.py"}
    for f in files:
        compile(f.read_text(), str(f), "exec")


def test_peer_scripts_import_and_decline_without_a_gpu():
    code = ("import run, elementwise, attention, equivariant, arith; assert elementwise.main() is None; "
            "assert attention.main() is None; assert equivariant.main() is None; assert arith.main() is None")
    r = subprocess.run([sys.executable, "-c", code], cwd=PEERS, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", CUDA_VISIBLE_DEVICES=""))
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stdout
    r = subprocess.run([sys.executable, "run.py", "--out", os.devnull], cwd=PEERS, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", CUDA_VISIBLE_DEVICES=""))
    assert r.returncode == 2 and "needs torch with a CUDA device" in r.stdout

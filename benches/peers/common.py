"""Shared helpers of the peer benchmarks (benches/peers/): loading kiln, timing with CUDA events,
and the JSON rows scripts/perf-record.py reads.

Method (shared/GPU.md): the same tensors for kiln and every peer, in one process; inputs several
times larger than L2 and never zeros; warm-up, then the median of many timed batches, each batch
``inner`` back-to-back calls between two CUDA events (so the host's launch overhead overlaps the
GPU work as it does in a model). A ratio kiln/peer below 1 means kiln is faster.
"""
import os
import pathlib
import statistics
import sys
import time

try:
    import torch
except ImportError:  # the scripts are syntax-checked where torch is absent (scripts/test.sh)
    torch = None

HERE = pathlib.Path(__file__).resolve().parent


def import_kiln():
    """kiln from beside the bundle (peers/../python) or the repository (benches/peers/../../python)."""
    for p in (HERE.parent / "python", HERE.parent.parent / "python"):
        if (p / "kiln" / "__init__.py").is_file() and str(p) not in sys.path:
            sys.path.insert(0, str(p))
            break
    import kiln
    import kiln.nn

    return kiln


def time_ms(fn, runs=30, inner=5, warmup=3):
    """Median milliseconds of one call of fn over ``runs`` batches of ``inner`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events) / inner


class Results:
    """Rows of {op, dir, dtype, shape, kiln_ms, peers: {name: ms}, ratios: {name: kiln/peer}}."""

    def __init__(self, budget_s):
        self.rows = []
        self.notes = []
        self.deadline = time.monotonic() + budget_s

    def time_left(self):
        return self.deadline - time.monotonic()

    def add(self, op, direction, dtype, shape, kiln_fn, peers, flops=None, runs=30, inner=5):
        """Times kiln_fn and each peer (name -> fn, or None when unavailable); a peer that fails
        is recorded as a note, never aborts the run."""
        row = {"op": op, "dir": direction, "dtype": dtype, "shape": list(shape), "peers": {}, "ratios": {}}
        try:
            row["kiln_ms"] = time_ms(kiln_fn, runs, inner)
        except Exception as e:  # noqa: BLE001 - a failing op is a result
            self.notes.append(f"{op} {direction} {dtype}: kiln failed: {type(e).__name__}: {e}")
            return
        if flops:
            row["kiln_tflops"] = flops / row["kiln_ms"] / 1e9
        for name, fn in peers.items():
            if fn is None:
                continue
            if self.time_left() < 0:
                self.notes.append(f"{op} {direction} {dtype} {name}: skipped (time budget spent)")
                continue
            try:
                ms = time_ms(fn, runs, inner)
            except Exception as e:  # noqa: BLE001
                self.notes.append(f"{op} {direction} {dtype} {name}: {type(e).__name__}: {str(e)[:200]}")
                continue
            row["peers"][name] = ms
            row["ratios"][name] = row["kiln_ms"] / ms
        self.rows.append(row)
        ratios = " ".join(f"{k}={v:.2f}" for k, v in row["ratios"].items())
        print(f"{op:28s} {direction:8s} {dtype:5s} kiln {row['kiln_ms']:8.3f} ms  kiln/peer: {ratios}", flush=True)


    def add_peers_only(self, op, direction, dtype, shape, peers, runs=30, inner=5):
        """A row of peer times alone, for an op whose kiln time comes from `kiln bench` (no Python
        binding): scripts/perf-record.py divides the bench's median by these. kiln_ms is None."""
        row = {"op": op, "dir": direction, "dtype": dtype, "shape": list(shape), "kiln_ms": None, "peers": {},
               "ratios": {}}
        for name, fn in peers.items():
            if self.time_left() < 0:
                self.notes.append(f"{op} {direction} {dtype} {name}: skipped (time budget spent)")
                continue
            try:
                row["peers"][name] = time_ms(fn, runs, inner)
            except Exception as e:  # noqa: BLE001
                self.notes.append(f"{op} {direction} {dtype} {name}: {type(e).__name__}: {str(e)[:200]}")
        if row["peers"]:
            self.rows.append(row)
            times = " ".join(f"{k}={v:.3f}ms" for k, v in row["peers"].items())
            print(f"{op:28s} {direction:8s} {dtype:5s} (kiln from kiln bench) {times}", flush=True)


def env_info():
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "kiln_library": os.environ.get("KILN_LIBRARY", "beside the package"),
    }


def random(shape, dtype, scale=1.0, seed=0):
    """Fresh normal values on the GPU (never zeros)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, generator=g, device="cuda", dtype=torch.float32) * scale).to(dtype)


def compiled(fn):
    """torch.compile(fn), or None where torch.compile is unavailable."""
    try:
        return torch.compile(fn, dynamic=False)
    except Exception:  # noqa: BLE001
        return None

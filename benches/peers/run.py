"""Runs every peer benchmark in one process and writes the JSON scripts/perf-record.py reads.

usage: python3 benches/peers/run.py [--out peers.json] [--quick] [--budget-s 420]
The GPU bundle runs it (scripts/gpu-run.sh) with KILN_LIBRARY pointing at its libkiln.so; the
table of kiln/peer ratios prints last.
"""
import argparse
import json
import sys
import time

import arith
import attention
import elementwise
import equivariant
from common import Results, env_info, torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="peers.json")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (a smoke test)")
    ap.add_argument("--budget-s", type=float, default=420, help="stop starting new peers after this")
    args = ap.parse_args()
    if torch is None or not torch.cuda.is_available():
        print("peers: needs torch with a CUDA device")
        return 2
    t0 = time.monotonic()
    res = Results(args.budget_s)
    # The e3nn convolution first (its kiln/peer ratio is the one not measured yet), then attention
    # (its peers matter most and compile longest), then the elementwise families, then the
    # arithmetic units.
    for part in (equivariant, attention, elementwise, arith):
        try:
            part.main(res, quick=args.quick)
        except Exception as e:  # noqa: BLE001 - keep what the other part measured
            res.notes.append(f"{part.__name__}: {type(e).__name__}: {e}")
    doc = {"env": env_info(), "quick": args.quick, "seconds": round(time.monotonic() - t0, 1), "results": res.rows,
           "notes": res.notes}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"==== peers ({len(res.rows)} rows, {doc['seconds']} s; kiln/peer < 1: kiln faster)")
    for r in res.rows:
        if r["kiln_ms"] is None:
            times = " ".join(f"{k}={v:.3f}ms" for k, v in r["peers"].items())
            print(f"{r['op']} {r['dir']} {r['dtype']} kiln: see kiln bench; {times}")
            continue
        ratios = " ".join(f"{k}={v:.2f}" for k, v in r["ratios"].items())
        extra = f" {r['kiln_tflops']:.0f}TF" if "kiln_tflops" in r else ""
        print(f"{r['op']} {r['dir']} {r['dtype']} {r['kiln_ms']:.3f}ms{extra} {ratios}")
    for note in res.notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Turns a GPU run's output folder (check.json, bench.json, REVISION, nvidia-smi.txt from
scripts/gpu-run.sh) into perf/latest.json and perf/<card>-<date>.md (shared/GPU.md), with the
traffic model of perf/model.json (kiln model: counted on the emulator, not measured) beside each
measured figure: its traffic ratio and the % of copy bandwidth it bounds the kernel to
(100 / ratio), so a GPU run shows at once which kernels fall short of what their traffic allows.
peers.json (benches/peers/run.py), when present, adds kiln/peer time ratios to the rows it
measured: a row's "peers" maps each peer (eager, compile, sdpa_flash, sdpa_efficient_bias,
flex_alibi) to kiln_ms / peer_ms, below 1 where kiln is faster; its "dir" is fwd or fwd+bwd.

usage: scripts/perf-record.py OUT_DIR   (KILN_PERF_DIR overrides the perf/ folder written)
"""
import os
import datetime
import json
import pathlib
import re
import sys


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    rev = dict(line.split(" ", 1) for line in (out / "REVISION").read_text().splitlines() if " " in line)
    smi = (out / "nvidia-smi.txt").read_text().splitlines()
    card = re.sub(r"^GPU \d+: ", "", smi[0]).split(" (UUID")[0] if smi else "unknown"
    date = datetime.date.today().isoformat()
    check = json.loads((out / "check.json").read_text()) if (out / "check.json").exists() else {"results": []}
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {"results": [], "ceilings": {}}
    # gpu-run.sh checks and times attention and the MLP block in steps of their own.
    for extra in ("check_attention.json",):
        if (out / extra).exists():
            check["results"] += json.loads((out / extra).read_text())["results"]
    for extra in ("bench_mlp.json", "bench_attention.json"):
        if (out / extra).exists():
            more = json.loads((out / extra).read_text())
            bench["results"] += more["results"]
            bench.setdefault("ceilings", {}).setdefault("copy_gbps", more.get("ceilings", {}).get("copy_gbps"))

    # One entry per op/direction/dtype: pass = every check row passed; max_err = worst row.
    results = {}
    for r in check["results"]:
        key = (r["op"], r["dir"], r["dtype"])
        e = results.setdefault(key, {"op": r["op"], "dir": r["dir"], "dtype": r["dtype"], "pass": True, "max_err": 0.0})
        e["pass"] = e["pass"] and r["pass"]
        e["max_err"] = max(e["max_err"], r["max_err"] if r["max_err"] is not None else float("inf"))
    for r in bench["results"]:
        key = (r["op"], r["dir"], r["dtype"])
        e = results.setdefault(key, {"op": r["op"], "dir": r["dir"], "dtype": r["dtype"]})
        suffix = "_no_dparam" if r["variant"] == "no-dparam" else ""
        e["gbps" + suffix] = round(r["gbps"], 1)
        e["tflops" + suffix] = round(r["tflops"], 2)
        e["pct_of_copy" + suffix] = round(r["pct_of_copy"], 1)
        e["shape"] = r["shape"]
    # The model beside the measurements (its shapes are the emulator's, smaller than the bench's:
    # the ratio, not the time, carries over).
    perf = pathlib.Path(os.environ.get("KILN_PERF_DIR") or pathlib.Path(__file__).resolve().parent.parent / "perf")
    model_path = pathlib.Path(__file__).resolve().parent.parent / "perf" / "model.json"
    model = json.loads(model_path.read_text())["results"] if model_path.exists() else []
    for m in model:
        e = results.get((m["op"], m["dir"], m["dtype"]))
        if e is not None:
            e["model_traffic_ratio"] = round(m["traffic_ratio"], 3)
            e["model_bound_pct_of_copy"] = round(100.0 / m["traffic_ratio"], 1) if m["traffic_ratio"] > 0 else None
    peers = json.loads((out / "peers.json").read_text()) if (out / "peers.json").exists() else None
    for r in (peers or {}).get("results", []):
        key = (r["op"], r["dir"], r["dtype"])
        e = results.setdefault(key, {"op": r["op"], "dir": r["dir"], "dtype": r["dtype"]})
        e["peer_shape"] = r["shape"]
        e["kiln_ms"] = round(r["kiln_ms"], 4)
        if "kiln_tflops" in r:
            e["kiln_tflops"] = round(r["kiln_tflops"], 1)
        e["peer_ms"] = {k: round(v, 4) for k, v in r["peers"].items()}
        e["peers"] = {k: round(v, 3) for k, v in r["ratios"].items()}
    latest = {
        "card": card,
        "date": date,
        "commit": rev.get("commit"),
        "kernels_tree": rev.get("kernels_tree"),
        "dirty": rev.get("dirty"),
        "ceilings": bench.get("ceilings", {}),
        "results": sorted(results.values(), key=lambda e: (e["op"], e["dir"], e["dtype"])),
    }
    if peers is not None:
        latest["peers_env"] = peers.get("env", {})
        latest["peers_notes"] = peers.get("notes", [])
    perf.mkdir(exist_ok=True)
    (perf / "latest.json").write_text(json.dumps(latest, indent=1) + "\n")
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    lines = [f"# {card}, {date}", "", f"commit {latest['commit']}, kernels tree {latest['kernels_tree']}", ""]
    lines.append(f"copy ceiling: {bench.get('ceilings', {}).get('copy_gbps', 0):.0f} GB/s")
    lines += [
        "",
        "Model columns: kiln model's traffic ratio (emulator, not measured) and the % of copy it bounds the kernel to.",
        "",
        "| op | dir | dtype | pass | max_err | GB/s | % copy | % copy without dparam | model ratio | model bound % copy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in latest["results"]:
        lines.append(
            f"| {e['op']} | {e['dir']} | {e['dtype']} | {e.get('pass', '-')} | {e.get('max_err', '-')} | "
            f"{e.get('gbps', '-')} | {e.get('pct_of_copy', '-')} | {e.get('pct_of_copy_no_dparam', '-')} | "
            f"{e.get('model_traffic_ratio', '-')} | {e.get('model_bound_pct_of_copy', '-')} |"
        )
    peer_rows = [e for e in latest["results"] if "peers" in e]
    if peer_rows:
        env = latest["peers_env"]
        lines += ["", f"## kiln against PyTorch (torch {env.get('torch')}, CUDA {env.get('cuda')})", "",
                  "kiln time / peer time on the same tensors (below 1: kiln faster).", "",
                  "| op | dir | dtype | kiln ms | kiln/peer |", "|---|---|---|---|---|"]
        for e in peer_rows:
            ratios = ", ".join(f"{k} {v}" for k, v in e["peers"].items())
            lines.append(f"| {e['op']} | {e['dir']} | {e['dtype']} | {e['kiln_ms']} | {ratios} |")
        lines += [f"- {n}" for n in latest["peers_notes"]]
    (perf / f"{slug}-{date}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {perf}/latest.json and {perf}/{slug}-{date}.md")


if __name__ == "__main__":
    main()

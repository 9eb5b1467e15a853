#!/usr/bin/env python3
"""Turns a GPU run's output folder (check.json, bench.json, REVISION, nvidia-smi.txt from
scripts/gpu-run.sh) into perf/latest.json and perf/<card>-<date>.md (shared/GPU.md), with the
traffic model of perf/model.json (kiln model: counted on the emulator, not measured) beside each
measured figure: its traffic ratio and the % of copy bandwidth it bounds the kernel to
(100 / ratio), so a GPU run shows at once which kernels fall short of what their traffic allows.
peers.json (benches/peers/run.py), when present, adds kiln/peer time ratios to the rows it
measured: a row's "peers" maps each peer (eager, compile, sdpa_flash, sdpa_efficient_bias,
flex_alibi, e3nn_eager, e3nn_compile) to kiln_ms / peer_ms, below 1 where kiln is faster; its
"dir" is fwd, fwd+bwd or fwd+bwd+bwd2. A peer-only row (kiln_ms null: the e3nn convolution) takes
kiln's time from the sum of the bench's medians of the same op in those directions.

latest.json has one entry per op/direction/dtype and bench case: "case" is the label of the fixed,
named problem `kiln bench` timed (`16384x4096`, `B8xS2048xH16xD128 causal alibi`) and "shape" its
main-input shape (a list of integers); the check verdict and the model ratio of the op/direction/
dtype are on each of its cases. A peer row goes to the one case, or to the cases of its shape.

usage: scripts/perf-record.py OUT_DIR [OUT_DIR...]   (KILN_PERF_DIR overrides the perf/ folder written)

Several folders merge, in order: a later run (a rerun after a fix, or one that reached the steps an
earlier run's time cap cut) replaces the check verdicts and timings it has for an op/direction/
dtype (and case), and every entry names the commit whose run produced its verdict ("commit" on the entry when
the runs' commits differ). latest.json's "runs" lists each folder's revision and test summary.
"""
import os
import datetime
import json
import pathlib
import re
import sys


def load_json(path: pathlib.Path, empty: dict) -> dict:
    return json.loads(path.read_text()) if path.exists() else empty


def revision(out: pathlib.Path) -> dict:
    return dict(line.split(" ", 1) for line in (out / "REVISION").read_text().splitlines() if " " in line)


def test_summary(out: pathlib.Path) -> list:
    """The test harness's result lines and failing tests from gpu-run.sh's tests.log."""
    log = out / "tests.log"
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return [l.strip() for l in lines if l.startswith("test result") or l.endswith("... FAILED")]


def main() -> None:
    outs = [pathlib.Path(a) for a in sys.argv[1:]]
    if not outs:
        sys.exit(__doc__)
    revs = [revision(out) for out in outs]
    rev = revs[-1]
    smi = (outs[-1] / "nvidia-smi.txt").read_text().splitlines()
    card = re.sub(r"^GPU \d+: ", "", smi[0]).split(" (UUID")[0] if smi else "unknown"
    date = datetime.date.today().isoformat()
    several_commits = len({r.get("commit") for r in revs}) > 1

    verdicts = {}  # (op, dir, dtype) -> pass, max_err (and commit)
    timings = {}  # (op, dir, dtype, case) -> the bench's figures of one case
    ceilings = {}
    for out, run_rev in zip(outs, revs):
        check = load_json(out / "check.json", {"results": []})
        # gpu-run.sh checks and times attention and the MLP block in steps of their own.
        check["results"] += load_json(out / "check_attention.json", {"results": []})["results"]
        bench = load_json(out / "bench.json", {"results": [], "ceilings": {}})
        for extra in ("bench_mlp.json", "bench_attention.json", "bench_activation.json"):
            more = load_json(out / extra, {"results": [], "ceilings": {}})
            bench["results"] += more["results"]
            bench.setdefault("ceilings", {}).setdefault("copy_gbps", more.get("ceilings", {}).get("copy_gbps"))
        if bench.get("ceilings", {}).get("copy_gbps"):
            ceilings = bench["ceilings"]

        # One verdict per op/direction/dtype: pass = every check row of this run passed; max_err =
        # worst row. A later run's rows for a key replace an earlier run's.
        fresh = {}
        for r in check["results"]:
            key = (r["op"], r["dir"], r["dtype"])
            e = fresh.setdefault(key, {"pass": True, "max_err": 0.0})
            e["pass"] = e["pass"] and r["pass"]
            e["max_err"] = max(e["max_err"], r["max_err"] if r["max_err"] is not None else float("inf"))
        for key, verdict in fresh.items():
            if several_commits:
                verdict["commit"] = run_rev.get("commit")
            verdicts[key] = verdict
        # One timing per op/direction/dtype and bench case (`kiln bench`'s fixed, named problems;
        # a bench.json without cases names each row by its shape).
        for r in bench["results"]:
            case = r.get("case") or "x".join(str(d) for d in r.get("shape", []))
            e = timings.setdefault((r["op"], r["dir"], r["dtype"], case), {})
            suffix = "_no_dparam" if r["variant"] == "no-dparam" else ""
            e["gbps" + suffix] = round(r["gbps"], 1)
            e["tflops" + suffix] = round(r["tflops"], 2)
            e["pct_of_copy" + suffix] = round(r["pct_of_copy"], 1)
            if "median_us" in r:
                e["median_us" + suffix] = round(r["median_us"], 1)
            e["shape"] = r["shape"]
            if several_commits:
                e["bench_commit"] = run_rev.get("commit")
    # One entry per op/direction/dtype and bench case, the verdict on each; an op/direction/dtype
    # without a timing has one entry without a case.
    results = {}  # (op, dir, dtype) -> its entries, in bench order
    for key in list(verdicts) + [k[:3] for k in timings]:
        results.setdefault(key, [])
    for (op, d, dtype, case), figures in timings.items():
        results[(op, d, dtype)].append({"op": op, "dir": d, "dtype": dtype, "case": case, **figures})
    for key, entries in results.items():
        if not entries:
            entries.append({"op": key[0], "dir": key[1], "dtype": key[2]})
        for e in entries:
            e.update(verdicts.get(key, {}))
    bench = {"ceilings": ceilings}
    # The model beside the measurements (its shapes are the emulator's, smaller than the bench's:
    # the ratio, not the time, carries over).
    perf = pathlib.Path(os.environ.get("KILN_PERF_DIR") or pathlib.Path(__file__).resolve().parent.parent / "perf")
    model_path = pathlib.Path(__file__).resolve().parent.parent / "perf" / "model.json"
    model = json.loads(model_path.read_text())["results"] if model_path.exists() else []
    for m in model:
        for e in results.get((m["op"], m["dir"], m["dtype"]), []):
            e["model_traffic_ratio"] = round(m["traffic_ratio"], 3)
            e["model_bound_pct_of_copy"] = round(100.0 / m["traffic_ratio"], 1) if m["traffic_ratio"] > 0 else None

    def same_case(entries, shape):
        """The entries a peer row (timed at `shape`) speaks for: the one entry, else those of its shape."""
        return entries if len(entries) == 1 else [e for e in entries if e.get("shape") == shape]

    # The last run that has peer figures.
    peers = next((load_json(out / "peers.json", {}) for out in reversed(outs) if (out / "peers.json").exists()), None)
    for r in (peers or {}).get("results", []):
        key = (r["op"], r["dir"], r["dtype"])
        kiln_ms = r["kiln_ms"]
        ratios = r["ratios"]
        if kiln_ms is None:
            # A peer-only row (benches/peers/equivariant.py): kiln's time is the sum of the bench's
            # medians of the same case in the row's directions (fwd, fwd+bwd, fwd+bwd+bwd2).
            parts = r["dir"].split("+")
            timed = [same_case(results.get((r["op"], d, r["dtype"]), []), r["shape"]) for d in parts]
            medians = [t[0].get("median_us") if len(t) == 1 else None for t in timed]
            if any(m is None for m in medians):
                continue  # the bench did not time this op and case: no ratio to record
            kiln_ms = sum(medians) / 1000.0
            ratios = {k: kiln_ms / v for k, v in r["peers"].items()}
        entries = results.setdefault(key, [])
        targets = same_case(entries, r["shape"])
        if not targets:
            targets = [{"op": r["op"], "dir": r["dir"], "dtype": r["dtype"]}]
            entries.extend(targets)
        for e in targets:
            e["peer_shape"] = r["shape"]
            e["kiln_ms"] = round(kiln_ms, 4)
            if "kiln_tflops" in r:
                e["kiln_tflops"] = round(r["kiln_tflops"], 1)
            e["peer_ms"] = {k: round(v, 4) for k, v in r["peers"].items()}
            e["peers"] = {k: round(v, 3) for k, v in ratios.items()}
    latest = {
        "card": card,
        "date": date,
        "commit": rev.get("commit"),
        "kernels_tree": rev.get("kernels_tree"),
        "dirty": rev.get("dirty"),
        "ceilings": bench.get("ceilings", {}),
        "runs": [
            {"commit": r.get("commit"), "kernels_tree": r.get("kernels_tree"), "dirty": r.get("dirty"),
             "tests": test_summary(out)}
            for out, r in zip(outs, revs)
        ],
        # Sorted by op, direction and dtype; the cases of one in bench order.
        "results": sorted((e for es in results.values() for e in es), key=lambda e: (e["op"], e["dir"], e["dtype"])),
    }
    if peers is not None:
        latest["peers_env"] = peers.get("env", {})
        latest["peers_notes"] = peers.get("notes", [])
    perf.mkdir(exist_ok=True)
    (perf / "latest.json").write_text(json.dumps(latest, indent=1) + "\n")
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    lines = [f"# {card}, {date}", ""]
    for i, run in enumerate(latest["runs"], 1):
        tests = "; ".join(run["tests"]) or "no test log"
        lines.append(f"- run {i}: commit {run['commit']}, kernels tree {run['kernels_tree']}; tests: {tests}")
    lines.append("")
    lines.append(f"copy ceiling: {bench.get('ceilings', {}).get('copy_gbps', 0):.0f} GB/s")
    lines += [
        "",
        "Model columns: kiln model's traffic ratio (emulator, not measured) and the % of copy it bounds the kernel to.",
        "",
        "| op | dir | dtype | case | pass | max_err | GB/s | % copy | % copy without dparam | model ratio | model bound % copy | TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in latest["results"]:
        lines.append(
            f"| {e['op']} | {e['dir']} | {e['dtype']} | {e.get('case', '-')} | {e.get('pass', '-')} | {e.get('max_err', '-')} | "
            f"{e.get('gbps', '-')} | {e.get('pct_of_copy', '-')} | {e.get('pct_of_copy_no_dparam', '-')} | "
            f"{e.get('model_traffic_ratio', '-')} | {e.get('model_bound_pct_of_copy', '-')} | {e.get('tflops', '-')} |"
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

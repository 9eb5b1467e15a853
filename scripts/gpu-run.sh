#!/usr/bin/env bash
# Runs on the GPU machine from the bundle (scripts/gpu-bundle.sh puts it there as run.sh).
#
#   bash run.sh [STEP...]      (default: every step, in the order below)
#
# A GPU session has about 15 minutes of device time in all (shared/GPU.md), so every step runs
# under a time cap and under one deadline for the whole script (KILN_GPU_DEADLINE_S, default
# 400 s): a step that hangs or runs long costs its cap, not the session. Steps are ordered by
# what a first run must prove: the kernels against their references on the hardware, then the
# test suite, then timings, then the sanitizers and the peers.
#
# The device tool brings back at most 8 files from $OUT, so every log and JSON goes into one
# working folder, packed into $OUT/results.tar.gz after each step (a run stopped by the tool's
# limit keeps what it had). The short summary prints LAST, since only the output's tail comes
# back in the reply.
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$B/out}
W=${KILN_GPU_WORK:-/tmp/kiln-gpu}
DEADLINE_S=${KILN_GPU_DEADLINE_S:-400}
T0=$(date +%s)
rm -rf "$W"
mkdir -p "$OUT" "$W"
SUMMARY=()
ALL_STEPS="info tests-bg check check-attention bench-attention sweep-attention bench-mlp bench bench-activation ncu memcheck racecheck peers check-emu"
STEPS=${*:-$ALL_STEPS}
# A rerun narrows the steps with these (space-separated filters, as kiln and the test harness
# take them); "tests-bg" in STEPS runs the test suite in the background beside the other steps.
CHECK_FILTER=${KILN_GPU_CHECK:-activation/ glu/ norm/ padding/ equivariant/}
TEST_FILTER=${KILN_GPU_TESTS:-}
BENCH_FILTER=${KILN_GPU_BENCH:-glu/glu glu/bilinear glu/reglu glu/geglu glu/swiglu glu/atglu glu/xatglu glu/xgeglu glu/xswiglu norm/ padding/ equivariant/}
# bf16 and f32 by default: f16 runs the same code as bf16, and the host's random inputs (not the
# GPU) are what a bench row costs.
BENCH_DTYPE="--dtype ${KILN_GPU_BENCH_DTYPE:-bf16,f32}"

pack() {
  printf '%s\n' "${SUMMARY[@]}" >"$W/steps.txt"
  tar czf "$OUT/results.tar.gz.part" -C "$W" . && mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
}

# step NAME CAP_S COMMAND...: runs COMMAND with its output in $W/NAME.log, under
# min(CAP_S, what is left of the deadline less 10 s for packing and the summary).
step() {
  local name=$1 cap=$2
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  local left=$((DEADLINE_S - ($(date +%s) - T0) - 10))
  if [ "$left" -lt 5 ]; then
    SUMMARY+=("$(printf '%-16s skipped: deadline' "$name")")
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=5 "$cap" "$@" >"$W/$name.log" 2>&1
  rc=$?
  local note=""
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note=" (stopped at its ${cap} s cap)"
  SUMMARY+=("$(printf '%-16s rc=%-3s %4ss%s' "$name" "$rc" "$(($(date +%s) - t0))" "$note")")
  pack
}

# scripts/gpu-bundle.sh ships the binaries and libkiln.so xz-compressed: unpack them here.
python3 - "$B" <<'PY'
import glob, lzma, os, shutil, sys
b = sys.argv[1]
for packed in glob.glob(b + "/*.xz") + glob.glob(b + "/tests/*.xz"):
    path = packed[: -len(".xz")]
    if os.path.exists(path):
        continue
    with lzma.open(packed) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(path, 0o755)
PY

# cuBLASLt (the GLU MLP block) is loaded at run time; the image has it inside its Python
# packages (shared/GPU.md), so put those directories on the library path when ldconfig lacks it.
if ! ldconfig -p 2>/dev/null | grep -q libcublasLt; then
  for d in $(python3 -c 'import glob, site; print(" ".join(sorted({p.rsplit("/", 1)[0] for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/*/lib/libcublasLt.so*")})))' 2>/dev/null); do
    export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi
{
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "steps: $STEPS"
  echo "deadline: $DEADLINE_S s"
  uname -a
  command -v compute-sanitizer nvcc python3
} >"$W/env.txt" 2>&1
cp "$B/REVISION" "$W/REVISION"
nvidia-smi -L >"$W/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv >>"$W/nvidia-smi.txt" 2>&1
pack

K="$B/kiln"
step info 15 "$K" info
# The test suite on the GPU: every device-vs-reference test, the PTX wrappers and the 16-bit
# math against their definitions (which, with CI's emulator runs of the same tests, proves the
# emulator's fragment layouts and intrinsic models), the C ABI. The emulator's own tests, the
# model and the build tests ran in CI. "tests-bg" (the default) runs it beside the checks, which
# keep the GPU busy only lightly; every timed step waits for it (wait_tests).
SUITE="$B/tests/suite"
TEST_ARGS=(--skip model:: --skip kernels_build:: --skip emu:: $TEST_FILTER)
step tests 120 env KILN_TEST_NO_EMU=1 "$SUITE" "${TEST_ARGS[@]}"
BG=""
case " $STEPS " in *" tests-bg "*)
  BG_CAP=$((DEADLINE_S - ($(date +%s) - T0) - 15))
  (timeout --kill-after=5 "$BG_CAP" env KILN_TEST_NO_EMU=1 "$SUITE" "${TEST_ARGS[@]}" >"$W/tests.log" 2>&1
   echo "tests (background) rc=$?" >"$W/tests.rc") &
  BG=$!
esac
wait_tests() {
  if [ -n "$BG" ]; then
    wait "$BG"
    SUMMARY+=("$(cat "$W/tests.rc" 2>/dev/null || echo "tests (background): no status")")
    BG=""
    pack
  fi
}
# Every kernel against its f64 reference on the hardware (every check shape: the large ones
# exist for a GPU). Attention apart: its references at S = 1023 cost most of the host's time.
# shellcheck disable=SC2086 # the filters are words
step check 120 "$K" check --backend cuda --json "$W/check.json" $CHECK_FILTER
step check-attention 90 "$K" check --backend cuda --json "$W/check_attention.json" attention/
# Timings from here: nothing else may use the GPU.
wait_tests
# Attention's fixed cases (B·S = 16k, H·D = 2048: d128 dense and varlen, a d64 subset; full and
# causal; no bias, ALiBi, geometric ALiBi): TFLOP/s is the last column. bf16 only: f16 runs the
# same code, and the host's inputs (~100 M normals per case and direction, ~3 s a case on a
# 2-core host: 34 cases need ~2 min) are what a row costs; rows are written after every case, so
# a capped step keeps the cases it reached (d128 first; `--case` narrows them).
step bench-attention 40 "$K" bench --backend cuda --runs 20 --dtype bf16 --json "$W/bench_attention.json" attention/
# The attention kernels' tile variants, forward and backward (kiln sweep): each gated against the
# reference, then timed on the dense B=8·S=2048 bf16 cases (D 128 and 64, full and causal, no bias
# and ALiBi) in two rounds, the variant list forwards then backwards; the fastest passing one per
# case and direction is marked. 8 cases' inputs (~3 s each on the host) and ~2 s of GPU per case
# (the backward's default forward once, then its variants); rehearsed on the emulator by
# `kiln sweep --backend emu --small` (tests/suite/attention_variants.rs). It starts with the
# microbenchmarks (mma.sync, ldmatrix, L2 read: kernels/microbench.cu), the ceilings to read the
# variants against.
step sweep-attention 110 "$K" sweep --backend cuda --runs 20 --json "$W/sweep_attention.json"
# The MLP block (GEMM-bound; slow to fill with random weights on the host) once, bf16, Llama-7B.
step bench-mlp 30 "$K" bench --backend cuda --dtype bf16 --runs 10 --json "$W/bench_mlp.json" glu/mlp_swiglu
# Every memory-bound kernel at its GPU bench shape, against the measured copy bandwidth.
step bench 90 "$K" bench --backend cuda --runs 20 $BENCH_DTYPE --json "$W/bench.json" $BENCH_FILTER
step bench-activation 80 "$K" bench --backend cuda --runs 20 $BENCH_DTYPE --json "$W/bench_activation.json" activation/
# Nsight Compute on one launch of each op's main kernel (after the bench's warm-up launches):
# duration, DRAM throughput, occupancy, eligible warps: what a bench figure alone cannot say.
NCU_OPS=${KILN_GPU_NCU:-norm/layernorm norm/rmsnorm glu/swiglu activation/gelu padding/unpad attention/alibi}
ncu_ops() {
  for op in $NCU_OPS; do
    echo "==== $op"
    # One named case of an op that has several (attention: 34 of them, seconds of host inputs each).
    local cases=()
    case $op in attention/*) cases=(--case "B8xS2048xH16xD128 full nobias") ;; esac
    # Norms: the forward's and the backward's kernels each (issue 24 rebuilt both).
    local kernels=("")
    case $op in norm/*) kernels=("regex:fwd_" "regex:bwd_") ;; esac
    for k in "${kernels[@]}"; do
      ncu --clock-control none ${k:+--kernel-name "$k"} --launch-skip 3 --launch-count 2 --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section SchedulerStats \
        "$K" bench --backend cuda --runs 2 --dtype bf16 "${cases[@]}" "$op" 2>&1
    done
  done
}
if command -v ncu >/dev/null; then
  export -f ncu_ops
  export K NCU_OPS
  step ncu 90 bash -c ncu_ops
fi
if command -v compute-sanitizer >/dev/null; then
  step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$K" check --backend cuda --max-elements 5000 --seed 1
  step racecheck 40 compute-sanitizer --tool racecheck --error-exitcode 9 "$K" check --backend cuda --max-elements 5000 --dtype f32 --seed 1
else
  SUMMARY+=("compute-sanitizer not found")
fi
# kiln against PyTorch (benches/peers): the Python package on libkiln.so, the same tensors for
# every peer, CUDA events; kiln/peer ratios into peers.json (scripts/perf-record.py reads it).
if [ -f "$B/libkiln.so" ]; then
  step peers 150 env KILN_LIBRARY="$B/libkiln.so" PYTHONUNBUFFERED=1 python3 "$B/peers/run.py" --out "$W/peers.json" --budget-s 100
fi
# The emulator on this machine's 16 cores, same kernels, fixed seed (CI runs it on every commit).
step check-emu 60 "$K" check --backend emu --seed 1 --json "$W/check_emu.json"

wait_tests

echo "==== $(head -n 1 "$W/nvidia-smi.txt")"
cat "$B/REVISION"
echo "==== failing checks (first 30)"
grep -h "FAIL" "$W"/check*.log 2>/dev/null | head -n 30
grep -h "passed" "$W"/check*.log 2>/dev/null
grep -h "test result\|panicked\|^    [a-z_]*::" "$W/tests.log" 2>/dev/null | head -n 20
echo "==== sanitizer"
grep -h "ERROR SUMMARY" "$W/memcheck.log" "$W/racecheck.log" 2>/dev/null
grep -h -m 3 -A 4 "Invalid\|Race" "$W/memcheck.log" "$W/racecheck.log" 2>/dev/null | head -n 20
echo "==== ncu (kernel: duration, DRAM %, achieved occupancy)"
grep -E "^==== |^  [A-Za-z_].*\(|Duration|DRAM Throughput|Achieved Occupancy" "$W/ncu.log" 2>/dev/null | cut -c1-110 | head -n 40
echo "==== bench (op dir dtype case variant GB/s %copy TFLOP/s)"
python3 - "$W/bench_attention.json" "$W/bench_mlp.json" "$W/bench.json" "$W/bench_activation.json" <<'PY'
import json, os, sys
for path in sys.argv[1:]:
    if not os.path.exists(path):
        print("missing", os.path.basename(path))
        continue
    d = json.load(open(path))
    print(f"{os.path.basename(path)}: copy {d['ceilings']['copy_gbps']:.0f} GB/s, {len(d['results'])} rows")
    rows = d["results"] if "attention" in path or "mlp" in path else [r for r in d["results"] if r["dtype"] == "bf16"][:25]
    for r in rows:
        print(r["op"], r["dir"], r["dtype"], f"[{r.get('case', '-')}]", r["variant"] or "-", f"{r['gbps']:.0f}GB/s",
              f"{r['pct_of_copy']:.1f}%", f"{r['tflops']:.1f}TF")
PY
echo "==== sweep-attention (the fastest passing variant of each case; variant 0 is the default)"
python3 - "$W/sweep_attention.json" <<'PY' 2>&1 | tail -n 21
import json, os, sys
if not os.path.exists(sys.argv[1]):
    sys.exit("missing sweep_attention.json")
d = json.load(open(sys.argv[1]))
for m in d.get("micro", []):
    print(f"{m['name']}: {m['value']:.1f} {m['unit']} (checksum {'PASS' if m['pass'] else 'FAIL'})")
rows = d["rows"]
failed = [f"{r['case']} {r.get('dir', 'fwd')} v{r['variant']}" for r in rows if not r["pass"]]
default = {(r["case"], r.get("dir", "fwd")): r for r in rows if r["variant"] == 0}
for r in rows:
    if r["best"]:
        key = (r["case"], r.get("dir", "fwd"))
        print(f"{key[0]} {key[1]}: v{r['variant']} {r['name']} {r['tflops']:.0f} TF (default {default[key]['tflops']:.0f} TF)")
if failed:
    print("FAILED gates:", " ".join(failed))
PY
echo "==== peers (op dir dtype kiln-ms kiln/peer; < 1: kiln faster)"
python3 - "$W/peers.json" <<'PY' 2>&1 | tail -n 15
import json, os, sys
if not os.path.exists(sys.argv[1]):
    sys.exit("missing peers.json")
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    if r["kiln_ms"] is None:  # peer-only rows: kiln's time is in the bench (perf-record.py divides)
        print(r["op"], r["dir"], r["dtype"], "kiln: bench", " ".join(f"{k}={v:.3f}ms" for k, v in r["peers"].items()))
        continue
    print(r["op"], r["dir"], r["dtype"], f"{r['kiln_ms']:.3f}", " ".join(f"{k}={v:.2f}" for k, v in r["ratios"].items()))
for n in d["notes"][:5]:
    print("note:", n[:160])
PY
echo "==== steps ($(($(date +%s) - T0)) s)"
printf '%s\n' "${SUMMARY[@]}"
pack

#!/usr/bin/env bash
# Runs on the GPU machine from the bundle (scripts/gpu-bundle.sh puts it there as run.sh).
# Full logs and JSON go to $OUT; a short summary prints LAST, since only the tail of the
# output comes back. Order (shared/GPU.md): device, GPU tests, check, memcheck, racecheck,
# bench with the measured copy ceiling, the peer benchmarks (kiln against PyTorch).
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$B/out}
mkdir -p "$OUT"
SUMMARY=()

# scripts/gpu-bundle.sh ships the binaries and libkiln.so xz-compressed: unpack them here.
python3 - "$B" <<'PY'
import glob, lzma, os, shutil, sys
b = sys.argv[1]
for packed in glob.glob(b + "/*.xz") + glob.glob(b + "/tests/*.xz"):
    path = packed[: -len(".xz")]
    with lzma.open(packed) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(path, 0o755)
PY

step() {
  local name=$1
  shift
  local t0
  t0=$(date +%s)
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  SUMMARY+=("$(printf '%-28s rc=%-3s %5ss' "$name" "$rc" "$(($(date +%s) - t0))")")
}

# cuBLASLt (the GLU MLP block) is loaded at run time; the image has it inside its Python
# packages (shared/GPU.md), so put those directories on the library path when ldconfig lacks it.
if ! ldconfig -p 2>/dev/null | grep -q libcublasLt; then
  for d in $(python3 -c 'import glob, site; print(" ".join(sorted({p.rsplit("/", 1)[0] for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/*/lib/libcublasLt.so*")})))' 2>/dev/null); do
    export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >"$OUT/env.txt"
cp "$B/REVISION" "$OUT/REVISION"
nvidia-smi -L >"$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv >>"$OUT/nvidia-smi.txt" 2>&1
step info "$B/kiln" info
for t in "$B"/tests/*; do
  case "$t" in *.xz) continue ;; esac
  step "test-$(basename "$t")" "$t" --nocapture
done
step check "$B/kiln" check --backend cuda --json "$OUT/check.json"
# The same kernels on the emulator, same seed: a kernel that passes on one and fails on the other
# points at the emulator's model (or a hardware-only effect) rather than the kernel.
step check-emu "$B/kiln" check --backend emu --seed 1 --json "$OUT/check_emu.json"
if command -v compute-sanitizer >/dev/null; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 9 "$B/kiln" check --backend cuda --max-elements 5000
  step racecheck compute-sanitizer --tool racecheck --error-exitcode 9 "$B/kiln" check --backend cuda --max-elements 5000 --dtype f32
else
  SUMMARY+=("compute-sanitizer not found")
fi
# Every memory-bound kernel at its issue's size; the MLP block (GEMM-bound, and slow to fill
# with random weights on the host) once, in bf16, at Llama-7B's shape.
step bench "$B/kiln" bench --backend cuda --json "$OUT/bench.json" activation/ padding/ norm/ \
  glu/glu glu/bilinear glu/reglu glu/geglu glu/swiglu glu/atglu glu/xatglu glu/xgeglu glu/xswiglu
step bench-mlp "$B/kiln" bench --backend cuda --dtype bf16 --runs 10 --json "$OUT/bench_mlp.json" glu/mlp_swiglu
# Attention at the issue's shape (B·S = 16k, H·D = 2048, d128): TFLOP/s is the last column.
step bench-attention "$B/kiln" bench --backend cuda --runs 20 --json "$OUT/bench_attention.json" attention/

# kiln against PyTorch (benches/peers): the Python package on libkiln.so, the same tensors for
# every peer, CUDA events; kiln/peer ratios into peers.json (scripts/perf-record.py reads it).
if [ -f "$B/libkiln.so" ]; then
  step peers env KILN_LIBRARY="$B/libkiln.so" timeout 300 python3 "$B/peers/run.py" --out "$OUT/peers.json" --budget-s 150
else
  SUMMARY+=("peers: no libkiln.so in the bundle")
fi

echo "==== $(head -n 1 "$OUT/nvidia-smi.txt")"
cat "$B/REVISION"
echo "==== failing checks (first 30)"
grep -h "FAIL" "$OUT/check.log" | head -n 30
grep -h "passed" "$OUT/check.log" | tail -n 1
grep -h "FAIL" "$OUT/check-emu.log" | head -n 10
grep -h "passed" "$OUT/check-emu.log" | tail -n 1
for t in "$OUT"/test-*.log; do grep -H "test result" "$t" | tail -n 1; done
echo "==== sanitizer"
grep -h "ERROR SUMMARY" "$OUT/memcheck.log" "$OUT/racecheck.log" 2>/dev/null
echo "==== bench (op dir dtype variant GB/s %copy)"
python3 - "$OUT/bench.json" "$OUT/bench_mlp.json" <<'PY' || tail -n 5 "$OUT/bench.log"
import json, os, sys
for path in sys.argv[1:]:
    if not os.path.exists(path):
        print("missing", path)
        continue
    d = json.load(open(path))
    print(f"copy {d['ceilings']['copy_gbps']:.0f} GB/s")
    for r in d["results"]:
        print(r["op"], r["dir"], r["dtype"], r["variant"] or "-", f"{r['gbps']:.0f}GB/s", f"{r['pct_of_copy']:.1f}%", f"{r['tflops']:.1f}TF")
PY
echo "==== peers (op dir dtype kiln-ms kiln/peer; < 1: kiln faster)"
python3 - "$OUT/peers.json" <<'PY' || tail -n 5 "$OUT/peers.log"
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    print(r["op"], r["dir"], r["dtype"], f"{r['kiln_ms']:.3f}", " ".join(f"{k}={v:.2f}" for k, v in r["ratios"].items()))
for n in d["notes"][:8]:
    print("note:", n[:160])
PY
echo "==== steps"
printf '%s\n' "${SUMMARY[@]}"

#!/usr/bin/env bash
# Line, branch and loop coverage of the kernel sources (kernels/*.cu, kernels/common/*.cuh,
# kernels/equivariant/*.cuh) from the emulator's tests, with the gate of scripts/coverage.py:
# every executable kernel line ran, and every loop ran two iterations in one entry in some test,
# unless kernels/coverage-exemptions.txt says why not.
#
#   scripts/coverage.sh [--features F] [--filter TEXT] [--jobs N] [-- coverage.py options]
#
# --features   the cargo features of the build (default `emu`; `cuda,emu` reuses the build of
#              test.sh's `KILN_EMU_COVERAGE=1 cargo test --features cuda,emu` step)
# --filter     run only the suite's tests whose name contains TEXT (the gate then fails on
#              what they leave uncovered; add `-- --no-check` to only read the report)
# --jobs       test processes at once (default: the CPU count)
#
# 1. builds the suite with KILN_EMU_COVERAGE=1 (build/emu.rs: the kernel objects get gcc's
#    --coverage; CARGO_TARGET_DIR is honoured);
# 2. runs every test of tests/suite in a process of its own, each writing its counts to
#    $target/kernel-coverage/runs/<n>/ (GCOV_PREFIX): the loop gate needs one test's counts at
#    a time (see scripts/coverage.py), and separate processes are also faster here, since the
#    emulator runs one launch at a time per process;
# 3. scripts/coverage.py merges the runs, runs gcov, prints the per-file table and fails on what
#    is neither covered nor exempt. The report is also in $target/kernel-coverage/coverage.json.
set -euo pipefail
cd "$(dirname "$0")/.."

features=emu
filter=
jobs=$(nproc 2>/dev/null || echo 2)
while [ $# -gt 0 ]; do
  case "$1" in
    --features) features=$2; shift 2 ;;
    --filter) filter=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "coverage.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for tool in gcov gcov-tool python3; do
  command -v "$tool" >/dev/null || { echo "coverage.sh: $tool not found (gcc 12's gcov and gcov-tool)" >&2; exit 2; }
done

export KILN_EMU_COVERAGE=1
target_dir="$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"
work="$target_dir/kernel-coverage"
mkdir -p "$work"

echo "== coverage: cargo test --no-run --features $features --test suite (KILN_EMU_COVERAGE=1)"
cargo test --quiet --no-run --features "$features" --test suite --message-format=json-render-diagnostics \
  >"$work/cargo.json"
# The suite's executable and the kiln build script's OUT_DIR (the objects' .gcno are in its emu/).
read -r bin out_dir < <(python3 - "$work/cargo.json" <<'EOF'
import json, os, sys
exe = out = None
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "suite" and m.get("executable"):
        exe = m["executable"]
    elif m.get("reason") == "build-script-executed":
        # target/<profile>/build/kiln-<hash>/out
        if os.path.basename(os.path.dirname(m["out_dir"])).startswith("kiln-"):
            out = m["out_dir"]
if not exe or not out:
    sys.exit("coverage.sh: cargo named no suite executable or kiln build script")
print(exe, out)
EOF
)
objdir="$out_dir/emu"
if ! ls "$objdir"/*.gcno >/dev/null 2>&1; then
  echo "coverage.sh: no .gcno in $objdir: the build did not see KILN_EMU_COVERAGE=1" >&2
  exit 1
fi

runs="$work/runs"
rm -rf "$runs"
mkdir -p "$runs"
"$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p' | { grep -F -- "$filter" || true; } >"$work/tests.txt"
count=$(wc -l <"$work/tests.txt")
if [ "$count" = 0 ]; then
  echo "coverage.sh: no test matches '$filter'" >&2
  exit 1
fi
# GCOV_PREFIX_STRIP drops the object directory's components from each .gcda path, so a test's
# counts land directly in its run directory.
strip=$(printf '%s' "$objdir" | tr -cd / | wc -c)
echo "== coverage: $count tests, each in its own process, $jobs at a time"
start=$(date +%s)
export bin runs strip
# shellcheck disable=SC2016
nl -ba -w1 -s' ' "$work/tests.txt" | xargs -P "$jobs" -L 1 bash -c '
  n=$0; name=$1
  mkdir -p "$runs/$n"
  printf "%s\n" "$name" >"$runs/$n/name"
  if ! GCOV_PREFIX="$runs/$n" GCOV_PREFIX_STRIP="$strip" "$bin" --exact "$name" >"$runs/$n/log" 2>&1; then
    echo "FAILED: $name (log: $runs/$n/log)"
    tail -n 30 "$runs/$n/log"
    exit 1
  fi' || {
  echo "coverage.sh: a test failed (above); no coverage is reported without every test" >&2
  exit 1
}
echo "== coverage: tests ran in $(($(date +%s) - start)) s; gcov and the gate (scripts/coverage.py)"
python3 scripts/coverage.py "$objdir" "$runs" --json "$work/coverage.json" "$@"

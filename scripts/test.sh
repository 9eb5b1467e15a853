#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it). Installs what a fresh machine
# lacks (the pinned CUDA compiler and headers, libclang for the FFI drift test), then runs
# every test without a backend and with both (`cuda`: GPU tests skip without a device; `emu`:
# every kernel runs on the emulator in checked mode; tests/fuzz.rs among them), the kernel line
# coverage gate, `kiln check` on the emulator, and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints its name and, when it ends, how long it took (the CI limit is 20 minutes).
step_name=
step_start=$SECONDS
step() {
  if [ -n "$step_name" ]; then echo "   ($((SECONDS - step_start)) s)"; fi
  step_name=$1
  step_start=$SECONDS
  echo "== $1"
}

target_dir="$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"
# A kernel compiler's warning fails the build (build.rs): a fresh clone's first build is silent.
# Exported for every step, so that no step's build script sees another environment and
# compiles every kernel again.
export KILN_DENY_WARNINGS=1

step "install what a fresh machine lacks (scripts/install-cuda.sh, libclang)"
scripts/install-cuda.sh

# libclang: bindgen loads it at run time for tests/abi.rs (src/bindings/ffi.rs drift check).
if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing libclang-dev for the FFI drift test"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
  else
    echo "test.sh: libclang not found and cannot install it: the FFI drift test will skip" >&2
  fi
fi

step "cargo test (CPU references, no kernel backend)"
cargo test --quiet
# Both libraries in one binary, as the GPU bundle links them: the nvcc build (every kernel for
# sm_80/sm_90a, ptxas report checked) and the emulated one, on which every family's
# device-vs-reference tests and the emulator's planted-bug tests run in checked mode.
# tests/suite (every kernel against its reference) runs once, in the coverage step below, which
# fails on any failing test; every other test target runs here.
step "cargo test --features cuda,emu, all but tests/suite (kernels on the emulator, checked and coverage-instrumented; GPU tests skip without a device)"
other_tests=()
for file in tests/*.rs; do
  name=$(basename "$file" .rs)
  [ "$name" = suite ] || other_tests+=(--test "$name")
done
KILN_EMU_COVERAGE=1 KILN_REQUIRE_SASS=1 cargo test --quiet --features cuda,emu --lib --bins "${other_tests[@]}"
KILN_EMU_COVERAGE=1 KILN_REQUIRE_SASS=1 cargo test --quiet --features cuda,emu --doc
# The same instrumented build runs tests/suite, each test in its own process (a loop's iterations
# per entry are only provable per test; the emulator runs one launch at a time per process, so
# two processes also halve the time): every test passes, every kernel line executed and every
# input-sized loop run twice, except what kernels/coverage-exemptions.txt lists with a reason.
step "tests/suite and the kernel coverage gate (scripts/coverage.sh: gcov and kernels/coverage-exemptions.txt)"
KILN_REQUIRE_SASS=1 scripts/coverage.sh --features cuda,emu
# The kiln binary of the test step (both features; see the model step below for why not `cargo
# run`): a release build only for this would compile every emulated kernel a third time (~110 s
# of a fresh machine's 20-minute budget) to save ~50 s of unoptimised host code.
step "kiln check --backend emu (every op, every direction and dtype, against its reference)"
"$target_dir/debug/kiln" check --backend emu >target/check-emu.log 2>&1 || {
  grep -E "FAIL|error" target/check-emu.log | head -n 40
  tail -n 5 target/check-emu.log
  exit 1
}
tail -n 1 target/check-emu.log
step "kiln model (the emulator's traffic model for every op, bf16)"
# The kiln binary of the test step (both features: the model then has nvcc's ptxas report for
# its occupancy column; the emulated kernels are compiled with -O2 in every profile), run
# directly: `cargo run` resolves the dev-dependencies differently from `cargo test`, keeps its own
# copy of the build script's output and would compile every kernel again.
"$target_dir/debug/kiln" model --dtype bf16 --seed 1 >target/model.log 2>&1 || {
  tail -n 20 target/model.log
  exit 1
}
echo "kiln model: $(grep -c ' bf16 ' target/model.log) op/direction rows, $(grep -c '%$' target/model.log) with an sm_90 occupancy"
# The shared libraries (build/shared.rs) the cuda,emu test build left in target/debug: the
# emulated one (checked mode, the same kernels; its coverage counters are written after the
# gate has read them) and the CUDA one. A venv of its own keeps
# pip away from the system Python (PEP 668); torch is not on it (PyPI has no CUDA-free wheel), so
# tests/python/test_torch.py skips here and runs where torch is installed.
step "tests/python (shared library symbols, the C example, the Python package on the emulated library)"
if [ ! -x target/python-venv/bin/python ]; then
  python3 -m venv target/python-venv
fi
target/python-venv/bin/python -m pip install -q --disable-pip-version-check numpy pytest ml_dtypes
target/python-venv/bin/python -m pip install -q --disable-pip-version-check -e python
python3 scripts/python-abi.py --check
KILN_LIBRARY="$target_dir/debug/libkiln_emu.so" KILN_CUDA_LIBRARY="$target_dir/debug/libkiln.so" \
  target/python-venv/bin/python -m pytest -q -p no:cacheprovider tests/python
step "cargo clippy --all-targets [--all-features] -- -D warnings"
cargo clippy --quiet --all-targets --all-features -- -D warnings
cargo clippy --quiet --all-targets -- -D warnings
step done
echo "test.sh: all passed in $SECONDS s"

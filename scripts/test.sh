#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it). Installs what a fresh machine
# lacks (the pinned CUDA compiler, libclang for the FFI drift test), then runs every test
# without and with the `cuda` feature (GPU tests skip without a device) and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-cuda.sh

# libclang: bindgen loads it at run time for tests/abi.rs (src/ffi.rs drift check).
if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing libclang-dev for the FFI drift test"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
  else
    echo "test.sh: libclang not found and cannot install it: the FFI drift test will skip" >&2
  fi
fi

echo "== cargo test (CPU references, no cuda feature)"
cargo test --quiet
echo "== cargo test --features cuda (kernels compiled; GPU tests skip without a device)"
cargo test --quiet --features cuda
echo "== cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --quiet --all-targets --all-features -- -D warnings
echo "test.sh: all passed"

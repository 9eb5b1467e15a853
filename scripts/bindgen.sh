#!/usr/bin/env bash
# Regenerates src/bindings/ffi.rs and src/bindings/ffi_selftest.rs from kernels/include/kiln.h and kiln_selftest.h
# (needs libclang: apt-get install libclang-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
BLESS=1 cargo test --quiet --test abi
echo "src/bindings/ffi.rs, src/bindings/ffi_selftest.rs regenerated from kernels/include/"

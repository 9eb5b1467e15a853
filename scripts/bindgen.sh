#!/usr/bin/env bash
# Regenerates src/ffi.rs and src/ffi_selftest.rs from kernels/include/kiln.h and kiln_selftest.h
# (needs libclang: apt-get install libclang-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
BLESS=1 cargo test --quiet --test abi
echo "src/ffi.rs, src/ffi_selftest.rs regenerated from kernels/include/"

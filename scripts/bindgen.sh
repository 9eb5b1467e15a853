#!/usr/bin/env bash
# Regenerates src/ffi.rs from kernels/include/kiln.h (needs libclang: apt-get install libclang-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
BLESS=1 cargo test --quiet --test abi
echo "src/ffi.rs regenerated from kernels/include/kiln.h"

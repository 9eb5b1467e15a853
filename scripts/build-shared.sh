#!/usr/bin/env bash
# Builds kiln's shared libraries of the C ABI (build/shared.rs) and puts them beside the Python
# package (python/kiln/), where `import kiln` finds them (`pip install -e python`):
#   libkiln.so      the CUDA build (nvcc; static CUDA runtime inside, needs only the driver)
#   libkiln_emu.so  the emulated build (kiln's CUDA emulator on the CPU; host pointers)
# usage: scripts/build-shared.sh [--emu-only] [--debug]
# --emu-only skips the CUDA build (nvcc compiles every kernel: minutes on a small machine).
set -euo pipefail
cd "$(dirname "$0")/.."
features=cuda,emu
profile=release
for arg in "$@"; do
  case "$arg" in
    --emu-only) features=emu ;;
    --debug) profile=debug ;;
    *) echo "usage: scripts/build-shared.sh [--emu-only] [--debug]" >&2; exit 2 ;;
  esac
done
scripts/install-cuda.sh >/dev/null
target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then
  cargo build --quiet --release --features "$features" --bin kiln
else
  cargo build --quiet --features "$features" --bin kiln
fi
libs=(libkiln_emu.so)
[ "$features" = cuda,emu ] && libs=(libkiln.so libkiln_emu.so)
for lib in "${libs[@]}"; do
  cp "$target/$profile/$lib" "python/kiln/$lib.tmp" && mv "python/kiln/$lib.tmp" "python/kiln/$lib"
  echo "build-shared: $target/$profile/$lib -> python/kiln/$lib"
done
echo "build-shared: C: #include \"kiln.h\" (-Ikernels/include), link -L$target/$profile -lkiln[_emu]; Python: pip install -e python"

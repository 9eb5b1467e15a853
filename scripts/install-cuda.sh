#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, cicc, headers, static runtime) from
# NVIDIA's PyPI wheels into .cuda/ (git-ignored), where build.rs finds it, and the pinned
# cuobjdump/nvdisasm into .cuda-sass/ (SASS checks). Idempotent: a second run only checks the
# markers and returns. No GPU and no nvidia-smi needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned in shared/DESIGN.md: PTX newer than the GPU machines' driver (580 era) would not JIT.
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
)
DEST=.cuda
MARKER="$DEST/.installed"
NVCC="$DEST/nvidia/cu13/bin/nvcc"

# SASS inspection (src/tools/sass.rs): no 13.0 wheels of cuobjdump/nvdisasm exist; the earliest,
# 13.2.51, disassemble the 13.0 toolchain's cubins. Kept apart so that neither install
# replaces the other.
SASS_PACKAGES=(
  nvidia-cuda-cuobjdump==13.2.51
  nvidia-cuda-nvdisasm==13.2.51
)
SASS_DEST=.cuda-sass
SASS_MARKER="$SASS_DEST/.installed"
CUOBJDUMP="$SASS_DEST/nvidia/cu13/bin/cuobjdump"

PYTHON=$(command -v python3 || command -v python || true)
install() {  # install DEST MARKER CHECK-COMMAND PACKAGES...
  local dest=$1 marker=$2 check=$3
  shift 3
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$*" ] && $check >/dev/null 2>&1; then
    echo "install-cuda: $dest already holds $*"
    return
  fi
  if [ -z "$PYTHON" ]; then
    echo "install-cuda: needs python3 with pip to fetch the CUDA wheels" >&2
    exit 1
  fi
  rm -rf "$dest"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$dest" "$@"
  echo "$*" > "$marker"
  echo "install-cuda: installed $* into $dest"
}

install "$DEST" "$MARKER" "$NVCC --version" "${PACKAGES[@]}"
install "$SASS_DEST" "$SASS_MARKER" "$CUOBJDUMP --version" "${SASS_PACKAGES[@]}"
"$NVCC" --version | tail -n 1

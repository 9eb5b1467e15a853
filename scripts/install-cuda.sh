#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, cicc, headers, static runtime) from
# NVIDIA's PyPI wheels into .cuda/ (git-ignored), where build.rs finds it. Idempotent: a
# second run only checks the marker and returns. No GPU and no nvidia-smi needed.
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

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "${PACKAGES[*]}" ] && "$NVCC" --version >/dev/null 2>&1; then
  echo "install-cuda: pinned CUDA compiler already in $DEST"
  exit 0
fi

PYTHON=$(command -v python3 || command -v python || true)
if [ -z "$PYTHON" ]; then
  echo "install-cuda: needs python3 with pip to fetch the CUDA wheels" >&2
  exit 1
fi
rm -rf "$DEST"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$DEST" "${PACKAGES[@]}"
"$NVCC" --version | tail -n 1
echo "${PACKAGES[*]}" > "$MARKER"
echo "install-cuda: installed into $DEST"

#!/usr/bin/env bash
# Builds everything a GPU session runs (shared/GPU.md) into target/gpu-bundle/: the kiln
# CLI and every integration-test binary, release, --features cuda,emu (the emulated kernels
# beside the real ones, so the GPU run also checks the emulator against the hardware), stripped,
# plus run.sh and the revision they were built from. The GPU machine has no Rust toolchain.
# Then: run(command="bash target/gpu-bundle/run.sh", carry=["target/gpu-bundle"]).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-cuda.sh >/dev/null

BUNDLE=target/gpu-bundle
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/tests"

cargo build --quiet --release --features cuda,emu --bin kiln
cp target/release/kiln "$BUNDLE/kiln"
# Every integration test but abi (needs this checkout and libclang) and cli (needs cargo's
# path to the kiln binary): both test host-side things that the GPU machine adds nothing to.
cargo test --quiet --release --features cuda,emu --no-run --message-format=json 2>/dev/null | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        if m["target"]["name"] not in ("abi", "cli"):
            shutil.copy(m["executable"], sys.argv[1] + "/tests/" + m["target"]["name"])
' "$BUNDLE"
strip "$BUNDLE/kiln" "$BUNDLE"/tests/*
# The peer benchmarks (benches/peers) drive kiln from Python: the CUDA shared library the release
# build above linked (build/shared.rs), the Python package and the scripts. The library is mostly
# uncompressed fatbins, so it travels xz-compressed (13 MiB -> 2 MiB) and run.sh unpacks it.
strip --strip-unneeded -o "$BUNDLE/libkiln.so" "${CARGO_TARGET_DIR:-target}/release/libkiln.so"
python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], "rb"), lzma.open(sys.argv[2], "wb"))' \
  "$BUNDLE/libkiln.so" "$BUNDLE/libkiln.so.xz"
rm "$BUNDLE/libkiln.so"
mkdir -p "$BUNDLE/python/kiln" "$BUNDLE/peers"
cp python/kiln/*.py "$BUNDLE/python/kiln/"
cp benches/peers/*.py "$BUNDLE/peers/"
# The binaries are mostly fatbins, which xz shrinks ~5x: they travel compressed (the device tool
# carries at most 64 MiB) and run.sh unpacks them first.
python3 - "$BUNDLE/kiln" "$BUNDLE"/tests/* <<'PY'
import lzma, os, shutil, sys
for path in sys.argv[1:]:
    with open(path, "rb") as src, lzma.open(path + ".xz", "wb", preset=6) as dst:
        shutil.copyfileobj(src, dst)
    os.remove(path)
PY
cp scripts/gpu-run.sh "$BUNDLE/run.sh"
{
  echo "commit $(git rev-parse HEAD)"
  echo "kernels_tree $(git rev-parse HEAD:kernels)"
  if [ -n "$(git status --porcelain -- kernels src build build.rs Cargo.toml python benches/peers)" ]; then echo "dirty yes"; else echo "dirty no"; fi
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$BUNDLE/REVISION"
size=$(du -sm "$BUNDLE" | cut -f1)
echo "gpu-bundle: $BUNDLE, ${size} MiB ($(ls "$BUNDLE/tests" | wc -l) test binaries)"
if [ "$size" -gt 48 ]; then
  echo "gpu-bundle: over the 48 MiB limit" >&2
  exit 1
fi

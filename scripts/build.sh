#!/usr/bin/env bash
# build.sh - configure and build svdslice into build/ (Release; GPU backends when a CUDA toolkit is found).
# Extra arguments go to cmake's configure step, e.g. scripts/build.sh -DSVDSLICE_CUDA=OFF
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), TARGET (default all).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
# CUDA lives outside PATH on a stock toolkit install.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@"
cmake --build "$BUILD_DIR" -j"$(nproc)" ${TARGET:+--target "$TARGET"}
echo "build.sh: the executable is $BUILD_DIR/svdslice"

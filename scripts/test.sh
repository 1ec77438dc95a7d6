#!/usr/bin/env bash
# test.sh - Quick start: install what is missing, build, and run every test (unit, CLI, HTTP, browser),
# then the same suite again under ASan + UBSan. SKIP_SANITIZE=1 skips the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
if [ -f tests/browser/package.json ]; then
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error)
fi
# Prism for tests/http/test_openapi_prism.py, which skips (says so) when it is missing.
(cd tests/openapi && npm install --no-audit --no-fund --loglevel=error) ||
  echo "test.sh: npm install in tests/openapi failed; the Prism test will be skipped"
jobs=$(nproc)

echo "== Release build (GPU backends when the CUDA toolkit is present) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== ASan + UBSan build, whole suite =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSVDSLICE_SANITIZE=ON -DSVDSLICE_CUDA=OFF
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi

#!/usr/bin/env bash
# test.sh - Quick start: install what is missing and run every test, in this order:
#   1. the build and unit-test packages, a Release build, the unit tests (ctest -L unit):
#      these need nothing but Debian's archive;
#   2. the tools of the later tests: Python libraries, Chromium, Node and npm, then the npm
#      packages of tests/browser and tests/openapi; one that cannot be had is reported, and the
#      tests that need it fail (the Prism test skips) saying what is missing;
#   3. the CLI, HTTP, browser and GPU tests (the GPU ones skip without a GPU);
#   4. the image test (scripts/image_test.sh) when podman is installed and we are root;
#   5. the whole suite again, built with ASan + UBSan;
#   6. the tests that run threads against each other, built with ThreadSanitizer.
# SKIP_SANITIZE=1 skips 5 and 6, IMAGE_TEST=0 skips 4. Exit status 0 only when every stage passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
jobs=$(nproc)
failed=()
notes=()

say() { printf '== %s (%dm%02ds) ==\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }
note() { echo "test.sh: $*" >&2; notes+=("$*"); }

say "1. packages to build and unit test"
scripts/setup.sh unit
say "1. Release build (GPU backends when the CUDA toolkit is present)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON
cmake --build build -j"$jobs"
say "1. unit tests"
ctest --test-dir build -L unit --output-on-failure -j"$jobs" || failed+=("unit tests")

say "2. tools for the CLI, HTTP and browser tests"
scripts/setup.sh test || note "the CLI/HTTP tests' Python libraries could not be installed (setup.sh test)"
scripts/setup.sh browser || note "Chromium, Node or npm could not be installed (setup.sh browser)"
if ! command -v node >/dev/null 2>&1; then
  note "no node: the browser tests cannot run"
elif ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then
  note "node $(node --version) is older than 18, which the browser tests need"
fi
if ! command -v npm >/dev/null 2>&1; then
  note "no npm: tests/browser's packages cannot be installed"
elif ! (cd tests/browser && timeout 600 npm install --no-audit --no-fund --loglevel=error); then
  note "npm install in tests/browser failed (is the npm registry reachable?): the browser tests will fail"
fi
# Prism for tests/http/test_openapi_prism.py, which skips (says so) when it is missing.
if command -v npm >/dev/null 2>&1 &&
   ! (cd tests/openapi && timeout 600 npm install --no-audit --no-fund --loglevel=error); then
  note "npm install in tests/openapi failed: the Prism test will be skipped"
fi

say "3. CLI, HTTP, browser and GPU tests"
# Configure again: python3 and node may have been installed since the first configure.
if cmake -S . -B build >/dev/null && cmake --build build -j"$jobs"; then
  ctest --test-dir build -LE unit --output-on-failure -j"$jobs" || failed+=("CLI/HTTP/browser/GPU tests")
else
  failed+=("CLI/HTTP/browser/GPU tests (configure)")
fi

if [ "${IMAGE_TEST:-1}" = 0 ]; then
  say "4. image test: skipped (IMAGE_TEST=0)"
elif ! command -v podman >/dev/null 2>&1; then
  say "4. image test: skipped (podman is not installed; apt-get install podman, then scripts/image_test.sh)"
elif [ "$(id -u)" -ne 0 ]; then
  say "4. image test: skipped (needs root to mount and chroot into the image)"
elif [ -z "${IMAGE_BASE:-}" ] && ! command -v debootstrap >/dev/null 2>&1 &&
     ! podman image exists localhost/svdslice-base:bookworm-minbase; then
  say "4. image test: skipped (no base image: apt-get install debootstrap, or set IMAGE_BASE=debian:12-slim)"
else
  say "4. image test (scripts/image_test.sh)"
  scripts/image_test.sh || failed+=("image test")
fi

if [ "${SKIP_SANITIZE:-0}" != 1 ]; then
  say "5. ASan + UBSan build, whole suite"
  if cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSVDSLICE_SANITIZE=ON -DSVDSLICE_CUDA=OFF \
       -DBUILD_TESTING=ON && cmake --build build-asan -j"$jobs"; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --test-dir build-asan --output-on-failure -j"$jobs" || failed+=("ASan+UBSan suite")
  else
    failed+=("ASan+UBSan build")
  fi
  say "6. ThreadSanitizer build, the concurrent tests"
  # One OpenBLAS thread: its own pool is not instrumented and would be reported as racing.
  # One test at a time: TSan slows threads ~10x, and the HTTP tests' deadlines assume a core each.
  if cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSVDSLICE_TSAN=ON -DSVDSLICE_CUDA=OFF \
       -DBUILD_TESTING=ON && cmake --build build-tsan -j"$jobs"; then
    OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      ctest --test-dir build-tsan --output-on-failure \
        -R '^(test_gpuq|test_respcache|test_store|test_store_faults|test_kernels|http_test_concurrency|http_test_persist|http_test_review|http_test_store_faults|http_test_upload_delete_race)$' \
      || failed+=("ThreadSanitizer tests")
  else
    failed+=("ThreadSanitizer build")
  fi
fi

say "done"
for n in "${notes[@]}"; do echo "note: $n"; done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all stages passed"

#!/usr/bin/env bash
# gpu_device_run.sh - prepare inputs here, then build and run the GPU harness on a machine with a GPU.
#
#   scripts/gpu_device_run.sh --prepare [DIR]   # here: .svd inputs from real slices via the svdslice CLI
#   scripts/gpu_device_run.sh --build [BIN]     # compile the harness with nvcc (works without a GPU)
#   scripts/gpu_device_run.sh --run [DIR]       # on the GPU machine: build, check, bench, sanitize
#
# The harness (gpu/harness/harness.cu) is compiled from the library's own
# sources (gpu/*.cu, util/error.c) with nvcc alone: the GPU machine needs
# the CUDA toolkit, nothing else. --run fits one command of under 10 minutes
# (SS_DEVICE_BUDGET_S, default 540 s, caps its stages): harness checks and
# bench, then the checks again under compute-sanitizer (memcheck, racecheck,
# synccheck) when the toolkit has it, then the project's ctest GPU tests
# when the build's -dev packages are there (they usually are not). Results
# go to $OUT/gpu_results.txt, logs beside it ($OUT defaults to ./gpu-out).
# Environment: SVDSLICE_BIN (the CLI, for --prepare), SVDSLICE_TEST_DATA
# (the real slices), NVCC, CUDA_ARCH (e.g. sm_90; default: the installed
# GPU's, or sm_90 when there is none); for the harness's crossover sweep
# (docs/GPU.md): CPU_GFLOPS (default 95), QUEUE_WAIT_MS (default 0.2).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEFAULT_DIR="$ROOT/build-gpu/gpu-inputs"
DATA="${SVDSLICE_TEST_DATA:-/usr/share/doc/insighttoolkit4-examples/examples/Data}"
SLICES=(BrainProtonDensitySlice.png BrainT1Slice.png BrainMidSagittalSlice.png FatMRISlice.png
        BrainProtonDensitySlice256x256.png VisibleWomanHeadSlice.png)

die() { echo "gpu_device_run: $*" >&2; exit 1; }

find_nvcc() {
  if [ -n "${NVCC:-}" ]; then echo "$NVCC"; return; fi
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc; return; fi
  local home="${CUDA_HOME:-/usr/local/cuda}"
  [ -x "$home/bin/nvcc" ] && { echo "$home/bin/nvcc"; return; }
  die "nvcc not found (set NVCC or CUDA_HOME)"
}

gpu_arch() {
  if [ -n "${CUDA_ARCH:-}" ]; then echo "$CUDA_ARCH"; return; fi
  local cc
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')" || true
  if [ -n "$cc" ]; then echo "sm_$cc"; else echo "sm_90"; fi
}

prepare() {
  local dir="${1:-$DEFAULT_DIR}" bin="${SVDSLICE_BIN:-}"
  if [ -z "$bin" ]; then
    for b in "$ROOT/build-gpu/svdslice" "$ROOT/build/svdslice"; do [ -x "$b" ] && { bin="$b"; break; }; done
  fi
  [ -x "$bin" ] || die "no svdslice binary (build it, or set SVDSLICE_BIN)"
  [ -d "$DATA" ] || die "no slice directory $DATA (set SVDSLICE_TEST_DATA)"
  mkdir -p "$dir"
  rm -f "$dir"/*.svd
  local n=0
  for s in "${SLICES[@]}"; do
    [ -f "$DATA/$s" ] || { echo "skip $s (not found)"; continue; }
    "$bin" compress "$DATA/$s" "$dir/${s%.png}.svd" >/dev/null
    "$bin" compress "$DATA/$s" "$dir/${s%.png}-r50.svd" --rank 50 >/dev/null
    n=$((n + 2))
  done
  [ "$n" -gt 0 ] || die "no slices compressed"
  echo "prepared $n .svd files in $dir"
}

cuda_home() { (cd "$(dirname "$(readlink -f "$1")")/.." && pwd); }

build() {
  local bin="${1:-$ROOT/build-gpu/gpu-harness/harness}" nvcc arch home rpath=()
  nvcc="$(find_nvcc)"
  arch="$(gpu_arch)"
  home="$(cuda_home "$nvcc")"
  # cuBLAS is a shared library: find it at run time without LD_LIBRARY_PATH.
  for d in lib64 lib targets/x86_64-linux/lib; do
    [ -d "$home/$d" ] && rpath+=(-Xlinker "-rpath=$home/$d")
  done
  mkdir -p "$(dirname "$bin")"
  # -x cu only for the .cu files; util/error.c is plain C for the host compiler.
  "$nvcc" -O3 -std=c++17 -arch="$arch" -lineinfo -Xcompiler -Wall,-Wextra,-Wshadow -I"$ROOT" -o "$bin" \
    "$ROOT/gpu/harness/harness.cu" "$ROOT/gpu/gpu_core.cu" "$ROOT/gpu/recon.cu" "$ROOT/gpu/cublas.cu" \
    "$ROOT/util/error.c" -lcublas -lpthread "${rpath[@]}"
  echo "built $bin for $arch with $nvcc"
}

# Seconds left of this run's budget.
left() { echo $(( ${SS_DEVICE_BUDGET_S:-540} - SECONDS )); }
# cap SECONDS: the smaller of a stage's cap and what is left (0: skip it).
stage_limit() { local l; l="$(left)"; [ "$l" -lt 20 ] && { echo 0; return; }; [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }

find_sanitizer() {
  local home; home="$(cuda_home "$(find_nvcc)")"
  command -v compute-sanitizer 2>/dev/null && return
  for c in "$home/bin/compute-sanitizer" "$home/compute-sanitizer/compute-sanitizer"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  return 0
}

run() {
  local dir="${1:-$DEFAULT_DIR}" out="${OUT:-$PWD/gpu-out}" bin="$ROOT/build-gpu/gpu-harness/harness"
  local res rc lim san t
  mkdir -p "$out"
  res="$out/gpu_results.txt"
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
  if ! build "$bin" > "$out/build.log" 2>&1; then
    { echo "harness build failed:"; cat "$out/build.log"; } | tee "$res" >&2
    return 1
  fi
  cat "$out/build.log"
  [ -d "$dir" ] || echo "note: no prepared inputs in $dir (run --prepare where the CLI builds); random slices only"

  # 1. Checks against the float64 reference, then (only if they pass) the bench.
  lim="$(stage_limit 240)"
  set +e
  timeout "$lim" "$bin" "$dir" "$res"
  rc=$?
  set -e
  [ "$rc" -eq 124 ] && echo "harness stopped after ${lim}s (time limit)" | tee -a "$res"
  echo "harness exit status $rc (0 pass, 1 check failed, 3 no GPU)" | tee -a "$res"
  [ "$rc" -eq 3 ] && return 3

  # 2. The checks again under compute-sanitizer: out-of-bounds and misaligned
  # accesses, shared-memory races, divergent barriers.
  san="$(find_sanitizer)"
  if [ -z "$san" ]; then
    echo "compute-sanitizer: not in this toolkit, skipped" | tee -a "$res"
  else
    for t in memcheck racecheck synccheck; do
      lim="$(stage_limit 80)"
      if [ "$lim" -eq 0 ]; then echo "compute-sanitizer $t: skipped (time budget)" | tee -a "$res"; continue; fi
      local extra=()
      # After --checks-only the harness releases all device state: what is left leaked.
      [ "$t" = memcheck ] && extra=(--leak-check full)
      set +e
      timeout "$lim" "$san" --tool "$t" "${extra[@]}" --error-exitcode 9 "$bin" "$dir" \
        "$out/sanitizer-$t-checks.txt" --checks-only > "$out/sanitizer-$t.txt" 2>&1
      local src=$?
      set -e
      echo "compute-sanitizer $t: exit $src (0 clean, 9 errors, 124 time limit ${lim}s, 1 a check failed);" \
        "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer-$t.txt" | tail -1)" | tee -a "$res"
    done
  fi

  # 3. The project's own ctest GPU tests, when its -dev packages are installed.
  local missing=()
  for p in libpng zlib jansson libmicrohttpd openblas cmocka; do
    pkg-config --exists "$p" 2>/dev/null || missing+=("$p")
  done
  [ -f /usr/include/lapacke.h ] || missing+=(lapacke)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  lim="$(stage_limit 200)"
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "ctest GPU tests: not run (missing: ${missing[*]}); the harness above covers the same checks" | tee -a "$res"
  elif [ "$lim" -eq 0 ]; then
    echo "ctest GPU tests: skipped (time budget)" | tee -a "$res"
  else
    local cb="$ROOT/build-gpu/ctest" cc
    cc="$(gpu_arch)"
    set +e
    timeout "$lim" bash -c "cmake -S '$ROOT' -B '$cb' -DCMAKE_CUDA_ARCHITECTURES='${cc#sm_}' &&
      cmake --build '$cb' -j\$(nproc) && cd '$cb' && ctest -L gpu --output-on-failure" > "$out/ctest.log" 2>&1
    local crc=$?
    set -e
    echo "ctest GPU tests: exit $crc; $(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)" | tee -a "$res"
  fi
  echo "results in $res (${SECONDS}s)"
  return "$rc"
}

case "${1:---run}" in
  --prepare) prepare "${2:-}" ;;
  --build) build "${2:-}" ;;
  --run) run "${2:-}" ;;
  -h|--help) sed -n '2,19p' "$0" ;;
  *) die "unknown option $1 (try --help)" ;;
esac

#!/usr/bin/env bash
# gpu_device_run.sh - prepare inputs here, then build and run the GPU harness on a machine with a GPU.
#
#   scripts/gpu_device_run.sh --prepare [DIR]   # here: .svd inputs from real slices via the svdslice CLI
#   scripts/gpu_device_run.sh --build [BIN]     # compile the harness with nvcc (works without a GPU)
#   scripts/gpu_device_run.sh --run [DIR]       # on the GPU machine: build, check, bench
#
# The harness (gpu/harness/harness.cu) is compiled from the library's own
# sources (gpu/*.cu, engine/error.c) with nvcc alone: the GPU machine needs
# the CUDA toolkit, nothing else. Results go to $OUT/gpu_results.txt ($OUT
# defaults to ./gpu-out). Environment: SVDSLICE_BIN (the CLI, for --prepare),
# SVDSLICE_TEST_DATA (the real slices), NVCC, CUDA_ARCH (e.g. sm_90; default:
# the installed GPU's, or sm_90 when there is none).
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

build() {
  local bin="${1:-$ROOT/build-gpu/gpu-harness/harness}" nvcc arch
  nvcc="$(find_nvcc)"
  arch="$(gpu_arch)"
  mkdir -p "$(dirname "$bin")"
  # -x cu only for the .cu files; engine/error.c is plain C for the host compiler.
  "$nvcc" -O3 -std=c++17 -arch="$arch" -Xcompiler -Wall,-Wextra,-Wshadow -I"$ROOT" -o "$bin" \
    "$ROOT/gpu/harness/harness.cu" "$ROOT/gpu/gpu_core.cu" "$ROOT/gpu/recon.cu" "$ROOT/gpu/cublas.cu" \
    "$ROOT/engine/error.c" -lcublas -lpthread
  echo "built $bin for $arch"
}

run() {
  local dir="${1:-$DEFAULT_DIR}" out="${OUT:-$PWD/gpu-out}" bin="$ROOT/build-gpu/gpu-harness/harness"
  mkdir -p "$out"
  build "$bin"
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
  set +e
  "$bin" "$dir" "$out/gpu_results.txt"
  local rc=$?
  set -e
  echo "harness exit status $rc; results in $out/gpu_results.txt"
  return $rc
}

case "${1:---run}" in
  --prepare) prepare "${2:-}" ;;
  --build) build "${2:-}" ;;
  --run) run "${2:-}" ;;
  -h|--help) sed -n '2,16p' "$0" ;;
  *) die "unknown option $1 (try --help)" ;;
esac

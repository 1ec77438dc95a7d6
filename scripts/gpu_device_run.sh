#!/usr/bin/env bash
# gpu_device_run.sh - prepare inputs here, then build and run the GPU harness on a machine with a GPU.
#
#   scripts/gpu_device_run.sh --prepare [DIR]   # here: .svd inputs from real slices via the svdslice CLI
#   scripts/gpu_device_run.sh --build [BIN]     # compile the harness with nvcc (works without a GPU)
#   scripts/gpu_device_run.sh --find-cublas     # print the cuBLAS files the build would link
#   scripts/gpu_device_run.sh --run [DIR]       # on the GPU machine: build, check, bench, sanitize
#   scripts/gpu_device_run.sh --dry-run [DIR]   # --run's flow and command lines, nothing executed
#
# The harness (gpu/harness/harness.cu) is compiled from the library's own
# sources (gpu/*.cu, util/error.c) with nvcc alone: the GPU machine needs the
# CUDA toolkit, nothing else. cuBLAS is found by its versioned file
# (libcublas.so.N*, libcublasLt.so.N*) and linked by path; when it cannot be
# linked the harness is built without it and checks our own kernel (cuda).
# --run fits one device command: a budget of SS_DEVICE_BUDGET_S (default
# 300) seconds, each stage capped by what is left; it prints the figures as
# it goes (a cut run's output still holds them) and leaves two files in $OUT
# (default ./gpu-out): gpu_results.txt and gpu_logs.tar.gz (build log,
# nvidia-smi, sanitizer reports, ctest log).
# Environment: SVDSLICE_BIN (the CLI, for --prepare), SVDSLICE_TEST_DATA
# (the real slices), NVCC, CUDA_HOME, CUDA_ARCH (e.g. sm_90; default: the
# installed GPU's, or sm_90 when there is none), SS_CUBLAS_SYSTEM_DIRS
# (where else to look for cuBLAS), SS_DEVICE_HARNESS (a prebuilt harness:
# no build), SS_DEVICE_SANITIZER (compute-sanitizer's path, or "none"),
# SS_DEVICE_CTEST=0 (no ctest stage), SS_DEVICE_RESERVE_S, SS_DEVICE_MIN_STAGE_S;
# for the harness's crossover sweep (docs/GPU.md): CPU_GFLOPS, QUEUE_WAIT_MS.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEFAULT_DIR="$ROOT/build-gpu/gpu-inputs"
DATA="${SVDSLICE_TEST_DATA:-/usr/share/doc/insighttoolkit4-examples/examples/Data}"
SLICES=(BrainProtonDensitySlice.png BrainT1Slice.png BrainMidSagittalSlice.png FatMRISlice.png
        BrainProtonDensitySlice256x256.png VisibleWomanHeadSlice.png)
BUDGET="${SS_DEVICE_BUDGET_S:-300}"
RESERVE="${SS_DEVICE_RESERVE_S:-10}" # seconds kept for the archive and the summary
MIN_STAGE="${SS_DEVICE_MIN_STAGE_S:-20}" # a stage left less than this is skipped, and said so
DRY="${SS_DEVICE_DRY:-0}" # --dry-run: commands shown, not run

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

# The toolkit's major version (13 for "release 13.0"), or empty.
cuda_major() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p' | head -1; }

# Prints three lines, cuBLAS, cuBLASLt (real files, versioned: a toolkit may
# have no unversioned libcublas.so) and their folder, of the toolkit's major
# version when known, then a fourth, the folder of cublas_v2.h when it is
# not the toolkit's (pip's nvidia/cublas layout); status 1 when none is found.
find_cublas() {
  local home="$1" major="${2:-}" d lib lt dirs=()
  # The toolkit's folders, pip's layout beside a pip nvcc (nvidia/cuda_nvcc
  # and nvidia/cublas), then the system's.
  for d in "$home/lib64" "$home/lib" "$home"/targets/*/lib "$home/../cublas/lib" \
           ${SS_CUBLAS_SYSTEM_DIRS-/usr/lib/x86_64-linux-gnu /usr/lib64}; do
    [ -d "$d" ] && dirs+=("$(cd "$d" && pwd)")
  done
  for d in "${dirs[@]}"; do
    lib="$(find "$d" -maxdepth 1 -name "libcublas.so.${major:-[0-9]}*" 2>/dev/null | sort -V | tail -1)" || true
    lt="$(find "$d" -maxdepth 1 -name "libcublasLt.so.${major:-[0-9]}*" 2>/dev/null | sort -V | tail -1)" || true
    if [ -n "$lib" ] && [ -n "$lt" ]; then
      printf '%s\n%s\n%s\n' "$(readlink -f "$lib")" "$(readlink -f "$lt")" "$d"
      [ -f "$d/../include/cublas_v2.h" ] && [ ! -f "$home/include/cublas_v2.h" ] && (cd "$d/../include" && pwd)
      return 0
    fi
  done
  return 1
}

build() {
  local bin="${1:-$ROOT/build-gpu/gpu-harness/harness}" nvcc arch home major cub=() links
  nvcc="$(find_nvcc)"
  arch="$(gpu_arch)"
  home="$(cuda_home "$nvcc")"
  major="$(cuda_major "$nvcc")"
  mkdir -p "$(dirname "$bin")"
  # -x cu only for the .cu files; util/error.c is plain C for the host compiler.
  # shellcheck disable=SC2054 # -Xcompiler takes one comma-separated argument
  # SS_GPU_FAULT_INJECTION: the harness's check of the failure policy (never in the library's build).
  local cmd=("$nvcc" -O3 -std=c++17 -arch="$arch" -lineinfo -Xptxas -v -Xcompiler -Wall,-Wextra,-Wshadow -I"$ROOT"
             -DSS_GPU_FAULT_INJECTION
             -o "$bin" "$ROOT/gpu/harness/harness.cu" "$ROOT/gpu/gpu_core.cu" "$ROOT/gpu/recon.cu"
             "$ROOT/gpu/cublas.cu" "$ROOT/util/error.c" -lpthread)
  if mapfile -t cub < <(find_cublas "$home" "$major") && [ "${#cub[@]}" -ge 3 ]; then
    # nvcc takes no .so.N file as an input: hand the paths to the linker.
    local link=(-Xlinker --no-as-needed -Xlinker "${cub[0]}" -Xlinker "${cub[1]}" -Xlinker "-rpath=${cub[2]}")
    [ "${#cub[@]}" -ge 4 ] && link+=(-I"${cub[3]}") # cublas_v2.h outside the toolkit
    # The binary asks for the SONAME (libcublas.so.N); a folder without that
    # name gets one beside the build, on the rpath too.
    local maj="${cub[0]##*/libcublas.so.}"
    maj="${maj%%.*}"
    if [ ! -e "${cub[2]}/libcublas.so.$maj" ] || [ ! -e "${cub[2]}/libcublasLt.so.$maj" ]; then
      links="$(dirname "$bin")/cublas-links"
      mkdir -p "$links"
      ln -sf "${cub[0]}" "$links/libcublas.so.$maj"
      ln -sf "${cub[1]}" "$links/libcublasLt.so.$maj"
      link+=(-Xlinker "-rpath=$links")
    fi
    echo "cuBLAS: ${cub[0]} and ${cub[1]}, linked by path"
    if [ "$DRY" = 1 ]; then echo "[dry-run] ${cmd[*]} ${link[*]}"; echo "built (dry run: nothing compiled)"; return 0; fi
    if "${cmd[@]}" "${link[@]}"; then
      echo "built $bin for $arch with $nvcc (cuda and cublas)"
      return 0
    fi
    echo "cuBLAS: linking ${cub[0]} failed; building without it (cublas missing, cuda still checked)"
  else
    echo "cuBLAS: no libcublas.so.${major:-N}* with libcublasLt beside it under $home" \
         "or ${SS_CUBLAS_SYSTEM_DIRS-/usr/lib/x86_64-linux-gnu /usr/lib64}; building without it (cublas missing, cuda still checked)"
  fi
  if [ "$DRY" = 1 ]; then echo "[dry-run] ${cmd[*]} -DSS_GPU_NO_CUBLAS"; echo "built (dry run: nothing compiled; cuda only)"; return 0; fi
  "${cmd[@]}" -DSS_GPU_NO_CUBLAS
  echo "built $bin for $arch with $nvcc (cuda only: cuBLAS missing)"
}

# Seconds left of this run's budget, the reserve kept aside.
left() { echo $(( BUDGET - RESERVE - SECONDS )); }
# cap SHARE: SHARE of what is left (a fraction "a/b"); 0 (skip) under MIN_STAGE.
stage_cap() {
  local l c; l="$(left)"; c=$(( l * ${1%/*} / ${1#*/} ))
  [ "$c" -lt "$MIN_STAGE" ] && [ "$l" -ge "$MIN_STAGE" ] && c="$MIN_STAGE"
  [ "$l" -lt "$MIN_STAGE" ] && c=0
  echo "$c"
}

find_sanitizer() {
  if [ -n "${SS_DEVICE_SANITIZER:-}" ]; then [ "$SS_DEVICE_SANITIZER" = none ] || echo "$SS_DEVICE_SANITIZER"; return 0; fi
  local home; home="$(cuda_home "$(find_nvcc)")"
  command -v compute-sanitizer 2>/dev/null && return
  for c in "$home/bin/compute-sanitizer" "$home/compute-sanitizer/compute-sanitizer"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  return 0
}

# Runs a command, or only shows it (on the run's stdout, fd 3) in a dry run.
x() { if [ "$DRY" = 1 ]; then echo "[dry-run] $*" >&3; else "$@"; fi; }

# One line into the results and onto stdout.
note() { echo "$*" | tee -a "$RES"; }

# The logs travel as one archive (the device tool returns 8 files at most).
pack_logs() {
  [ -n "${LOGS:-}" ] && [ -d "$LOGS" ] || return 0
  if tar -czf "$OUTDIR/gpu_logs.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" 2>/dev/null; then
    echo "logs: $OUTDIR/gpu_logs.tar.gz ($(cd "$LOGS" && echo *))"
  else # no tar: one text file instead
    for f in "$LOGS"/*; do echo "===== ${f##*/}"; cat "$f"; done > "$OUTDIR/gpu_logs.txt" 2>/dev/null || true
    echo "logs: $OUTDIR/gpu_logs.txt"
  fi
  LOGS=""
}

# The lines that matter, again at the end: the device tool returns the last
# 12,000 characters of output, and the harness's tables come early.
summary() {
  echo
  echo "===== summary (${SECONDS}s of ${BUDGET}s) ====="
  grep -E '^(device:|no usable GPU|backend |checks:|all checks:|ok   failure policy|FAIL|volume|cuda / cublas|crossover_work|recommend:|stage |compute-sanitizer|ctest|harness|not timing)' \
    "$RES" 2>/dev/null | cut -c1-300 | head -60 || true
  awk '/^bench:/{p=1} /^goals:/{p=0} p' "$RES" 2>/dev/null | head -14 || true
}

finish() {
  local rc=$?
  [ -n "${RES:-}" ] || return 0
  summary
  pack_logs
  exit "$rc"
}

run() {
  local dir="${1:-$DEFAULT_DIR}" bin="${SS_DEVICE_HARNESS:-$ROOT/build-gpu/gpu-harness/harness}"
  local rc lim san t
  OUTDIR="${OUT:-$PWD/gpu-out}"
  mkdir -p "$OUTDIR"
  OUTDIR="$(cd "$OUTDIR" && pwd)"
  RES="$OUTDIR/gpu_results.txt"
  LOGS="$ROOT/build-gpu/gpu-logs"
  rm -rf "$LOGS" && mkdir -p "$LOGS"
  : > "$RES"
  exec 3>&1
  trap finish EXIT
  trap 'echo "gpu_device_run: stopped by a signal"; exit 143' TERM INT
  note "stage start: budget ${BUDGET}s (SS_DEVICE_BUDGET_S), $(date -u +%FT%TZ)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1 || true
    note "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -1)"
  else
    note "nvidia-smi: not found"
  fi

  # 0. Build (skipped with a prebuilt SS_DEVICE_HARNESS).
  if [ -z "${SS_DEVICE_HARNESS:-}" ]; then
    lim="$(stage_cap 1/2)"
    set +e
    timeout "$lim" bash "$0" --build "$bin" > "$LOGS/build.log" 2>&1
    rc=$?
    set -e
    # Registers, shared memory and spills of our two kernels.
    grep -E '^(cuBLAS|built|\[dry-run\])|Compiling entry|registers|spill' "$LOGS/build.log" 2>/dev/null |
      sed 's/^ptxas info *: //' | grep -v '^ *0 bytes stack frame, 0 bytes spill' || true
    if [ "$rc" -ne 0 ]; then
      note "stage build: FAILED (exit $rc after ${SECONDS}s; 124: time limit ${lim}s); the log's end:"
      tail -40 "$LOGS/build.log" | tee -a "$RES"
      return 1
    fi
    note "stage build: ok (${SECONDS}s)$(grep -q 'cuda only' "$LOGS/build.log" 2>/dev/null && echo '; cuBLAS missing: cuda alone')"
  fi
  [ -d "$dir" ] || note "note: no prepared inputs in $dir (run --prepare where the CLI builds); random slices only"

  # 1. Checks against the float64 reference, the volume batch, then (only if
  # they pass) the bench and the crossover sweep; its lines print as they come.
  lim="$(stage_cap 1/2)"
  [ "$lim" -gt 0 ] || { note "stage harness: skipped (time budget)"; return 1; }
  export SWEEP_BUDGET_S="${SWEEP_BUDGET_S:-$(( lim / 4 > 10 ? lim / 4 : 10 ))}"
  set +e
  x timeout "$lim" "$bin" "$dir" "$LOGS/harness.txt"
  rc=$?
  set -e
  [ "$DRY" = 1 ] || cat "$LOGS/harness.txt" >> "$RES" 2>/dev/null || true
  [ "$rc" -eq 124 ] && note "stage harness: stopped after ${lim}s (time limit); its figures so far are above"
  note "stage harness: exit $rc (0 pass, 1 check failed, 3 no GPU) at ${SECONDS}s"
  [ "$rc" -eq 3 ] && return 3

  # 2. The checks again under compute-sanitizer, limited to our kernels
  # (cuBLAS's own are not ours to judge: racecheck reports and its cap):
  # out-of-bounds and misaligned accesses and leaks, shared-memory races,
  # uninitialised global memory read (the copy back included), barriers.
  san="$(find_sanitizer)"
  local want_ctest=0 missing=()
  for p in libpng zlib jansson libmicrohttpd openblas cmocka; do
    pkg-config --exists "$p" 2>/dev/null || missing+=("$p")
  done
  [ -f /usr/include/lapacke.h ] || missing+=(lapacke)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  [ "${#missing[@]}" -eq 0 ] && want_ctest=1
  [ "${SS_DEVICE_CTEST:-}" = 0 ] && { want_ctest=0; missing=("none: SS_DEVICE_CTEST=0"); }
  if [ -z "$san" ]; then
    note "compute-sanitizer: not in this toolkit, skipped"
  else
    local filt=--kernel-regex tools=(memcheck racecheck initcheck synccheck) i
    "$san" --help 2>/dev/null | grep -q -- '--kernel-name' && filt=--kernel-name
    for i in "${!tools[@]}"; do
      t="${tools[$i]}"
      lim="$(stage_cap "1/$(( ${#tools[@]} - i + want_ctest ))")"
      if [ "$lim" -eq 0 ]; then note "compute-sanitizer $t: skipped (time budget)"; continue; fi
      local extra=()
      # After --checks-only the harness releases all device state: what is left leaked.
      [ "$t" = memcheck ] && extra=(--leak-check full)
      set +e
      x timeout "$lim" "$san" --tool "$t" "$filt" kns=svdslice_ "${extra[@]}" --error-exitcode 9 \
        "$bin" "$dir" "$LOGS/sanitizer-$t-checks.txt" --checks-only > "$LOGS/sanitizer-$t.txt" 2>&1
      local src=$?
      set -e
      note "compute-sanitizer $t: exit $src (0 clean, 9 errors, 124 time limit ${lim}s, 1 a check failed);" \
        "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/sanitizer-$t.txt" 2>/dev/null | tail -1)"
      [ "$src" -eq 9 ] && grep -E '^=========' "$LOGS/sanitizer-$t.txt" | head -25
      # Some machines' runtimes (gVisor) refuse the tool: the others would too.
      if [ "$src" -eq 3 ] || grep -q 'Device not supported' "$LOGS/sanitizer-$t.txt" 2>/dev/null; then
        note "compute-sanitizer: refused here ($(grep -m1 -E 'not supported|no usable GPU' "$LOGS/sanitizer-$t.txt" 2>/dev/null | cut -c1-120)); the other tools skipped"
        break
      fi
    done
  fi

  # 3. The project's own ctest GPU tests, when its -dev packages are installed.
  lim="$(stage_cap 1/1)"
  if [ "$want_ctest" -eq 0 ]; then
    note "ctest GPU tests: not run (missing: ${missing[*]}); the harness above covers the same checks"
  elif [ "$lim" -eq 0 ]; then
    note "ctest GPU tests: skipped (time budget)"
  else
    local cb="$ROOT/build-gpu/ctest" cc
    cc="$(gpu_arch)"
    set +e
    x timeout "$lim" bash -c "cmake -S '$ROOT' -B '$cb' -DCMAKE_CUDA_ARCHITECTURES='${cc#sm_}' &&
      cmake --build '$cb' -j\$(nproc) && cd '$cb' && ctest -L gpu --output-on-failure" > "$LOGS/ctest.log" 2>&1
    local crc=$?
    set -e
    note "ctest GPU tests: exit $crc; $(grep -E 'tests passed|tests failed' "$LOGS/ctest.log" | tail -1)"
  fi
  note "stage end: ${SECONDS}s; results in $RES"
  return "$rc"
}

case "${1:---run}" in
  --prepare) prepare "${2:-}" ;;
  --build) build "${2:-}" ;;
  --find-cublas) n="$(find_nvcc)"; find_cublas "$(cuda_home "$n")" "$(cuda_major "$n")" ;;
  --run) run "${2:-}" ;;
  --dry-run) export SS_DEVICE_DRY=1; DRY=1; run "${2:-}" ;;
  -h|--help) sed -n '2,26p' "$0" ;;
  *) die "unknown option $1 (try --help)" ;;
esac

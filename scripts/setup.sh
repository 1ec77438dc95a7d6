#!/usr/bin/env bash
# setup.sh - install the Debian 12 packages of the named sets, only those that are missing.
# Needs root (or sudo) when something must be installed.
#
#   scripts/setup.sh build          # compile (the README's "Building by hand")
#   scripts/setup.sh run            # build + what scripts/run.sh's demo uses
#   scripts/setup.sh unit           # build + the real slices and Python references of the unit tests
#   scripts/setup.sh test browser   # the tools of the CLI/HTTP tests, of the browser tests
#   scripts/setup.sh all            # every set (adds the load bench's tools)
#   scripts/setup.sh --list [SET..] # print the packages, install nothing
set -euo pipefail

# One line per need: the set, its packages, why. A new library is one more `build` line
# (no apostrophes: the table is one single-quoted string).
SETS='
build   build-essential cmake pkg-config           # compiler and build system
build   libopenblas-dev liblapacke-dev             # BLAS and LAPACKE: the SVD, the blas backend
build   libpng-dev zlib1g-dev libdeflate-dev       # PNG decoding and encoding
build   libjansson-dev                             # JSON
build   libmicrohttpd-dev                          # the HTTP server
build   nettle-dev                                 # SHA-256 content ids
build   libnifti2-dev                              # NIfTI-1/-2 volume headers (nifticlib)
build   libpq-dev                                  # the shared PostgreSQL store (--store postgres://)
build   libcharls-dev                              # JPEG-LS: stored originals, losslessly
build   libcmocka-dev                              # unit tests (small; CMake wants it unless -DBUILD_TESTING=OFF)
slices  insighttoolkit4-examples                   # real MRI slices (7 MB): the demo slice and test data
ref     python3 python3-numpy python3-skimage python3-pil   # references of the unit tests: float64 SVD, scikit-image
ref     python3-nibabel                            # volume references: NIfTI read and written by nibabel
demo    curl                                       # run.sh loads the demo slice through the API
test    python3 python3-numpy python3-skimage python3-pil python3-yaml curl   # CLI and HTTP tests
test    python3-nibabel                            # volume tests: NIfTI references read and written by nibabel
test    python3-prometheus-client                  # /metrics read by the Prometheus parser itself
test    postgresql nginx                           # test_scaleout: replicas on a real PostgreSQL, behind nginx
test    kubernetes-client                          # kubectl kustomize renders docker/k8s (any kubectl on PATH will do)
browser chromium fonts-dejavu-core nodejs npm      # browser tests: Node drives Debian Chromium
bench   wrk gunicorn                               # bench/load: load generator, Python baseline
'

usage() { sed -n '2,10p' "$0" >&2; exit 2; }

# Package names of one set.
set_pkgs() { printf '%s\n' "$SETS" | sed 's/#.*//' | awk -v s="$1" '$1 == s { for (i = 2; i <= NF; i++) print $i }'; }

list=0
[ "${1:-}" = --list ] && { list=1; shift; }
[ $# -gt 0 ] || set -- all
sets=()
for a in "$@"; do
  case "$a" in
    run) sets+=(build slices demo) ;;
    unit) sets+=(build slices ref) ;;
    all) mapfile -t -O "${#sets[@]}" sets < <(printf '%s\n' "$SETS" | awk 'NF { print $1 }' | uniq) ;;
    -h|--help) usage ;;
    *)
      [ -n "$(set_pkgs "$a")" ] || { echo "setup: no package set '$a'" >&2; usage; }
      sets+=("$a")
      ;;
  esac
done

want=()
for s in "${sets[@]}"; do mapfile -t -O "${#want[@]}" want < <(set_pkgs "$s"); done
mapfile -t want < <(printf '%s\n' "${want[@]}" | awk '!seen[$0]++')
if [ "$list" = 1 ]; then printf '%s\n' "${want[@]}"; exit 0; fi

missing=()
for p in "${want[@]}"; do
  # Node and npm may come from elsewhere than Debian: a working binary is enough.
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    # Debian's kubectl conflicts with one installed otherwise; rendering needs only some kubectl.
    kubernetes-client) command -v kubectl >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: ${sets[*]}: all packages present"
  exit 0
fi
echo "setup: ${sets[*]}: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: not root and no sudo: install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
# A fresh system has no package lists yet; otherwise refresh them at most once an hour.
lists=/var/lib/apt/lists
if [ -z "$(find "$lists" -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
  $SUDO apt-get update -qq || echo "setup: apt-get update failed; trying with the lists there are" >&2
fi
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
  echo "setup: could not install ${missing[*]} (is the Debian archive reachable?)" >&2
  exit 1
fi

#!/usr/bin/env bash
# setup.sh - install the Debian 12 packages svdslice needs to build, run and test,
# only those that are missing. Needs root (or sudo) when something must be installed.
set -euo pipefail

BUILD_PKGS=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libpng-dev
            zlib1g-dev libjansson-dev libmicrohttpd-dev libdeflate-dev)
TEST_PKGS=(libcmocka-dev insighttoolkit4-examples python3 python3-numpy python3-skimage
           python3-pil python3-yaml curl chromium fonts-dejavu-core nodejs npm)
BENCH_PKGS=(wrk gunicorn)

want=("${BUILD_PKGS[@]}")
case "${1:-all}" in
  build) ;;
  test) want+=("${TEST_PKGS[@]}") ;;
  all) want+=("${TEST_PKGS[@]}" "${BENCH_PKGS[@]}") ;;
  *) echo "usage: setup.sh [build|test|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  # nodejs/npm may come from elsewhere than Debian: a working binary is enough.
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

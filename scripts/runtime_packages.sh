#!/usr/bin/env bash
# runtime_packages.sh BINARY - the Debian packages that hold the shared libraries BINARY loads, one
# a line. The image's runtime stage installs these, so a library added to setup.sh's build set
# needs no second list.
set -euo pipefail
[ $# -eq 1 ] && [ -x "$1" ] || { echo "usage: runtime_packages.sh BINARY" >&2; exit 2; }
ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  real="$(readlink -f "$lib")"
  # dpkg knows a file by the path its package ships, which merged /usr and alternatives hide.
  for p in "$real" "$lib" "/usr$lib" "${lib#/usr}" "/usr$real" "${real#/usr}"; do
    if owner="$(dpkg -S "$p" 2>/dev/null)"; then
      echo "${owner%%:*}"
      continue 2
    fi
  done
  echo "runtime_packages: no package holds $lib" >&2
  exit 1
done | sort -u

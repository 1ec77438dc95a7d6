#!/usr/bin/env bash
# debian_root.sh - a bare Debian 12 system (debootstrap --variant=minbase bookworm), the starting
# point of scripts/fresh_machine_test.sh and the base image of scripts/image_test.sh.
#
#   scripts/debian_root.sh DIR         # unpack a fresh tree into DIR (must be empty or absent)
#   scripts/debian_root.sh --tarball   # print the path of the cached tree's tarball
#
# The mirror is the one this machine's apt sources use for bookworm (or $DEBIAN_MIRROR). The
# first debootstrap is kept as a tarball ($DEBIAN_ROOT_CACHE, default
# /var/tmp/svdslice-bookworm-minbase.tar) so later trees unpack in seconds; delete it to start over.
# Needs root and debootstrap (apt-get install debootstrap).
set -euo pipefail

CACHE=${DEBIAN_ROOT_CACHE:-/var/tmp/svdslice-bookworm-minbase.tar}

die() { echo "debian_root: $*" >&2; exit 1; }

# First URI that serves bookworm's main suite, from one-line (.list) or deb822 (.sources) files.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { sub(/\[[^]]*\] */, ""); if ($3 == "bookworm") { print $2; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
         { uri = ""; ok = 0; deb = 1
           for (i = 1; i <= NF; i++) {
             if ($i ~ /^URIs:/) { split($i, a, " "); uri = a[2] }
             if ($i ~ /^Suites:/) { n = split($i, s, " "); for (j = 2; j <= n; j++) if (s[j] == "bookworm") ok = 1 }
             if ($i ~ /^Types:/ && $i !~ /[ ]deb([ ]|$)/) deb = 0
             if ($i ~ /^Enabled: *no/) deb = 0
           }
           if (ok && deb && uri != "") { print uri; exit } }' "$f"
  done
}

make_tarball() {
  [ "$(id -u)" -eq 0 ] || die "needs root"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (apt-get install debootstrap)"
  local mirror="${DEBIAN_MIRROR:-$(debian_mirror | head -1)}"
  [ -n "$mirror" ] || die "no bookworm mirror in the apt sources; set DEBIAN_MIRROR"
  local tmp
  tmp="$(mktemp -d "${CACHE}.XXXXXX")"
  echo "debian_root: debootstrap --variant=minbase bookworm from $mirror (a few minutes, once)" >&2
  if ! debootstrap --variant=minbase bookworm "$tmp/root" "$mirror" > "$tmp/debootstrap.log" 2>&1; then
    tail -20 "$tmp/debootstrap.log" >&2
    die "debootstrap failed (log: $tmp/debootstrap.log)"
  fi
  # The build machine's resolver and apt lists do not belong in the tree.
  rm -f "$tmp/root/etc/resolv.conf" "$tmp/root/etc/hostname"
  rm -rf "$tmp/root/var/lib/apt/lists/"* "$tmp/root/var/cache/apt/archives/"*.deb
  tar -C "$tmp/root" --numeric-owner -cf "$tmp/root.tar" .
  mv "$tmp/root.tar" "$CACHE"
  rm -rf "$tmp"
}

[ -f "$CACHE" ] || make_tarball
case "${1:-}" in
  --tarball) echo "$CACHE" ;;
  ""|-h|--help) sed -n '2,12p' "$0"; exit 2 ;;
  *)
    dir="$1"
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
    tar -C "$dir" --numeric-owner -xf "$CACHE"
    ;;
esac

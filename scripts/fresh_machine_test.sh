#!/usr/bin/env bash
# fresh_machine_test.sh - the README's Quick start on a fresh Debian 12, each command timed.
#
#   scripts/fresh_machine_test.sh [test|run|both]     # default both; needs root, debootstrap
#
# For each command a new bare system (scripts/debian_root.sh: debootstrap --variant=minbase
# bookworm) gets this machine's apt sources and configuration, its extra CA certificates, its
# npm configuration (the registry and CA file npm uses here, read at run time) and a clean
# clone of this repository at HEAD (commit first: uncommitted changes are not tested). Then,
# chrooted as root with /proc, /sys and /dev mounted:
#   test: scripts/test.sh must pass;
#   run:  scripts/run.sh must serve the demo slice; /reconstruct of it must be a PNG of its size;
#         then SIGTERM stops it.
# Each command's wall time is printed; logs go to $FRESH_DIR/{test,run}.log.
# Environment: FRESH_DIR (default /var/tmp/svdslice-fresh), KEEP=1 keeps the trees,
# RUN_WAIT_S (default 1800) bounds the wait for run.sh's demo slice.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK=${FRESH_DIR:-/var/tmp/svdslice-fresh}
what=${1:-both}
case "$what" in test|run|both) ;; *) sed -n '2,17p' "$0" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "fresh_machine_test: needs root (debootstrap, mount, chroot)" >&2; exit 1; }

commit="$(git -C "$ROOT" rev-parse HEAD)"
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  echo "fresh_machine_test: note: uncommitted changes are not part of the test"
fi
echo "fresh_machine_test: commit $commit"
mkdir -p "$WORK"

mounts=()
server_pid=""
# Removes a tree only when nothing is mounted inside it any more (a bound /dev would go with it).
remove_tree() {
  [ -e "$1" ] || return 0
  if grep -q " $1/" /proc/mounts; then
    echo "fresh_machine_test: $1 still has mounts; not removed" >&2
    return 1
  fi
  rm -rf --one-file-system "$1"
}
cleanup() {
  [ -n "$server_pid" ] && kill -TERM -- "-$server_pid" 2>/dev/null || true
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  if [ "${KEEP:-0}" != 1 ]; then remove_tree "$WORK/root-test" || true; remove_tree "$WORK/root-run" || true; fi
}
trap cleanup EXIT

# The variables that carry this machine's network and CPU setup into the chroot.
pass_env=()
while IFS= read -r v; do pass_env+=("$v"); done < <(env | grep -E '^(npm_config_|NPM_CONFIG_|https?_proxy=|HTTPS?_PROXY=|no_proxy=|NO_PROXY=|OPENBLAS_)' || true)

# npm as this machine has it set up: its config files, the registry it resolves to, its CA file.
npm_config() {
  local dir="$1" f cafile registry
  command -v npm >/dev/null 2>&1 || { echo "fresh_machine_test: no npm here: the chroot's npm keeps its defaults"; return; }
  : > "$dir/root/.npmrc"
  for f in "$(npm config get globalconfig)" "$(npm config get userconfig)"; do
    # Paths of this machine's Node install do not apply there.
    [ -f "$f" ] || continue
    grep -v -E '^\s*(cafile|registry|nodedir|prefix|cache)\s*=' "$f" >> "$dir/root/.npmrc" || true
  done
  registry="$(npm config get registry)"
  echo "registry=$registry" >> "$dir/root/.npmrc"
  cafile="$(npm config get cafile)"
  if [ -n "$cafile" ] && [ "$cafile" != null ] && [ "$cafile" != undefined ] && [ -f "$cafile" ]; then
    # Its own name: Debian's ca-certificates rewrites the usual bundle when it is installed.
    mkdir -p "$dir/etc/ssl"
    cp "$cafile" "$dir/etc/ssl/npm-cafile.pem"
    echo "cafile=/etc/ssl/npm-cafile.pem" >> "$dir/root/.npmrc"
  fi
}

prepare() {
  local dir="$1" f k
  remove_tree "$dir"
  "$ROOT/scripts/debian_root.sh" "$dir"
  # apt: this machine's sources and configuration, and the keys the sources name.
  rm -f "$dir/etc/apt/sources.list"
  [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$dir/etc/apt/"
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && cp "$f" "$dir/etc/apt/sources.list.d/"
  done
  cp -r /etc/apt/apt.conf.d/. "$dir/etc/apt/apt.conf.d/"
  [ -d /etc/apt/trusted.gpg.d ] && cp -r /etc/apt/trusted.gpg.d/. "$dir/etc/apt/trusted.gpg.d/"
  for k in $(cat "$dir"/etc/apt/sources.list "$dir"/etc/apt/sources.list.d/* 2>/dev/null |
             grep -o -i -E 'signed-by[:=] *[^] ]+' | sed -E 's/^[^:=]*[:=] *//' | sort -u); do
    if [ -f "$k" ] && [ ! -e "$dir$k" ]; then mkdir -p "$(dirname "$dir$k")"; cp "$k" "$dir$k"; fi
  done
  # CA certificates this machine adds: ca-certificates picks them up when a package installs it.
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$dir/usr/local/share/ca-certificates/"
  fi
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  npm_config "$dir"
  git clone -q "$ROOT" "$dir/root/svdslice"
  git -C "$dir/root/svdslice" checkout -q --detach "$commit"
  mount -t proc proc "$dir/proc" && mounts+=("$dir/proc")
  mount --rbind /sys "$dir/sys" && mounts+=("$dir/sys")
  mount --rbind /dev "$dir/dev" && mounts+=("$dir/dev")
}

# Runs a bash command line as root in the chroot, in the clone, with a login-like environment.
in_root() {
  local dir="$1"; shift
  env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${pass_env[@]}" chroot "$dir" /bin/bash -c "cd /root/svdslice && $*"
}

mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
results=()
status=0

if [ "$what" != run ]; then
  dir="$WORK/root-test"
  prepare "$dir"
  echo "fresh_machine_test: scripts/test.sh in a fresh system (log: $WORK/test.log)"
  t0=$SECONDS
  rc=0
  in_root "$dir" scripts/test.sh > "$WORK/test.log" 2>&1 < /dev/null || rc=$?
  t=$((SECONDS - t0))
  tail -25 "$WORK/test.log"
  results+=("scripts/test.sh: exit $rc, wall time $(mmss $t)")
  [ "$rc" -eq 0 ] || status=1
  [ "$t" -le 1500 ] || { results+=("scripts/test.sh took longer than 25 minutes"); status=1; }
  for m in "$dir/dev" "$dir/sys" "$dir/proc"; do umount -l "$m" 2>/dev/null || true; done
  mounts=()
fi

if [ "$what" != test ]; then
  dir="$WORK/root-run"
  prepare "$dir"
  port=18080
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "fresh_machine_test: scripts/run.sh --port $port in a fresh system (log: $WORK/run.log)"
  t0=$SECONDS
  setsid env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${pass_env[@]}" chroot "$dir" /bin/bash -c "cd /root/svdslice && exec scripts/run.sh --port $port" \
    > "$WORK/run.log" 2>&1 < /dev/null &
  server_pid=$!
  ok=0
  for _ in $(seq 1 "${RUN_WAIT_S:-1800}"); do
    grep -q "demo slice loaded" "$WORK/run.log" && { ok=1; break; }
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 1
  done
  t=$((SECONDS - t0))
  rc=0
  if [ "$ok" = 1 ]; then
    # As a user would: from the system run.sh set up, with its curl.
    in_root "$dir" "
      set -e
      S=http://127.0.0.1:$port
      info=\$(curl -fsS \"\$S/slices\")
      id=\$(printf '%s' \"\$info\" | grep -o '\"id\": *\"[0-9a-f]*\"' | head -1 | grep -o '[0-9a-f]\{32,64\}')
      w=\$(printf '%s' \"\$info\" | grep -o '\"width\": *[0-9]*' | head -1 | grep -o '[0-9]*\$')
      h=\$(printf '%s' \"\$info\" | grep -o '\"height\": *[0-9]*' | head -1 | grep -o '[0-9]*\$')
      curl -fsS -o /tmp/k20.png \"\$S/reconstruct?id=\$id&k=20\"
      sig=\$(od -An -tx1 -N8 /tmp/k20.png | tr -d ' \n')
      dims=\$(od -An -tu1 -j16 -N8 /tmp/k20.png | awk '{ print \$1*16777216+\$2*65536+\$3*256+\$4 \"x\" \$5*16777216+\$6*65536+\$7*256+\$8 }')
      echo \"demo slice \$id: \${w}x\${h}; /reconstruct?k=20: \$(stat -c %s /tmp/k20.png) bytes, PNG \$dims\"
      [ \"\$sig\" = 89504e470d0a1a0a ] && [ \"\$dims\" = \"\${w}x\${h}\" ]
    " || rc=$?
  else
    rc=1
    tail -25 "$WORK/run.log"
  fi
  kill -TERM -- "-$server_pid" 2>/dev/null || true
  src=0
  wait "$server_pid" || src=$?
  server_pid=""
  echo "fresh_machine_test: run.sh stopped by SIGTERM, exit $src"
  [ "$src" -eq 0 ] || rc=1
  results+=("scripts/run.sh: $([ "$rc" -eq 0 ] && echo ok || echo FAILED), demo slice served after $(mmss $t)")
  [ "$rc" -eq 0 ] || status=1
fi

printf 'fresh_machine_test: %s\n' "${results[@]}"
exit "$status"

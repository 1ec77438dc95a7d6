#!/usr/bin/env bash
# image_test.sh - build the image with podman and serve a real slice from it as its own user.
#
#   scripts/image_test.sh        # needs root and podman (apt-get install podman)
#
# The base image: $IMAGE_BASE when set (e.g. debian:12-slim, pulled if missing), else a local
# one imported from scripts/debian_root.sh's bare Debian 12, so that the test needs no container
# registry. The server runs without a container runtime (podman run needs rlimits and cgroups
# that not every machine grants): podman create + podman mount give the image's files, and
# chroot --userspec starts its ENTRYPOINT as its USER, with --bind 127.0.0.1 --port N
# --data /data/test added after it, as `podman run IMAGE --port N ...` would.
# Checks: the build; USER not root, VOLUME /data, a HEALTHCHECK in the config; those later flags
# win; a real slice uploads; /reconstruct?k=20 is a PNG of its size; the health check command
# passes; prints the image size. Environment: IMAGE (default localhost/svdslice:test).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE=${IMAGE:-localhost/svdslice:test}
SLICE=${SLICE:-/usr/share/doc/insighttoolkit4-examples/examples/Data/BrainProtonDensitySlice.png}

die() { echo "image_test: $*" >&2; exit 1; }
command -v podman >/dev/null 2>&1 || die "podman is missing (apt-get install podman)"
[ "$(id -u)" -eq 0 ] || die "needs root (podman mount, chroot)"
[ -f "$SLICE" ] || die "no test slice $SLICE (apt-get install insighttoolkit4-examples)"
command -v curl >/dev/null 2>&1 || die "curl is missing (apt-get install curl)"

pull=missing
if [ -z "${IMAGE_BASE:-}" ]; then
  IMAGE_BASE=localhost/svdslice-base:bookworm-minbase
  pull=never
  if ! podman image exists "$IMAGE_BASE"; then
    podman import -q "$("$ROOT/scripts/debian_root.sh" --tarball)" "$IMAGE_BASE" >/dev/null
  fi
fi

echo "image_test: podman build from $IMAGE_BASE"
t0=$SECONDS
# chroot isolation: RUN steps work where podman cannot start containers.
podman build -q --isolation=chroot --pull="$pull" --format docker --build-arg BASE="$IMAGE_BASE" \
  -t "$IMAGE" "$ROOT" >/dev/null
echo "image_test: built $IMAGE in $((SECONDS - t0)) s"

fmt() { podman image inspect --format "$1" "$IMAGE"; }
size=$(fmt '{{.Size}}')
echo "image_test: image size $((size / 1000000)) MB ($size bytes)"
user=$(fmt '{{.Config.User}}')
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || die "the image runs as root"
fmt '{{json .Config.Volumes}}' | grep -q '"/data"' || die "no VOLUME /data"
health=$(fmt '{{if .Config.Healthcheck}}{{range .Config.Healthcheck.Test}}{{.}} {{end}}{{end}}')
[ -n "$health" ] || die "no HEALTHCHECK (build with --format docker)"
mapfile -t entry < <(fmt '{{range .Config.Entrypoint}}{{.}}{{"\n"}}{{end}}')
mapfile -t envs < <(fmt '{{range .Config.Env}}{{.}}{{"\n"}}{{end}}')

ctr=""
mnt=""
mounts=()
pid=""
log="$(mktemp)"
cleanup() {
  [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  [ -n "$ctr" ] && { podman umount "$ctr" >/dev/null 2>&1 || true; podman rm -f "$ctr" >/dev/null 2>&1 || true; }
  rm -f "$log"
}
trap cleanup EXIT

ctr=$(podman create "$IMAGE")
mnt=$(podman mount "$ctr")
uid=$(awk -F: -v u="$user" '$1 == u || $3 == u { print $3; exit }' "$mnt/etc/passwd")
gid=$(awk -F: -v u="$user" '$1 == u || $3 == u { print $4; exit }' "$mnt/etc/passwd")
[ -n "$uid" ] || die "user $user is not in the image's /etc/passwd"
mount -t proc proc "$mnt/proc" && mounts+=("$mnt/proc")
mount --rbind /dev "$mnt/dev" && mounts+=("$mnt/dev")

port=18180
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
# The image's user, environment and ENTRYPOINT; the added flags must win over the ENTRYPOINT's.
setsid env -i "${envs[@]}" chroot --userspec="$uid:$gid" "$mnt" \
  "${entry[@]}" --bind 127.0.0.1 --port "$port" --data /data/test > "$log" 2>&1 < /dev/null &
pid=$!
for _ in $(seq 1 100); do
  grep -q "listening on http://127.0.0.1:$port" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the server exited"; }
  sleep 0.1
done
grep -q "listening on http://127.0.0.1:$port" "$log" || { cat "$log" >&2; die "the server did not start"; }
echo "image_test: ${entry[*]} --bind 127.0.0.1 --port $port --data /data/test, as $user ($uid:$gid): $(head -1 "$log")"

S="http://127.0.0.1:$port"
info=$(curl -fsS -H 'Content-Type: image/png' --data-binary "@$SLICE" "$S/slices?name=image-test")
id=$(printf '%s' "$info" | sed -n 's/.*"id": *"\([A-Za-z0-9_-]*\)".*/\1/p')
w=$(printf '%s' "$info" | grep -o '"width": *[0-9]*' | grep -o '[0-9]*$')
h=$(printf '%s' "$info" | grep -o '"height": *[0-9]*' | grep -o '[0-9]*$')
[ -n "$id" ] || die "upload answered $info"
[ -n "$(find "$mnt/data/test" -name '*.svd' -user "$uid")" ] || die "no .svd file owned by $user in /data/test"
png="$(mktemp)"
curl -fsS -o "$png" "$S/reconstruct?id=$id&k=20"
sig=$(od -An -tx1 -N8 "$png" | tr -d ' \n')
dims=$(od -An -tu1 -j16 -N8 "$png" | awk '{ print $1*16777216+$2*65536+$3*256+$4 "x" $5*16777216+$6*65536+$7*256+$8 }')
bytes=$(stat -c %s "$png")
rm -f "$png"
[ "$sig" = 89504e470d0a1a0a ] || die "/reconstruct is not a PNG"
[ "$dims" = "${w}x$h" ] || die "/reconstruct is $dims, the slice ${w}x$h"
echo "image_test: uploaded $(basename "$SLICE") (${w}x$h, id $id); /reconstruct?k=20: PNG ${dims}, $bytes bytes"

# The HEALTHCHECK command as configured ("CMD x" runs x); the port is given since PID 1 here is
# not the server.
read -r -a hc <<< "${health#CMD }"
[ "${hc[0]}" != CMD-SHELL ] || die "expected an exec-form HEALTHCHECK"
env -i "${envs[@]}" chroot --userspec="$uid:$gid" "$mnt" "${hc[@]}" "$port" || die "the health check failed"
echo "image_test: health check (${hc[*]}) passed"

kill -TERM -- "-$pid"
rc=0
wait "$pid" || rc=$?
pid=""
[ "$rc" -eq 0 ] || { cat "$log" >&2; die "the server exited with $rc after SIGTERM"; }
echo "image_test: stopped cleanly by SIGTERM"
echo "1 passed, 0 failed"

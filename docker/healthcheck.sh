#!/bin/bash
# svdslice-healthcheck [PORT] - the image's HEALTHCHECK: GET /healthz must answer 200. Bash's
# /dev/tcp instead of curl keeps curl and its libraries out of the image. The port: PORT, else
# the last --port on the server's command line (PID 1, the ENTRYPOINT plus run arguments; the
# server takes the last one too), else 8080.
port=${1:-}
if [ -z "$port" ]; then
  port=8080
  prev=
  while IFS= read -r -d '' a; do
    [ "$prev" = --port ] && port=$a
    case "$a" in --port=*) port=${a#--port=} ;; esac
    prev=$a
  done < /proc/1/cmdline
fi
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r -t 4 status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "healthz: $status" >&2; exit 1 ;;
esac

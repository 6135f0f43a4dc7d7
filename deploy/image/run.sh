#!/usr/bin/env bash
# Runs an unpacked image (a root filesystem, e.g. from `umoci unpack`) the way a container
# engine would, without one: for smoke tests and for trying the image by hand. As root:
#   deploy/image/run.sh [-e NAME=VALUE]... [-v HOST_PATH:CONTAINER_PATH]... <rootfs> <command>
# The process gets its own mount, PID, UTS and IPC namespaces (the entrypoint's tini is
# PID 1; send it SIGTERM to stop the container), runs as uid/gid 10001 in a chroot, on a
# read-only root filesystem with a fresh /tmp (tmpfs), and shares the host's network (so
# a database on loopback is reachable). -v binds a file or folder (a Unix socket too).
# The environment is only what -e gives, plus the image's PATH and HOME.
set -euo pipefail
envs=()
vols=()
while getopts "e:v:" opt; do
  case $opt in
  e) envs+=("$OPTARG") ;;
  v) vols+=("$OPTARG") ;;
  *) echo "usage: run.sh [-e NAME=VALUE]... [-v HOST:CONTAINER]... <rootfs> <command>" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "run.sh: expected an unpacked root filesystem" >&2; exit 2; }
rootfs=$(cd "$1" && pwd)
shift
[ -x "$rootfs/app/deploy/image/entrypoint" ] || { echo "run.sh: $rootfs is not an Ephemera image" >&2; exit 2; }
# Mount points for -v (created in the unpacked copy, before it is made read-only).
for vol in "${vols[@]}"; do
  src=${vol%%:*} dst=${vol#*:}
  if [ -d "$src" ]; then mkdir -p "$rootfs$dst"; else mkdir -p "$(dirname "$rootfs$dst")"; touch "$rootfs$dst"; fi
done

exec unshare --mount --pid --uts --ipc --fork --propagation private \
  env ROOTFS="$rootfs" VOLS="$(printf '%s\n' "${vols[@]}")" bash -euc '
  r=$ROOTFS
  mount --bind "$r" "$r"
  mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
  mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs "$r/dev"
  for d in null zero full random urandom tty; do touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
  mkdir "$r/dev/shm" && mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$r/dev/shm"
  ln -s /proc/self/fd "$r/dev/fd"
  mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$r/tmp"
  while IFS= read -r vol; do
    [ -n "$vol" ] && mount --bind "${vol%%:*}" "$r${vol#*:}"
  done <<< "$VOLS"
  mount -o remount,bind,ro "$r"
  hostname ephemera
  envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  exec chroot --userspec=10001:10001 --groups= "$r" /usr/bin/env -i \
    PATH=/app/.venv/bin:/usr/local/bin:/usr/bin:/bin HOME=/tmp HOSTNAME=ephemera "${envs[@]}" \
    /app/deploy/image/entrypoint "$@"
' run "${envs[@]}" -- "$@"

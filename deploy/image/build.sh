#!/usr/bin/env bash
# Builds Ephemera's container image without a container engine (no Docker or Podman
# needed; run as root), the same image the Containerfile describes:
#   1. a Debian 12 (bookworm) root filesystem from Debian's packages (mmdebstrap, variant
#      minbase, the packages in deploy/image/debian-packages.txt);
#   2. the Python wheels pinned in deploy/image/requirements.txt (from requirements.lock);
#   3. the app copied in (the build context, minus .containerignore), deploy/image/install.sh
#      run inside it with chroot: virtualenv, collectstatic, bytecode, user ephemera (10001);
#   4. an OCI image written by umoci (built from its Go module, cached in
#      ~/.cache/ephemera/bin like the local cluster's binaries): two layers (Debian; the app).
# Output, under ${EPHEMERA_CACHE:-~/.cache/ephemera}/image:
#   oci/                 OCI image layout, tag "latest"  (skopeo copy oci:<dir>:latest ...)
#   ephemera-image.tar   the same as an OCI archive      (podman load -i ephemera-image.tar)
# The image is rebuilt only when its inputs change (the build context, which includes
# requirements.lock and deploy/image/; the Debian packages, refreshed after
# BASE_MAX_AGE_DAYS, default 7, to pick up security updates). FORCE=1 rebuilds everything.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${EPHEMERA_CACHE:-$HOME/.cache/ephemera}"
BIN="$CACHE/bin"
OUT="$CACHE/image"
UMOCI_VERSION="v0.6.0"
DEBIAN_SUITE="bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_MAX_AGE_DAYS="${BASE_MAX_AGE_DAYS:-7}"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
export PIP_DISABLE_PIP_VERSION_CHECK=1

T0=$(date +%s)
log() { printf '[image %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # retry, hash_files
size() { du -sh --apparent-size "$1" | cut -f1; }

[ "$(id -u)" = 0 ] || die "run as root (chroot, mounts and file ownership need it)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
mkdir -p "$BIN" "$OUT"
# One build at a time (readers such as tests/test_image.py take the same lock to unpack).
exec 9>"$OUT/.lock"
flock 9

# ------------------------------------------------------------------ tools
command -v mmdebstrap >/dev/null || bash "$REPO/deploy/system-deps.sh"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (deploy/system-deps.sh installs it)"

build_umoci() {
  local want="github.com/opencontainers/umoci@$UMOCI_VERSION"
  if [ "${FORCE:-0}" != 1 ] && [ -x "$BIN/umoci" ] && [ "$(cat "$BIN/.stamp-umoci" 2>/dev/null)" = "$want" ]; then
    return
  fi
  command -v go >/dev/null || die "go not found in PATH (umoci is built from its Go module)"
  log "umoci $UMOCI_VERSION: go mod download + go build"
  local dir src
  # Checked against the Go checksum database; built as the main module (its go.mod has a
  # replace directive, which `go install pkg@version` refuses).
  dir=$(cd /tmp && retry 3 go mod download -json "$want" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || die "go mod download $want gave no source folder"
  src=$(mktemp -d)
  cp -r "$dir/." "$src" && chmod -R u+w "$src"
  (cd "$src" && retry 3 go mod download && go build -trimpath -ldflags "-s -w" -o "$BIN/umoci.tmp" ./cmd/umoci)
  rm -rf "$src"
  mv -f "$BIN/umoci.tmp" "$BIN/umoci"
  echo "$want" > "$BIN/.stamp-umoci"
}
build_umoci
UMOCI="$BIN/umoci"

# ------------------------------------------------------------------ inputs
# (A Debian base older than BASE_MAX_AGE_DAYS is rebuilt, for security updates.)
base_key="$DEBIAN_SUITE-$(hash_files "$HERE/debian-packages.txt" <(sed -n '/^build_base()/,/^}/p' "$0"))"
BASE="$OUT/base/debian-$base_key.tar"
if [ -f "$BASE" ] && [ -n "$(find "$BASE" -mtime "+$BASE_MAX_AGE_DAYS")" ]; then rm -f "$BASE"; fi
wheels_key=$(hash_files "$HERE/requirements.txt" "$HERE/wheels.sh")
WHEELS="$OUT/wheels/$wheels_key"
context_hash=$(python3 "$HERE/context.py" hash)
base_id=$( [ -f "$BASE.id" ] && cat "$BASE.id" || echo none)
want="context=$context_hash base=$base_id wheels=$wheels_key umoci=$UMOCI_VERSION"
if [ "${FORCE:-0}" != 1 ] && [ -f "$OUT/oci/index.json" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$want" ]; then
  log "image up to date: $OUT/oci (tag latest), $(cat "$OUT/.size" 2>/dev/null)"
  exit 0
fi

# The image's Python packages must be the runtime part of requirements.lock.
if [ -x "$REPO/.venv/bin/python" ]; then
  "$REPO/.venv/bin/python" "$HERE/runtime_requirements.py" --check
fi

# ------------------------------------------------------------------ 1. Debian base
build_base() {
  local packages
  packages=$(grep -v '^#' "$HERE/debian-packages.txt" | xargs | tr ' ' ',')
  log "Debian $DEBIAN_SUITE: mmdebstrap (variant minbase + $packages)"
  mkdir -p "$OUT/base"
  rm -f "$OUT"/base/debian-*.tar*
  # Like debian:bookworm-slim: no manuals, docs (but copyrights) or translations.
  # merged /usr without the usrmerge package (which would bring perl).
  retry 3 mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Retries "5"' --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
    "$DEBIAN_SUITE" "$BASE.tmp" \
    "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" \
    "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main" \
    "deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main"
  mv -f "$BASE.tmp" "$BASE"
  sha256sum "$BASE" | cut -c1-16 > "$BASE.id"
}
if [ "${FORCE:-0}" = 1 ] || [ ! -f "$BASE" ] || [ ! -f "$BASE.id" ]; then build_base; else log "Debian base: cached ($(basename "$BASE"))"; fi
base_id=$(cat "$BASE.id")
want="context=$context_hash base=$base_id wheels=$wheels_key umoci=$UMOCI_VERSION"

# ------------------------------------------------------------------ 2. wheels
if [ "${FORCE:-0}" = 1 ] || [ ! -f "$WHEELS/.complete" ]; then
  log "wheels: pip download (deploy/image/requirements.txt)"
  rm -rf "$OUT/wheels"; mkdir -p "$WHEELS"
  PYTHON="$PYTHON" sh "$HERE/wheels.sh" "$WHEELS"
  touch "$WHEELS/.complete"
else
  log "wheels: cached"
fi

# ------------------------------------------------------------------ 3. root filesystem
WORK="$OUT/work"
LAYOUT="$WORK/oci"
BUNDLE="$WORK/bundle"
rm -rf "$WORK"; mkdir -p "$WORK"
log "OCI layout: umoci init/new/unpack"
"$UMOCI" init --layout "$LAYOUT"
"$UMOCI" new --image "$LAYOUT:latest"
"$UMOCI" unpack --image "$LAYOUT:latest" "$BUNDLE" >/dev/null
ROOTFS="$BUNDLE/rootfs"
tar -xf "$BASE" -C "$ROOTFS" --numeric-owner
rm -rf "${ROOTFS:?}"/dev/*  # a container engine mounts its own /dev
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "layer 1: Debian $DEBIAN_SUITE base ($(size "$ROOTFS"))"
"$UMOCI" repack --refresh-bundle --image "$LAYOUT:latest" \
  --history.created "$created" --history.created_by "mmdebstrap $DEBIAN_SUITE minbase" "$BUNDLE"

log "app: copy the build context into /app"
mkdir -p "$ROOTFS/app"
(cd "$REPO" && python3 "$HERE/context.py" list | tar --null -T - -cf -) | tar -xf - -C "$ROOTFS/app" --no-same-owner
mkdir -p "$ROOTFS/tmp/wheels"
log "app: install.sh in a chroot (virtualenv, collectstatic, bytecode, user)"
# A private mount namespace: the mounts go away with it.
unshare --mount --fork env ROOTFS="$ROOTFS" WHEELS="$WHEELS" sh -euc '
  mount --rbind /dev "$ROOTFS/dev"
  mount -t proc proc "$ROOTFS/proc"
  mount --bind "$WHEELS" "$ROOTFS/tmp/wheels"
  run() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root WHEELS=/tmp/wheels "$@"; }
  run sh /app/deploy/image/install.sh app
  run sh /app/deploy/image/install.sh user
'
rmdir "$ROOTFS/tmp/wheels"
rm -rf "${ROOTFS:?}"/dev/* "$ROOTFS"/var/log/* "$ROOTFS"/root/.cache
dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f '${Package}=${Version}\n' | sort > "$WORK/debian-packages.lock"
if ! cmp -s "$WORK/debian-packages.lock" "$HERE/debian-packages.lock"; then
  log "note: the Debian packages differ from deploy/image/debian-packages.lock (security updates?):"
  diff "$HERE/debian-packages.lock" "$WORK/debian-packages.lock" | sed -n '/^[<>]/s/^/          /p' || true
  cp "$WORK/debian-packages.lock" "$OUT/debian-packages.lock"
  log "      new list: $OUT/debian-packages.lock (copy it to deploy/image/ to record it)"
fi

log "layer 2: the app ($(size "$ROOTFS/app"))"
"$UMOCI" repack --image "$LAYOUT:latest" \
  --history.created "$created" --history.created_by "deploy/image/install.sh app && install.sh user" "$BUNDLE"
revision=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
"$UMOCI" config --image "$LAYOUT:latest" --no-history --created "$created" \
  --os linux --architecture amd64 \
  --config.user 10001:10001 --config.workingdir /app \
  --config.env PATH=/app/.venv/bin:/usr/local/bin:/usr/bin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
  --config.entrypoint /app/deploy/image/entrypoint --config.cmd web \
  --config.exposedports 8000/tcp --config.stopsignal SIGTERM \
  --config.label org.opencontainers.image.title=ephemera \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.base.name=debian:$DEBIAN_SUITE (mmdebstrap minbase)" \
  --config.label "ephemera.context=$context_hash"
"$UMOCI" gc --layout "$LAYOUT"
echo "$(size "$LAYOUT") compressed, $(size "$ROOTFS") unpacked" > "$OUT/.size"
rm -rf "$BUNDLE"

log "OCI archive: ephemera-image.tar"
tar -C "$LAYOUT" -cf "$WORK/ephemera-image.tar" oci-layout index.json blobs
rm -rf "$OUT/oci" "$OUT/ephemera-image.tar"
mv "$LAYOUT" "$OUT/oci"
mv "$WORK/ephemera-image.tar" "$OUT/ephemera-image.tar"
rm -rf "$WORK"
echo "$want" > "$OUT/.stamp"
log "image built in $(( $(date +%s) - T0 ))s: $OUT/oci (tag latest), $(cat "$OUT/.size"); archive $OUT/ephemera-image.tar"

#!/usr/bin/env bash
# Builds Gitea (a Git forge that is also an OpenID Connect provider) from its Go module into
# ${EPHEMERA_CACHE:-$HOME/.cache/ephemera}/bin/gitea, for the tests (tests/gitea.py): sign-in
# through a real identity provider, and later the CI/CD forge tests.
#
# Gitea's module declares its own replace directives (and the path gitea.dev), so it cannot be
# a requirement of a wrapper go.mod: we download the pinned module version (checked against
# the pinned h1: hash below, as go.sum would), and build it with its own go.mod/go.sum.
# No cgo and no sqlite: the tests run Gitea on the embedded PostgreSQL.
# Templates, locales and images are read at run time from $CACHE/share/gitea/ (the
# frontend's JS/CSS bundle is not in the Go module; the sign-in and consent pages are plain
# HTML forms and work without it).
# A stamp (bin/.stamp-gitea) holds the version and hash; rebuilt only when they change or the
# binary is gone. Cold build: see README ("Gitea build").  Env: EPHEMERA_CACHE, FORCE=1.
set -euo pipefail

CACHE="${EPHEMERA_CACHE:-$HOME/.cache/ephemera}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

GITEA_MODULE="code.gitea.io/gitea"
# v1.26.0, not v1.27.3: the proxy serves code.gitea.io/gitea@v1.27.3, but that version moved
# its module path to gitea.dev and needs gitea.dev/actions-proto-go and gitea.dev/sdk, which
# the Go module proxy refuses (403), so it cannot be built from the proxy.
GITEA_VERSION="v1.26.0"
GITEA_SUM="h1:fJP9dqLbzKrKWUVnCVTfVersZdVDuyJQLEDzCAOmKKA="   # go.sum line of the module zip
STATIC="$CACHE/share/gitea"  # templates, options, public: read by tests/gitea.py

# Gitea v1.26 says `go 1.26.2`; the local Go 1.26.x satisfies it: never download a toolchain.
export GOTOOLCHAIN="${GITEA_GOTOOLCHAIN:-local}"
export GOFLAGS="-mod=readonly"
export CGO_ENABLED=0

T0=$(date +%s)
log() { printf '[gitea %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # retry, hash_files

want="$GITEA_MODULE@$GITEA_VERSION $GITEA_SUM"
if [ "${FORCE:-0}" != 1 ] && [ -f "$BIN/.stamp-gitea" ] && [ "$(cat "$BIN/.stamp-gitea")" = "$want" ] \
   && [ -x "$BIN/gitea" ] && [ -d "$STATIC/templates" ]; then
  log "gitea $GITEA_VERSION: up to date"; exit 0
fi

command -v go >/dev/null || { echo "go not found in PATH (Gitea $GITEA_VERSION needs Go >= 1.26.2)" >&2; exit 1; }

log "gitea $GITEA_VERSION: go mod download"
json=$(cd / && retry 3 go mod download -json "$GITEA_MODULE@$GITEA_VERSION")
dir=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
sum=$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p')
[ "$sum" = "$GITEA_SUM" ] || { echo "gitea $GITEA_VERSION: module hash $sum, expected $GITEA_SUM" >&2; exit 1; }
[ -f "$dir/go.mod" ] || { echo "gitea $GITEA_VERSION: no module source at '$dir'" >&2; exit 1; }

# Build in a writable copy (the module cache is read-only).
src="$CACHE/src/gitea-$GITEA_VERSION"
rm -rf "$src"; mkdir -p "$(dirname "$src")"
cp -r "$dir" "$src"; chmod -R u+w "$src"
log "gitea $GITEA_VERSION: go mod download (dependencies)"
(cd "$src" && retry 3 go mod download)
log "gitea $GITEA_VERSION: go build (cold: many minutes on 2 cores)"
(cd "$src" && go build -trimpath \
    -ldflags "-s -w -X 'main.Version=${GITEA_VERSION#v}' -X 'main.Tags='" \
    -o "$BIN/gitea.tmp" .)
mv -f "$BIN/gitea.tmp" "$BIN/gitea"

# Run-time files (the binary reads them from its static root without the bindata tag).
rm -rf "$STATIC.tmp"; mkdir -p "$STATIC.tmp" "$(dirname "$STATIC")"
cp -r "$src/templates" "$src/options" "$src/public" "$STATIC.tmp/"
rm -rf "$STATIC"; mv "$STATIC.tmp" "$STATIC"
rm -rf "$src"
echo "$want" > "$BIN/.stamp-gitea"
log "gitea $GITEA_VERSION: done ($("$BIN/gitea" --version | sed -n 1p)), took $(( $(date +%s) - T0 ))s"

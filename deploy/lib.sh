# Shared by deploy/*/build.sh: `. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"` after
# defining log().

retry() {  # retry <n> <cmd...>: for network steps
  local n=$1 i=1; shift
  until "$@"; do
    if [ "$i" -ge "$n" ]; then log "FAILED after $n attempts: $*"; return 1; fi
    log "attempt $i failed, retrying in $((i * 5))s: $*"; sleep $((i * 5)); i=$((i + 1))
  done
}

hash_files() { cat "$@" | sha256sum | cut -c1-16; }

#!/bin/sh
# Downloads the image's Python wheels (deploy/image/requirements.txt, pinned from
# requirements.lock) and pip itself into <dir>, for Linux x86_64 / CPython 3.11 (Debian
# bookworm's Python). Binary wheels only: nothing is compiled. Used by deploy/image/build.sh
# and by the Containerfile. Env: PYTHON (default python3). Retries network steps.
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
PIP_VERSION=25.3
mkdir -p "$out"
# glibc 2.36 (bookworm) runs every manylinux wheel up to manylinux_2_36: name each one
# (pip does not widen an explicit --platform by itself).
platforms=""
minor=36
while [ "$minor" -ge 5 ]; do
  platforms="$platforms --platform manylinux_2_${minor}_x86_64"
  minor=$((minor - 1))
done
platforms="$platforms --platform manylinux2014_x86_64 --platform manylinux2010_x86_64"
platforms="$platforms --platform manylinux1_x86_64"
i=1
until "$PYTHON" -m pip download --quiet --disable-pip-version-check --retries 5 \
    --no-deps --only-binary=:all: --dest "$out" \
    $platforms --implementation cp --python-version 3.11 --abi cp311 \
    -r "$here/requirements.txt" "pip==$PIP_VERSION"; do
  [ "$i" -ge 3 ] && { echo "wheels.sh: pip download failed 3 times" >&2; exit 1; }
  echo "wheels.sh: pip download failed, retrying ($i)" >&2; sleep $((i * 5)); i=$((i + 1))
done

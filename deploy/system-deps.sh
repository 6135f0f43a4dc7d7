#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, if missing: Chromium for the
# browser tests, openssl for the local cluster's certificates, mmdebstrap for the
# container image's Debian base (deploy/image/build.sh). Retries network steps.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
fc-list >/dev/null 2>&1 || need+=(fonts-dejavu-core)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "==> Installing Debian packages: ${need[*]}"
for i in 1 2 3; do
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; then
    exit 0
  fi
  echo "apt-get failed, retrying ($i)"; sleep 10
done
echo "Could not install ${need[*]} with apt-get" >&2
exit 1

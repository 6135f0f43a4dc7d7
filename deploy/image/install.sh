#!/bin/sh
# Runs inside the image's root filesystem, as root (a Containerfile RUN step, or a chroot
# in deploy/image/build.sh):
#   install.sh app   the virtualenv in /app/.venv from the wheels in $WHEELS (offline),
#                    static files collected, bytecode compiled (the root fs may be read-only)
#   install.sh user  the unprivileged user the image runs as: ephemera, uid/gid 10001
set -eu
WHEELS=${WHEELS:-/tmp/wheels}
case "${1:-}" in
app)
  cd /app
  pip_whl=$(ls "$WHEELS"/pip-*.whl)
  # No pip inside the image: pip runs from its wheel (python pip.whl/pip ...).
  python3 -m venv --without-pip /app/.venv
  pip() { /app/.venv/bin/python "$pip_whl/pip" --disable-pip-version-check --no-cache-dir "$@"; }
  pip install --quiet --no-index --no-deps --no-compile --find-links "$WHEELS" \
    -r /app/deploy/image/requirements.txt
  pip check
  # Production settings (DEBUG off) need these; collectstatic uses neither database nor Redis.
  env -i PATH=/usr/bin:/bin DJANGO_SETTINGS_MODULE=portal.settings \
    SECRET_KEY=only-used-while-building-the-image-to-collect-static-files-0123456789 \
    ALLOWED_HOSTS=localhost DATABASE_URL=postgresql://build@127.0.0.1:9/build \
    REDIS_URL=redis://127.0.0.1:9/0 \
    /app/.venv/bin/python manage.py collectstatic --noinput --verbosity 0
  # Hash-checked bytecode does not depend on file times (layers may not keep them).
  /app/.venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /app
  chmod -R go-w /app
  ;;
user)
  groupadd --gid 10001 ephemera
  useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
    --shell /usr/sbin/nologin ephemera
  ;;
*)
  echo "usage: install.sh app|user" >&2
  exit 2
  ;;
esac

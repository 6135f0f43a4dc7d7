# Ephemera: `make run` starts the portal, `make test` runs every test.
# Both set up a fresh machine themselves (virtualenv, pinned packages, the local
# Kubernetes control plane, Chromium for browser tests).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK_HASH := $(shell sha1sum requirements.lock pyproject.toml | sha1sum | cut -c1-12)
STAMP  := $(VENV)/.installed-$(LOCK_HASH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test install cluster cluster-stop helm forge lint format system-deps bench clean-data image

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> Installing pinned Python packages (requirements.lock)"
	@for i in 1 2 3; do $(BIN)/pip install -q --retries 5 -r requirements.lock && break; \
	  [ $$i = 3 ] && exit 1; echo "pip failed, retrying ($$i)"; sleep 5; done
	@for i in 1 2 3; do $(BIN)/pip install -q --no-deps -e . && break; \
	  [ $$i = 3 ] && exit 1; echo "pip failed, retrying ($$i)"; sleep 5; done
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# The local control plane (kube-apiserver & co. built from Go, etcd, kwok). Skipped
# when KUBECONFIG points at another cluster.
cluster: install
ifeq ($(KUBECONFIG),)
	bash deploy/localcluster/build.sh
	$(BIN)/python deploy/localcluster/localcluster.py start
else
	@echo "==> KUBECONFIG is set ($(KUBECONFIG)); not starting the local cluster"
endif

# helm (deploy/chart's tests and docs), built from its Go module like the control plane.
helm:
	ONLY=helm bash deploy/localcluster/build.sh

# Gitea (a Git forge and OpenID Connect provider) for the sign-in and forge tests,
# built once from its Go module into ~/.cache/ephemera/bin (tests/gitea.py runs it).
forge:
	bash deploy/gitea/build.sh

cluster-stop:
	$(BIN)/python deploy/localcluster/localcluster.py stop

# Debian packages the browser tests need (Chromium); a no-op when present.
system-deps:
	bash deploy/system-deps.sh

# The container image, built without a container engine (as root; cached: rebuilt only
# when its inputs change), then its smoke test. See docs/image.md.
image: install system-deps
	bash deploy/image/build.sh
	DEBUG=true $(BIN)/python -m pytest tests/test_image.py -q

run: install cluster
	$(BIN)/python deploy/run.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	DEBUG=true $(BIN)/mypy
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run

test: install cluster helm forge system-deps lint
	DEBUG=true $(BIN)/python -m pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install cluster
	DEBUG=true $(BIN)/python bench/provision.py
	DEBUG=true $(BIN)/python bench/dashboard.py

clean-data:
	$(BIN)/python -c "from pathlib import Path; from portal import embedded; embedded.wipe(Path('.ephemera'))"

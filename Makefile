# Developer entry points. Every target depends on `venv`, so a fresh clone needs only
# `make up` or `make test`. Extra arguments: `make up ARGS=--no-demo`, `make test ARGS='-k ledger'`.
# A NATS cluster and several workers per provider: `make up NODES=3 WORKERS=2`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# touched after a successful install: a newer lock or package manifest means "reinstall"
STAMP  := $(VENV)/.installed
# this repository's packages, each installable on its own (see README, Layout)
PACKAGES := shared services/router services/workers services/ledger services/emulators services/gateway client deploy/local bench
PROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
# what `make lock` resolves for every platform: exact versions and hashes, no index URLs
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --no-header \
	$(foreach p,fleet-shared fleet-router fleet-workers fleet-ledger fleet-emulators fleet-gateway modelrouter fleet-local fleet-bench,--no-emit-package $(p))

.PHONY: venv up down status demo test check bench soak schema lock browser

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Third-party packages only from the lock (hash-checked), then this repository's packages
# from their folders, without resolving anything again.
$(STAMP): requirements.lock $(PROJECTS) | $(PY)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation $(addprefix -e ./,$(PACKAGES))
	touch $@

# keeps every version already pinned unless a change needs another; take newer releases with
# `make lock ARGS=--upgrade` (or ARGS='--upgrade-package httpx')
lock: venv
	$(VENV)/bin/uv pip compile requirements.in $(LOCK_FLAGS) $(ARGS) -o requirements.lock
	$(PY) deploy/docker/lock_slice.py  # each service image's slice of the lock

# NODES: nats-servers (a JetStream cluster with R<NODES> streams) when none answers on NATS_URL;
# WORKERS: worker processes per provider. Both default to 1.
up: venv
	$(PY) -m fleet_local.cluster up $(if $(NODES),--nodes $(NODES)) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS)

down: venv
	$(PY) -m fleet_local.cluster down

status: venv
	$(PY) -m fleet_local.cluster status

demo: venv
	$(PY) -m fleet_local.demo $(ARGS)

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# tests/test_dashboard.py needs Debian's chromium: installed here when we are root, else it skips
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "chromium is missing: tests/test_dashboard.py will skip (apt-get install -y chromium)"

test: check browser
	$(PY) -m pytest -q $(ARGS)

bench: venv
	$(PY) -m fleet_bench $(ARGS)

# the fleet at half its measured capacity for SOAK_MINUTES (default 10): RSS and p99 drift (not in CI)
SOAK_MINUTES ?= 10
soak: venv
	$(PY) -m fleet_bench.soak --minutes $(SOAK_MINUTES) $(ARGS)

schema: venv
	$(PY) -m fleet_shared.schema deploy/schema

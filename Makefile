# Developer entry points. Every target depends on `venv`, so a fresh clone needs only
# `make up` or `make test`. Extra arguments: `make up ARGS=--no-demo`, `make test ARGS='-k ledger'`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# touched after a successful install: pyproject.toml newer than it means "reinstall"
STAMP  := $(VENV)/.installed

.PHONY: venv up down status demo test bench schema

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test,bench]'
	touch $@

up: venv
	$(PY) -m fleet_shared.cluster up $(ARGS)

down: venv
	$(PY) -m fleet_shared.cluster down

status: venv
	$(PY) -m fleet_shared.cluster status

demo: venv
	$(PY) -m fleet_shared.demo $(ARGS)

test: venv
	$(PY) -m pytest -q $(ARGS)

bench: venv
	$(PY) -m fleet_shared.bench $(ARGS)

schema: venv
	$(PY) -m fleet_shared.schema deploy/schema

# oximon — the front door. `make demo` and `make test` each do every install step they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench system venv clean

system:
	bash scripts/install-system.sh

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: system venv
	$(VENV)/bin/oximon up

test: system venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core devices ingest alerting api simulator oximon

bench: system venv
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .local results test-artifacts *.egg-info

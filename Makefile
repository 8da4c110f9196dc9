# oximon — the front door. `make demo` and `make test` each do every install step they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-clinical system venv clean

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

# Benchmarks write their tables under results/ (git-ignored) and print them.
bench: system venv
	$(PY) -m bench ingest --out results/ingest-1-worker
	$(PY) -m bench ingest --workers 2 --rates 20000,30000 --out results/ingest-2-workers
	$(PY) -m bench ingest --rates 20000 --duration 60 --out results/ingest-sustained-1-worker
	$(PY) -m bench ingest --rates 20000 --duration 60 --workers 2 --out results/ingest-sustained-2-workers
	$(PY) -m bench clinical
	$(PY) -m bench alerts
	$(PY) -m bench api --data-dir .local/bench-api  # seeds 43.2 M readings once (~18 min here), then reuses them
	$(PY) -m bench connections --out results/connections
	$(PY) -m bench locust --out results/locust

# The clinical benchmark needs no services: the pure engine over a synthetic population.
bench-clinical: venv
	$(PY) -m bench clinical $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .local results test-artifacts *.egg-info

# Two commands on a fresh machine with only Python: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# every package relay and its tests use, pinned with hashes (`make lock` refreshes it)
LOCK := requirements.lock

.PHONY: run test lint bench lock clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# the locked packages only (pip refuses any file whose hash the lock does not list), then
# relay itself: no dependency of its own choosing, built with the locked setuptools
$(VENV)/.installed: $(LOCK) pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/relay up --rules config/rules.yaml

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m bench

# style, the import layers (pyproject.toml [tool.importlinter]) and types
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check relay tests bench
	$(VENV)/bin/ruff format --check relay tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy relay

# the lock again from pyproject.toml (dependencies and the test extra), at the newest
# versions they allow; `make lock LOCK_FLAGS=` keeps the pins that still fit
LOCK_FLAGS ?= --upgrade
lock: | $(VENV)/bin/python
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile -q $(LOCK_FLAGS) --generate-hashes --allow-unsafe --extra test \
		--strip-extras --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache

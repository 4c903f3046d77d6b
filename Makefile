# Fondasi: `make run` serves it, `make test` tests it. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8000
HOST ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# llama-cpp-python compiles from source (10-20 min on 2 cores, then pip's wheel cache has it).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test install install-test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==26.3

$(VENV)/.server-installed: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-test.txt requirements-clients.txt $(VENV)/.server-installed
	$(PIP) install -r requirements-test.txt
	@# databricks-langchain cannot be resolved beside the server's pins: its tested set, pinned, without resolving.
	$(PIP) install --no-deps -r requirements-clients.txt
	@# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	touch $@

install: $(VENV)/.server-installed
install-test: $(VENV)/.test-installed

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_endpoints
	$(PY) manage.py bootstrap
	@echo "Fondasi on http://$(HOST):$(PORT)"
	FONDASI_WARMUP=$${FONDASI_WARMUP:-1} $(VENV)/bin/daphne -b $(HOST) -p $(PORT) playground.asgi:application

test: install-test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

# Everything a user runs. `make demo` and `make test` set up from scratch.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=
# Triton's embedded server ships in the nvidia-pytriton wheel; it pins numpy<2 but we only need its binary.
PYTRITON := nvidia-pytriton==0.7.0

.PHONY: setup test clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(VENV)/.installed  ## create .venv with pinned dependencies (CPU torch)

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -c constraints.txt
	$(PIP) install -q --no-deps $(PYTRITON)
	$(PIP) install -q --no-deps -e .
	touch $@

test: setup  ## run the test suite (CPU only; GPU/TensorRT tests skip with a reason)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

clean:  ## remove generated artifacts (keeps .venv)
	rm -rf artifacts .pytest_cache

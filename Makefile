# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing, install a CPU build of torch when the venv has none,
# then install bayesact (editable) with the extras the target needs.
# `make test-compat` checks the newest supported stack (Python 3.12, newest torch, ArviZ 1.x)
# in .venv-compat and records the result in docs/compat.md; `make test` stays the CI entry.

# Python 3.11 or 3.12 (the versions the README promises): the first of python3, python3.11,
# python3.12 that is one. Override with PYTHON=/path/to/python.
SUPPORTED_PYTHON := import sys; sys.exit(not 0x30B0000 <= sys.hexversion < 0x30D0000)
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(firstword $(foreach p,python3 python3.11 python3.12,$(if $(shell $(p) -c \
	'$(SUPPORTED_PYTHON)' 2>/dev/null && echo ok),$(p)))),python3)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch: the local wheel where pip can find one (2.13.0+cpu), otherwise the
# newest from PyTorch's CPU index; where neither is reachable (no CPU wheel for this Python, no
# network to that index), PyPI's default build, a multi-GB CUDA build that also runs on the CPU.
TORCH_CPU_PIN ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test lint pytest docs bench clean test-compat

$(PY):
	@$(PYTHON) -c '$(SUPPORTED_PYTHON)' || { echo "bayesact needs Python 3.11 or 3.12;" \
		"$(PYTHON) is $$($(PYTHON) --version 2>&1): run make PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null \
		|| $(PIP) install "$(TORCH_CPU_PIN)" \
		|| $(PIP) install --retries 1 torch --index-url $(TORCH_CPU_INDEX) \
		|| { echo "no CPU build of torch found: installing PyPI's default build"; $(PIP) install torch; }
	@touch $@

$(VENV)/.demo-deps: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[examples]"
	@touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[test,docs,examples]"
	@touch $@

demo: $(VENV)/.demo-deps
	MPLBACKEND=Agg $(PY) examples/functional_prior_bnn.py

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

pytest: $(VENV)/.test-deps
	$(PY) -m pytest -m "not slow and not gpu" -q

docs: $(VENV)/.test-deps
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: lint pytest docs

bench: $(VENV)/.test-deps
	$(PY) benchmarks/activations.py

# test-compat: Python 3.12 (pyenv's, else python3.12 on the PATH; override COMPAT_PYTHON),
# the newest torch pip allows (a CUDA build from PyPI, ~3 GB, runs on the CPU) and ArviZ 1.x.
COMPAT_PYTHON ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python) \
	$(shell command -v python3.12 2>/dev/null))
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python

$(COMPAT_VENV)/.deps: pyproject.toml
	@test -n "$(COMPAT_PYTHON)" || { echo "test-compat needs Python 3.12: COMPAT_PYTHON=/path/to/python3.12"; exit 1; }
	@$(COMPAT_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
		|| { echo "COMPAT_PYTHON=$(COMPAT_PYTHON) is not Python 3.12"; exit 1; }
	@test -x $(COMPAT_PY) || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --upgrade torch "arviz>=1"
	$(COMPAT_PY) -m pip install -e ".[test,examples]" "arviz>=1"
	@touch $@

test-compat: $(COMPAT_VENV)/.deps
	$(COMPAT_PY) tools/compat_report.py --page docs/compat.md

clean:
	rm -rf $(VENV) $(COMPAT_VENV) site .pytest_cache .ruff_cache

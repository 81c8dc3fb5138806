# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing, install a CPU build of torch when the venv has none,
# then install bayesact (editable) with the extras the target needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch: the local wheel where pip can find one (2.13.0+cpu),
# otherwise PyTorch's CPU index. Plain `pip install torch` would pull a multi-GB CUDA build.
TORCH_CPU_PIN ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test lint pytest docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null \
		|| $(PIP) install "$(TORCH_CPU_PIN)" \
		|| $(PIP) install torch --index-url $(TORCH_CPU_INDEX)
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

pytest: $(VENV)/.test-deps
	$(PY) -m pytest -m "not slow and not gpu" -q

docs: $(VENV)/.test-deps
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: lint pytest docs

bench: $(VENV)/.test-deps
	$(PY) benchmarks/activations.py

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache

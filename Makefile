# The README's two commands: `make demo` and `make test`. Both create the virtual environment
# on first use (idempotent: it is rebuilt only when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
# The CPU build on this machine's disk; a GPU user can pass TORCH_SPEC=torch (or a CUDA wheel).
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.brlm-installed

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/brlm run demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs

# The README's two commands: `make demo` and `make test`. Both create the virtual environment
# on first use (idempotent: it is rebuilt only when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
# The CPU build on this machine's disk; a GPU user can pass TORCH_SPEC=torch (or a CUDA wheel).
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.brlm-installed

.PHONY: setup demo test lint clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/brlm run demo
	@echo "relatório (report): runs/demo/report.md e runs/demo/report.html"

# The suite runs on every core (pytest-xdist; at most 4 workers, one thread each: see tests/conftest.py).
# One worker, as in a debugging session: `.venv/bin/python -m pytest -n 0 tests/test_x.py`.
test: setup
	$(PY) -m pytest -n auto --maxprocesses 4 --dist worksteal

# Optional: Debian's Chromium for the headless-browser test of report.html (tests/test_report_html.py
# skips without it). Never fails the build when apt is missing or offline.
browser:
	-command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && apt-get update -qq && apt-get install -y -qq chromium) || echo "chromium not installed: the browser test will be skipped"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs

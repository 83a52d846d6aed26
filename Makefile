# strongroom: `make demo` runs a backup/restore demo, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit venv system-tools bench bench-pitr faults clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-tools:
	@bash scripts/ensure-system-tools.sh

demo: venv
	@bash scripts/demo.sh

lint: venv
	$(BIN)/ruff check src tests scripts $(wildcard bench)
	$(BIN)/ruff format --check src tests scripts $(wildcard bench)

typecheck: venv
	$(BIN)/mypy src bench

unit: venv system-tools
	$(BIN)/pytest -q

test: lint typecheck unit

bench: venv system-tools
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-pitr: venv system-tools
	$(BIN)/python bench/pitr_bench.py $(PITR_ARGS)

faults: venv system-tools
	$(BIN)/python -m bench.faults $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache

# Two entry points, both self-contained on a fresh machine:
#   make demo   set up .venv and run the end-to-end demo on synthetic data
#   make test   set up .venv, run the linters (make lint) and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeleuk-installed
# timm imports torchvision; on these machines the 2.13 CPU wheel breaks torchvision's import.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= cpu,train,dev,ray,serving-test

.PHONY: setup demo lint test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' $(TORCH_PINS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeleuk demo --out demo-run

# ruff (rules in pyproject.toml) and the import contracts (torch-free runtime, no cycles).
lint: $(STAMP)
	$(BIN)/ruff check edgeleuk tests benchmarks
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/standard.py

clean:
	rm -rf $(VENV) demo-run build *.egg-info

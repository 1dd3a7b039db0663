# Two entry points, both self-contained on a fresh machine:
#   make demo   set up .venv with what the demo runs, and run it on synthetic data
#   make test   set up .venv with everything, run the linters (make lint) and the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test processes for `make mutate`: more than the cores help, as many of its tests wait on watch's polling
# rather than compute (lower it to keep the machine free for other work).
MUTATE_JOBS ?= 4
# timm imports torchvision; on these machines the 2.13 CPU wheel breaks torchvision's import.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Tests, linters and the docs build: every extra except gpu (it would shadow onnxruntime).
EXTRAS ?= cpu,train,dev,ray,serving-test,docs
STAMP := $(VENV)/.edgeleuk-installed
# The demo trains, exports fp32 + INT8 (NNCF), predicts and benches: no Ray, tritonclient or test tools.
DEMO_EXTRAS ?= cpu,train
DEMO_STAMP := $(VENV)/.edgeleuk-demo-installed
SITE := build/site

.PHONY: setup demo lint docs test test-fast bench mutate clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' $(TORCH_PINS)
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[$(DEMO_EXTRAS)]' $(TORCH_PINS)
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/edgeleuk demo --out demo-run

# ruff (rules in pyproject.toml), the import contracts (layers, torch-free runtime, no cycles)
# and the documentation site (a broken link or a page missing from nav fails the build).
lint: $(STAMP)
	$(BIN)/ruff check edgeleuk tests benchmarks
	$(BIN)/lint-imports --no-cache
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)

# The documentation site alone, into build/site (open build/site/index.html).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)

test: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/standard.py

# Mutation testing of the modules that carry the guarantees (docs/mutation.md); not part of `make test`.
# About 30 minutes on 2 cores: niced, one test process at a time. Results stay in mutants/ (a rerun
# only tests what changed); the report is benchmarks/mutation/REPORT.md, and fails under 90 % killed.
mutate: $(STAMP)
	nice -n 15 $(BIN)/mutmut run --max-children $(MUTATE_JOBS)
	$(BIN)/python benchmarks/mutation/report.py

clean:
	rm -rf $(VENV) demo-run build site mutants *.egg-info

# dermsweep: every target installs into .venv/ first when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HAM10000 ?= ../shared/data/ham10000
WEIGHTS ?= ../shared/weights
SWEEP ?= smoke
# PyTorch for the PyTorch backend's test (tests/test_backends.py): 2.13.0 is the CPU build these machines hold
# (`pip install torch` elsewhere pulls PyPI's CUDA build, GBs). TORCH= skips it; that test then says it skipped.
TORCH ?= torch==2.13.0
PORT ?= 8765
PYTEST_ARGS ?=

.PHONY: install lint format test test-bench demo train sweep ui promote runs export predict web bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# hatchling's editable install is a .pth on src/: keeps hydra_plugins visible to Hydra's plugin scan.
	$(PY) -m pip install -q -e ".[dev]"
	$(if $(TORCH),$(PY) -m pip install -q "$(TORCH)")
	@if [ "$(GPU)" = "1" ]; then $(PY) -m pip uninstall -q -y tensorflow-cpu; $(PY) -m pip install -q -e ".[gpu]"; fi
	touch $(STAMP)

install: $(STAMP)  ## create .venv/ and install dermsweep with its test tools and JAX, PyTorch (GPU=1: CUDA TensorFlow)

lint: $(STAMP)  ## ruff (lint + format check), mypy, and the architecture's import contracts (lint-imports)
	$(VENV)/bin/ruff check src tests bench train.py
	$(VENV)/bin/ruff format --check src tests bench train.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench train.py
	$(VENV)/bin/ruff format src tests bench train.py

# Two workers, whole files each (a file's fixtures are built once): most tests wait on subprocesses and I/O.
TEST_WORKERS ?= 2

test: $(STAMP)  ## run the test suite (TEST_WORKERS=0 for one process)
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

test-bench: $(STAMP)  ## run the heavy bench/ scripts end to end at --tiny size (minutes each; not in make test)
	$(PY) -m pytest tests/test_bench.py -m bench $(PYTEST_ARGS)

demo: $(STAMP)  ## small sweep on synthetic data, promote the winner, show where to look
	$(VENV)/bin/dermsweep demo

# v1 a=0.75 at 150x200: the best backbone on validation over two seeds (0.716, 0.720 against v2 a=0.35's 0.717,
# 0.688; docs/quality.md), which is what the default config composes; its ImageNet weights come from WEIGHTS.
# ~50 minutes on 2 cores.
train: $(STAMP)  ## one real training run on HAM10000 with the sweep-chosen recipe (HAM10000=path WEIGHTS=path)
	$(PY) train.py data.root=$(HAM10000) paths.weights_dir=$(WEIGHTS) $(ARGS)

sweep: $(STAMP)  ## run a sweep from sweeps/ (SWEEP=name)
	$(PY) train.py -m +sweep=$(SWEEP) $(ARGS)

ui: $(STAMP)  ## MLflow UI on the local store
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (the runs view, not GenAI)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root ./mlruns --port 5000

runs: $(STAMP)  ## table of the best runs (ARGS='--sweep STUDY', '--json', '--metric NAME')
	$(VENV)/bin/dermsweep runs $(ARGS)

promote: $(STAMP)  ## register the best run and point @champion at it
	$(VENV)/bin/dermsweep promote $(ARGS)

export: $(STAMP)  ## export @champion to SavedModel, TFLite (f32, f16, int8) and ONNX, with a comparison table
	$(VENV)/bin/dermsweep export $(ARGS)

web: $(STAMP)  ## serve the browser app for @champion on localhost
	$(VENV)/bin/dermsweep web --port $(PORT) $(ARGS)

bench: $(STAMP)  ## run every benchmark in bench/
	$(PY) bench/run_all.py $(ARGS)

clean:  ## remove generated runs and outputs (keeps .venv)
	rm -rf outputs multirun bench/results
	find mlruns -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

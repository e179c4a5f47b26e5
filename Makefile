# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv, installs, runs the main job on the embedded sandbox
#   make test   - creates .venv, installs, runs the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all crds bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from the pinned CPU build, so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmops demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu and not realcluster" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not realcluster" -q

crds: $(STAMP)
	$(BIN)/llmops crds

clean:
	rm -rf $(VENV) .pytest_cache

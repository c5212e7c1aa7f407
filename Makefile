# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Local data mirror (see README "Data"). Override: make test SMELT_DATA_DIR=/path/to/data
SMELT_DATA_DIR ?= $(abspath ../shared/data)
export SMELT_DATA_DIR
# Optional extras installed for the test suite (heavy integrations are exercised in CI, not needed by the core).
EXTRAS ?= test,hf,curate,curate-test,eval-test,ray
# A CPU wheel is pinned on machines without an NVIDIA GPU; with a GPU, pip picks the CUDA build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install demo test test-slow bench clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e "$(if $(EXTRAS),.[$(EXTRAS)],.)" "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# The demo needs only the core package, not the test-only integrations.
demo:
	$(MAKE) install EXTRAS=
	$(VENV)/bin/smelt demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install
	SMELT_SLOW=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) bench/bench_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache

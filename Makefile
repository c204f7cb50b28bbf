# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# torch is pinned to the CPU build that lies on disk here; an unpinned torch pulls GBs of CUDA.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
SPEC ?= runtime/experiments/toy-pair.toml
OUT ?= runs/toy-pair

.PHONY: install test lint demo compare clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)" -e '.[dev]'
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

demo: install
	$(BIN)/mrl run $(SPEC) --out $(OUT)

compare: install
	$(BIN)/mrl run $(SPEC) --compare --out $(OUT)-compare

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

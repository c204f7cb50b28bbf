# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# torch is pinned to the CPU build that lies on disk here; an unpinned torch pulls GBs of CUDA.
# Every other package is held at the exact version in constraints.txt (what CI was green with).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
SPEC ?= runtime/experiments/toy-pair.toml
OUT ?= runs/toy-pair

.PHONY: install test lint demo compare clean constraints

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt "$(TORCH)" -e '.[dev]'
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

demo: install
	$(BIN)/mrl run $(SPEC) --out $(OUT)

compare: install
	$(BIN)/mrl run $(SPEC) --compare --out $(OUT)-compare

# Re-pin after a deliberate upgrade: every installed package at its version, less the project.
constraints: install
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | \
	  grep -v '^mrl-actors' | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

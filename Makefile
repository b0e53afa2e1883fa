# The commands a person types; CI (.ci/run) calls the same targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench lint clean

# torch first: `torch==2.13.0` takes the CPU build lying on CPU machines; on a GPU machine set
# TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
TORCH_SPEC ?= torch==2.13.0

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[local,modal,dev]"
	touch $@

install: $(VENV)/.installed

# The demo through the real stack: embedded DB + API + worker; submits the retail-shelf job
# (dreamforge-tiny, all 4 stages) over HTTP, follows it, prints metrics and the model path.
demo: install
	$(BIN)/dreamforge demo

# Two workers, one test file each (module-scoped stacks stay whole): stages train with one
# thread (OMP_NUM_THREADS=1), so one worker leaves a core idle; 795 tests took 1112 s alone
# and 649 s as two. TEST_WORKERS=0 runs in one process (pdb, -s).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(BIN)/python benchmarks/curriculum.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf models test-artifacts .pytest_cache

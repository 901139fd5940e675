# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# tpu: the compile-check test compiles for TPUs. CI adds parity (torch and transformers:
# the tests that load exports in transformers and the PyTorch benchmark references);
# without it those tests skip, saying why.
EXTRAS ?= test,tpu
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Pretrain the small GPT on Shakespeare, evaluate, print results and a sample.
demo: $(STAMP)
	$(PY) -m experiments.demo

# Two pytest workers (a CI machine has 2 cores); a file's tests stay in one worker,
# so its module fixtures are built once.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -rs tests

clean:
	rm -rf runs .pytest_cache

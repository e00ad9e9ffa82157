# Two commands for a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test test-all test-cluster bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py demo-out

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ''

# Ray (~400 MB, ~80 s to install) and torchrun tests: not in CI's time budget.
test-cluster: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[cluster]'
	$(PY) -m pytest -q -m '' tests/test_ray.py tests/test_distributed.py

clean:
	rm -rf demo-out .pytest_cache

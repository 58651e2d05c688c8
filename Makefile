# `make test` and `make report` are the only commands: each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test report clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow and not thorough" $(PYTEST_ARGS)

report: $(STAMP)
	$(PY) -m reports report

clean:
	rm -rf $(VENV) reports/output .pytest_cache

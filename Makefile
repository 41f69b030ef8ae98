# The README's two commands are `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first, so no multi-GB CUDA build is pulled in on a machine without a GPU
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[gp,dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/hpo serve

demo: serve

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check hpo api search_spaces workers dashboards tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) hpo.db hpo.db-wal hpo.db-shm

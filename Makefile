# The README's two commands are `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve demo test lint clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: on this project's CI machines 2.13.0 is a CPU build on local disk;
	# elsewhere pip takes PyPI's build (CUDA on Linux), which is what a GPU worker wants
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[workers,gp,dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/hpo serve

demo: $(STAMP)
	$(VENV)/bin/hpo demo

# the dashboard tests drive Debian's Chromium; Playwright's own browser download cannot work here
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  { echo "the browser tests need Chromium: apt-get install -y chromium (as root)" >&2; exit 1; }

test: $(STAMP) chromium
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check hpo api search_spaces workers dashboards controller tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) hpo.db hpo.db-wal hpo.db-shm

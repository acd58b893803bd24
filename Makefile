# The two commands a newcomer needs: `make run` (dashboard on a bundled sample) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8501

.PHONY: install run test test-fast lint samples bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py --server.headless=true --server.port=$(PORT) \
		--browser.gatherUsageStats=false --server.fileWatcherType=none

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: $(STAMP)  # skips tests marked slow (CI runs everything)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m 'not slow'

samples: $(STAMP)
	$(PY) sample_models/build_samples.py

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

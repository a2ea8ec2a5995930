# instructrl: `make demo` runs the default end-to-end job, `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
TORCH  ?= torch==2.13.0

.PHONY: demo test install install-dev bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: a range that the local CPU build satisfies keeps pip from pulling CUDA wheels
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-run: $(VENV)/.installed
	$(PIP) install -q -e '.[run]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed-run
	$(VENV)/bin/instructrl run

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache

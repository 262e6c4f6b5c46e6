# Two commands do all set-up: `make run` (install, then serve the app on the embedded default)
# and `make test` (install, then lint and run the whole test suite on every core, printing its 15
# slowest tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m app

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto --durations=15

clean:
	rm -rf $(VENV) lab-data

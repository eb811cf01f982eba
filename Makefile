# Quick start: `make demo` (runs the Celery examples against real consumers), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

demo: install
	$(BIN)/python -m hueyapp.demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info hueyapp.db hueyapp.db-wal hueyapp.db-shm

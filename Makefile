# Quick start: `make demo` (runs the Celery examples against real consumers), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

demo: install
	$(BIN)/python -m hueyapp.demo

test: install
	$(BIN)/python -m pytest -q

# hueyapp against Huey (SQLite, Redis), Celery and RQ; see docs/benchmarks.md (~7 minutes).
# The script and the Redis peers run in $(BENCH_VENV) (celery, redis, rq); the SQLite workers
# run from $(VENV), which has no redis-py: Huey imports it whenever it is installed.
BENCH_VENV ?= .venv-bench

bench: install
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -e . 'celery[redis]' redis rq
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || (mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log)
	$(BENCH_VENV)/bin/python benchmarks/run.py --sqlite-venv $(VENV) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info hueyapp.db hueyapp.db-wal hueyapp.db-shm hueyapp.db-writer

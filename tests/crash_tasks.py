"""Tasks of the crash and stress tests, which record every run in a separate SQLite file.

Consumers run them with ``huey_consumer tests.crash_tasks.huey`` (cwd: the checkout, and
``PYTHONPATH`` naming it). A task cannot see its own id, so each call carries a *token*; each
run inserts a ``start`` row before the work and a ``finish`` row after it into the events
file named by ``CRASH_LOG_DB`` (set in the consumer's environment). Two ``finish`` rows for
one token mean the task's body ran to the end twice: a duplicated execution, whatever the
result store says.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time

from hueyapp.lock import single_run
from hueyapp.tasks import app, hipri, huey  # noqa: F401  (re-exported for huey_consumer)

__all__ = ['app', 'huey', 'hipri', 'crash_slow', 'crash_total', 'crash_single', 'stress_add',
           'init_events', 'read_events', 'LOG_ENV']

LOG_ENV = 'CRASH_LOG_DB'

_local = threading.local()


def init_events(path: str | os.PathLike) -> None:
    """Create the events file (the test does this before any consumer starts)."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        conn.execute('pragma journal_mode = wal')
        conn.execute('create table if not exists events ('
                     'token text not null, event text not null, pid integer not null, '
                     'ts real not null)')
    finally:
        conn.close()


def read_events(path: str | os.PathLike) -> list[tuple[str, str, int, float]]:
    """Every recorded event, in the order written: (token, event, pid, unix time)."""
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        return conn.execute('select token, event, pid, ts from events order by rowid').fetchall()
    finally:
        conn.close()


def _events_connection() -> sqlite3.Connection:
    # One connection per thread (thread workers) and per process (forked process workers).
    conn = getattr(_local, 'conn', None)
    if conn is None or getattr(_local, 'pid', None) != os.getpid():
        conn = sqlite3.connect(os.environ[LOG_ENV], timeout=30, isolation_level=None)
        conn.execute('pragma synchronous = normal')
        _local.conn, _local.pid = conn, os.getpid()
    return conn


def record(token: str, event: str) -> None:
    """One committed row per event: it survives a SIGKILL right after this returns."""
    _events_connection().execute('insert into events (token, event, pid, ts) values (?, ?, ?, ?)',
                                 (token, event, os.getpid(), time.time()))


@app.task()
def crash_slow(token: str, seconds: float = 2.0) -> str:
    """The workload of the crash tests: start, sleep, finish, return the token."""
    record(token, 'start')
    time.sleep(seconds)
    record(token, 'finish')
    return token


@app.task()
def crash_total(values: list, token: str) -> list:
    """A chord body: records its run and returns the header's values as it received them."""
    record(token, 'start')
    record(token, 'finish')
    return list(values)


@app.task()
@single_run(key=lambda token, key, seconds: key, expire=600)
def crash_single(token: str, key: str, seconds: float) -> str:
    """One run per ``key`` at a time; a call that finds the lock held returns None unrun."""
    record(token, 'start')
    time.sleep(seconds)
    record(token, 'finish')
    return token


@app.task()
def stress_add(token: str, x: int, y: int) -> int:
    """The stress workload: one ``run`` row per execution, and the sum."""
    record(token, 'run')
    return x + y

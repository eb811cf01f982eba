"""Tasks of the poison-message, CLI, periodic, hygiene and security tests, on the default app.

Consumers run them with ``huey_consumer tests.poison_tasks.huey`` (cwd: the checkout, with
``PYTHONPATH`` set to it so ``tests`` imports). Names are unique to this module.

Side effects that prove a task ran (or did not) go to files whose paths the test passes in.
"""
from __future__ import annotations

import datetime
import os
import signal
import threading
import time

from hueyapp.tasks import add, app, huey, hipri  # noqa: F401  (re-exported for huey_consumer)
from tests.waiting import wait_until  # noqa: F401  (the poison tests import it from here)

__all__ = ['add', 'app', 'huey', 'hipri', 'suicide', 'die_once', 'touch', 'record', 'started_then_sleep',
           'raise_unpicklable', 'return_unserializable', 'size', 'grow', 'tick',
           'declare_tick', 'TICK_NAME', 'LockedError', 'Evil']


@app.task()
def suicide():
    """Kills the process running it, as an OOM kill would: the worker dies mid-task."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task()
def die_once(marker: str) -> str:
    """Kills its worker process the first time (no ``marker`` yet), succeeds once it exists:
    a poison message whose cause an operator fixed before replaying it."""
    if not os.path.exists(marker):
        with open(marker, 'a'):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return 'survived'


@app.task()
def touch(path: str) -> str:
    """Creates ``path``: its existence proves this task ran."""
    with open(path, 'a'):
        pass
    return path


@app.task()
def record(path: str, token: str) -> int:
    """Appends ``token`` to ``path`` (one line per execution); returns the number of lines."""
    with open(path, 'a') as f:
        f.write(token + '\n')
    with open(path) as f:
        return len(f.read().splitlines())


@app.task()
def started_then_sleep(marker: str, seconds: float, value):
    """Creates ``marker`` when it starts, sleeps, returns ``value``."""
    with open(marker, 'a'):
        pass
    time.sleep(seconds)
    return value


class LockedError(Exception):
    """An exception whose args cannot be pickled (a lock in them)."""


@app.task()
def raise_unpicklable(message: str):
    raise LockedError(message, threading.Lock())


@app.task()
def return_unserializable():
    return threading.Lock()


@app.task()
def size(blob: bytes) -> int:
    return len(blob)


@app.task()
def grow(n: int) -> bytes:
    """Returns ``n`` bytes (a big value for the next step of a chain)."""
    return b'g' * n


# -- periodic ---------------------------------------------------------------------------------
TICK_NAME = 'poison_tick'
TICK_LOG_ENV = 'POISON_TASKS_TICK_LOG'


def tick_due(dt: datetime.datetime) -> bool:
    """Every minute of the year 2030 (freezegun tests), or every minute in a consumer whose
    environment names a tick log (real-consumer tests); never otherwise, so the schedulers
    of other tests that import this module never fire it."""
    return dt.year == 2030 or bool(os.environ.get(TICK_LOG_ENV))


def _tick() -> str:
    path = os.environ.get(TICK_LOG_ENV)
    if path:
        with open(path, 'a') as f:
            f.write(f'{os.getpid()}\n')
    return 'tick'


def declare_tick(target_app):
    """Declare the periodic task on ``target_app`` (each app has its own task registry)."""
    return target_app.periodic_task(tick_due, name=TICK_NAME)(_tick)


tick = declare_tick(app)


class Evil:
    """Unpickling this creates ``path``: a forged pickle that would run code in a consumer."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


# -- helpers the tests of these tasks share ---------------------------------------------------
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Consumers of tests.poison_tasks must import the `tests` package from the checkout.
WORKER_ENV = {'PYTHONPATH': CHECKOUT}
WORKER = 'tests.poison_tasks.huey'


def connect(db):
    """A plain sqlite3 connection to the test database (autocommit), as an intruder would open."""
    import sqlite3
    return sqlite3.connect(str(db), timeout=30, isolation_level=None, check_same_thread=False)


def insert_task_row(db, data: bytes, queue: str = 'default', priority: float = 0) -> int:
    """Write a row straight into the `task` table; returns its id."""
    conn = connect(db)
    try:
        return conn.execute('insert into task (queue, data, priority) values (?, ?, ?)',
                            (queue, data, priority)).lastrowid
    finally:
        conn.close()


def query(db, sql: str, params=()) -> list:
    conn = connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def dead_letter_rows(db) -> list:
    """(id, queue, reason, deliveries, data) of every dead letter, oldest first."""
    return query(db, 'select id, queue, reason, deliveries, data from hueyapp_dead_letter order by id')



"""Plain Huey as the benchmarks run it: the tasks every peer runs (the same functions as
hueyapp), and ``SqliteHuey`` at ``synchronous=NORMAL``, hueyapp's default.

Huey's own ``fsync`` flag only knows FULL (``fsync=True``) and OFF (``fsync=False``), so the
pragma is set by a storage subclass on every connection it opens.
"""
from __future__ import annotations

import sqlite3

from huey import Huey, SqliteHuey
from huey.api import TaskWrapper
from huey.storage import SqliteStorage


class NormalSyncSqliteStorage(SqliteStorage):
    """``SqliteStorage`` whose commits do not wait for an fsync (WAL still survives kill -9)."""

    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.execute('pragma synchronous=NORMAL')
        return conn


class NormalSyncSqliteHuey(SqliteHuey):
    storage_class = NormalSyncSqliteStorage


def declare_tasks(huey: Huey) -> tuple[TaskWrapper, TaskWrapper]:
    """``add`` (every scenario) and ``xsum`` (the chord's body), as in ``hueyapp.tasks``."""

    @huey.task()
    def add(x, y):
        return x + y

    @huey.task()
    def xsum(numbers):
        return sum(numbers)

    return add, xsum

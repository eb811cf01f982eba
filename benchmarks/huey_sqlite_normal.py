"""Plain Huey on SQLite with ``synchronous=NORMAL``, hueyapp's setting, for benchmarks/run.py.

    huey_consumer benchmarks.huey_sqlite_normal.huey

Huey's own ``fsync`` flag only knows FULL (``fsync=True``) and OFF (``fsync=False``), so the
pragma is set by a storage subclass on every connection it opens.
"""
import os
import sqlite3

from huey import SqliteHuey
from huey.storage import SqliteStorage

from benchmarks.huey_tasks import declare_tasks


class NormalSyncSqliteStorage(SqliteStorage):
    """``SqliteStorage`` whose commits do not wait for an fsync (WAL still survives kill -9)."""

    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.execute('pragma synchronous=NORMAL')
        return conn


class NormalSyncSqliteHuey(SqliteHuey):
    storage_class = NormalSyncSqliteStorage


huey = NormalSyncSqliteHuey('bench-sqlite-normal',
                            filename=os.environ.get('BENCH_HUEY_DB', 'bench-huey-normal.db'))
add, xsum = declare_tasks(huey)

"""Plain Huey on SQLite at its defaults (synchronous FULL) for benchmarks/run.py.

    huey_consumer benchmarks.huey_sqlite.huey
"""
import os

from huey import SqliteHuey

from benchmarks.huey_tasks import declare_tasks

huey = SqliteHuey('bench-sqlite', filename=os.environ.get('BENCH_HUEY_DB', 'bench-huey.db'))
add, xsum = declare_tasks(huey)

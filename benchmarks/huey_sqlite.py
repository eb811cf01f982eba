"""Plain Huey on SQLite for benchmarks/run.py: ``huey_consumer benchmarks.huey_sqlite.huey``."""
import os

from huey import SqliteHuey

huey = SqliteHuey('bench-sqlite', filename=os.environ.get('BENCH_HUEY_DB', 'bench-huey.db'))


@huey.task()
def add(x, y):
    return x + y

"""Plain Huey on SQLite with ``synchronous=NORMAL``, hueyapp's setting, for benchmarks/run.py.

    huey_consumer benchmarks.huey_sqlite_normal.huey
"""
import os

from benchmarks.huey_tasks import NormalSyncSqliteHuey, declare_tasks

huey = NormalSyncSqliteHuey('bench-sqlite-normal',
                            filename=os.environ.get('BENCH_HUEY_DB', 'bench-huey-normal.db'))
add, xsum = declare_tasks(huey)

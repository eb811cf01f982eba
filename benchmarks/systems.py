"""The systems benchmarks/run.py compares: a client in this process and a worker command each.

A system's *state* is numbered: ``fresh()`` moves to the next number, which is a new SQLite
file for the SQLite systems and a FLUSHDB-ed Redis DB for the Redis ones. A producer process
builds the same system on the same state number to enqueue into the same queue.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmarks.processes import Worker, base_env

REDIS_URL = 'redis://127.0.0.1:6379'
DB_HUEY_REDIS, DB_CELERY_BROKER, DB_CELERY_BACKEND, DB_RQ = 10, 11, 12, 13
CURRENT_VENV = Path(sys.prefix)

# Worker pools a drain runs with, by key: the report's label. The resident worker, which
# stays up for the idle and round-trip scenarios, is the one-thread one.
POOLS = {'thread1': '1 thread', 'threads4': '4 threads', 'processes2': '2 processes'}
RESIDENT_POOL = 'thread1'
HUEY_CONSUMER_FLAGS = {'thread1': ('-w', '1'), 'threads4': ('-w', '4'),
                       'processes2': ('-k', 'process', '-w', '2')}
BULK_KINDS = ('group', 'chord', 'map')
SYNCHRONOUS_NAMES = {0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA'}


def redis_client(db: int):
    import redis
    return redis.Redis.from_url(f'{REDIS_URL}/{db}')


def add_arguments(n: int) -> list[tuple[int, int]]:
    """The arguments of the n tasks of every bulk enqueue: ``add(i, i)``."""
    return [(i, i) for i in range(n)]


def add_signatures(task: Any, n: int) -> Iterable:
    return (task.s(*arguments) for arguments in add_arguments(n))


class System:
    """A task system under test; subclasses fill in the calls and the worker command."""

    name = ''
    marker = ''  # the line of the worker's log that says it is ready
    on_sqlite = False  # its workers run from --sqlite-venv
    pools: Mapping[str, tuple[str, ...]] = HUEY_CONSUMER_FLAGS  # worker flags per pool it has
    bulk_kinds: tuple[str, ...] = BULK_KINDS  # which of group, chord, map it has

    def __init__(self, tmp: Path, state: int = 0, venv: Path = CURRENT_VENV) -> None:
        self.tmp, self.state, self.venv = tmp, state, venv
        self.queue_name = f'bench-{tmp.name}'  # the same in producer processes
        os.environ.update(self.settings())  # the client reads the settings its workers get

    # -- state --------------------------------------------------------------------------
    def fresh(self) -> None:
        """Move to new, empty state; called while no worker of this system runs."""
        self.state += 1
        self.use_state(self.state)
        self.clear()

    def use_state(self, state: int) -> None:
        """Point the client at state number ``state`` (a file of its own on SQLite)."""

    def clear(self) -> None:
        """Empty the current state (Redis: FLUSHDB; a new SQLite file is empty already)."""

    def db_path(self, state: int) -> Path:
        return self.tmp / f'{self.name}-{state}.db'

    # -- workers ------------------------------------------------------------------------
    def worker(self, pool: str) -> Worker:
        return Worker(self.worker_command(pool), self.worker_env(),
                      self.tmp / f'{self.name}-{pool}.log', self.marker)

    def worker_command(self, pool: str) -> list[str]:
        raise NotImplementedError

    def settings(self) -> dict[str, str]:
        """Environment variables pointing a client or worker at the current state."""
        return {}

    def worker_env(self) -> dict[str, str]:
        return base_env(**self.settings())

    def script(self, name: str) -> str:
        return str(self.venv / 'bin' / name)

    # -- calls --------------------------------------------------------------------------
    def enqueue(self, i: int) -> Any:
        """``add(i, i)``, one task; returns the handle ``ready`` and ``get`` take."""
        raise NotImplementedError

    def ready(self, handle: Any) -> bool:
        raise NotImplementedError

    def get(self, handle: Any, timeout: float) -> Any:
        raise NotImplementedError

    def stop_waiting(self) -> None:
        """Stop listening for the results of the tasks sent so far (a drain's backlog)."""

    def synchronous(self) -> str | None:
        """SQLite's ``synchronous`` for this system's commits; None off SQLite."""
        return None

    def close(self) -> None:
        self.clear()


class CeleryStyleCalls:
    """hueyapp and Celery answer to the same calls: that is hueyapp's point."""

    add: Any
    xsum: Any
    group_class: Any
    chord_class: Any

    def enqueue(self, i: int) -> Any:
        return self.add.delay(i, i)

    def ready(self, handle: Any) -> bool:
        return handle.ready()

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def enqueue_group(self, n: int) -> None:
        self.group_class(add_signatures(self.add, n)).apply_async()

    def enqueue_chord(self, n: int) -> None:
        self.chord_class(add_signatures(self.add, n), self.xsum.s()).apply_async()


class HueyappSystem(CeleryStyleCalls, System):
    name, marker, on_sqlite = 'hueyapp', 'Huey consumer started', True

    def __init__(self, tmp: Path, state: int = 0, venv: Path = CURRENT_VENV) -> None:
        super().__init__(tmp, state, venv)
        from hueyapp import tasks
        from hueyapp.canvas import chord, group
        self.app, self.add, self.xsum = tasks.app, tasks.add, tasks.xsum
        self.group_class, self.chord_class = group, chord

    def settings(self) -> dict[str, str]:
        return {'HUEYAPP_DB': str(self.db_path(self.state)), 'HUEYAPP_IMMEDIATE': '0'}

    def use_state(self, state: int) -> None:
        self.app.configure(db=str(self.db_path(state)))

    def worker_command(self, pool: str) -> list[str]:
        return [self.script('huey_consumer'), 'hueyapp.tasks.huey', *self.pools[pool]]

    def enqueue_map(self, n: int) -> None:
        self.add.map(add_arguments(n))

    def synchronous(self) -> str:
        return self.app.settings.synchronous.upper()


class PlainHueySystem(System):
    """Plain Huey, from a module with ``huey``, ``add`` and ``xsum``: ``add(i, i)`` enqueues,
    ``Result.get(blocking=True)`` waits."""

    marker = 'Huey consumer started'
    module_name = ''

    def __init__(self, tmp: Path, state: int = 0, venv: Path = CURRENT_VENV) -> None:
        super().__init__(tmp, state, venv)
        from huey import chord, group
        module = importlib.import_module(self.module_name)
        self.huey, self.add, self.xsum = module.huey, module.add, module.xsum
        self.group_class, self.chord_class = group, chord

    def worker_command(self, pool: str) -> list[str]:
        return [self.script('huey_consumer'), f'{self.module_name}.huey', *self.pools[pool]]

    def enqueue(self, i: int) -> Any:
        return self.add(i, i)

    def ready(self, handle: Any) -> bool:
        return self.huey.storage.has_data_for_key(handle.id)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout)

    def enqueue_group(self, n: int) -> None:
        self.huey.enqueue(self.group_class(list(add_signatures(self.add, n))))

    def enqueue_chord(self, n: int) -> None:
        self.huey.enqueue(self.chord_class(list(add_signatures(self.add, n)), self.xsum.s()))

    def enqueue_map(self, n: int) -> None:
        self.add.map(add_arguments(n))


class HueySqliteSystem(PlainHueySystem):
    name, on_sqlite, module_name = 'huey', True, 'benchmarks.huey_sqlite'

    def settings(self) -> dict[str, str]:
        return {'BENCH_HUEY_DB': str(self.db_path(self.state))}

    def use_state(self, state: int) -> None:
        self.huey.storage.close()
        self.huey.storage_kwargs['filename'] = str(self.db_path(state))
        self.huey.storage = self.huey.create_storage()

    def synchronous(self) -> str:
        (level,), = self.huey.storage.conn.execute('pragma synchronous').fetchall()
        return SYNCHRONOUS_NAMES.get(level, str(level))


class HueySqliteNormalSystem(HueySqliteSystem):
    name, module_name = 'huey-normal', 'benchmarks.huey_sqlite_normal'


class HueyRedisSystem(PlainHueySystem):
    name, module_name = 'huey-redis', 'benchmarks.huey_redis'

    def settings(self) -> dict[str, str]:
        return {'BENCH_REDIS_URL': f'{REDIS_URL}/{DB_HUEY_REDIS}'}

    def clear(self) -> None:
        redis_client(DB_HUEY_REDIS).flushdb()


class CelerySystem(CeleryStyleCalls, System):
    """Celery on Redis; its ``map`` is one task running every item, so it has no map here."""

    name, marker = 'celery', ' ready.'
    pools = {'thread1': ('-P', 'solo', '-c', '1'), 'threads4': ('-P', 'threads', '-c', '4'),
             'processes2': ('-P', 'prefork', '-c', '2')}
    bulk_kinds = ('group', 'chord')

    def __init__(self, tmp: Path, state: int = 0, venv: Path = CURRENT_VENV) -> None:
        super().__init__(tmp, state, venv)
        from celery import chord, group

        from benchmarks import celery_app
        self.add, self.xsum = celery_app.add, celery_app.xsum
        self.group_class, self.chord_class = group, chord

    def settings(self) -> dict[str, str]:
        return {'BENCH_CELERY_URL': f'{REDIS_URL}/{DB_CELERY_BROKER}',
                'BENCH_CELERY_BACKEND': f'{REDIS_URL}/{DB_CELERY_BACKEND}',
                'BENCH_CELERY_QUEUE': self.queue_name}

    def stop_waiting(self) -> None:
        # The client subscribes to every task it sends, and its next get() reads all their
        # results first: after a 10,000-task drain, seconds. A new subscription connection,
        # as a new producer process would have, keeps that out of the round trips.
        self.add.app.backend.result_consumer.stop()

    def clear(self) -> None:
        redis_client(DB_CELERY_BROKER).flushdb()
        redis_client(DB_CELERY_BACKEND).flushdb()

    def worker_command(self, pool: str) -> list[str]:
        return [self.script('celery'), '-A', 'benchmarks.celery_app', 'worker', *self.pools[pool],
                '--without-gossip', '--without-mingle', '--without-heartbeat',
                '-Q', self.queue_name, '--loglevel', 'INFO']


class RQSystem(System):
    """RQ: no threads, no chord, no map; ``enqueue_many`` stands for a group."""

    name, marker = 'rq', 'Listening on'
    func = 'benchmarks.rq_tasks.add'
    pools = {'thread1': ('worker', '--results-ttl', '600'), 'processes2': ('worker-pool', '-n', '2')}
    bulk_kinds = ('group',)

    def __init__(self, tmp: Path, state: int = 0, venv: Path = CURRENT_VENV) -> None:
        super().__init__(tmp, state, venv)
        from rq import Queue
        self.queue_class = Queue
        self.queue = Queue(self.queue_name, connection=redis_client(DB_RQ))

    def clear(self) -> None:
        redis_client(DB_RQ).flushdb()

    def worker_command(self, pool: str) -> list[str]:
        return [self.script('rq'), *self.pools[pool], '-u', f'{REDIS_URL}/{DB_RQ}', self.queue_name]

    def enqueue(self, i: int) -> Any:
        return self.queue.enqueue(self.func, i, i, result_ttl=600)

    def ready(self, handle: Any) -> bool:
        return handle.latest_result() is not None

    def get(self, handle: Any, timeout: float) -> Any:
        result = handle.latest_result(timeout=max(1, math.ceil(timeout)))
        if result is None:
            raise TimeoutError(f'rq job {handle.id} did not finish within {timeout}s')
        return result.return_value

    def enqueue_group(self, n: int) -> None:
        self.queue.enqueue_many([self.queue_class.prepare_data(self.func, arguments, result_ttl=600)
                                 for arguments in add_arguments(n)])


SYSTEMS: dict[str, type[System]] = {cls.name: cls for cls in (
    HueyappSystem, HueySqliteSystem, HueySqliteNormalSystem, HueyRedisSystem, CelerySystem, RQSystem)}

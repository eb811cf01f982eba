"""Tasks of the hostile-task tests: their code raises what is not an ``Exception``, or stops
its own worker. Declared on the default app.

Consumers run them with ``huey_consumer tests.hostile_tasks.huey`` (cwd: the checkout, with
``PYTHONPATH`` naming it so ``tests`` imports); this module re-exports the default app's
queues so that importing it registers these tasks too.

Each run leaves one file in the directory the test passes in (``record_run``), so a test
counts the runs of a task whatever its result store says.
"""
from __future__ import annotations

import os
import tempfile
import time

from hueyapp.tasks import add, app, huey, hipri  # noqa: F401  (re-exported for huey_consumer)

__all__ = ['add', 'app', 'huey', 'hipri', 'Hostile', 'RAISED', 'raise_base_exception',
           'signal_own_process', 'killed_by_its_hook', 'record_run', 'runs']


class Hostile(BaseException):
    """A BaseException of the task's own, as gevent's ``GreenletExit`` is."""


# What ``raise_base_exception(kind)`` raises, by kind.
RAISED = {
    'keyboard-interrupt': lambda: KeyboardInterrupt(),
    'system-exit': lambda: SystemExit(3),
    'generator-exit': lambda: GeneratorExit('closed by the task'),
    'hostile': lambda: Hostile('not an Exception'),
}


def record_run(runs_dir: str) -> None:
    """One new file per run (atomic, from any thread or process)."""
    descriptor, _ = tempfile.mkstemp(prefix='run-', dir=runs_dir)
    os.close(descriptor)


def runs(runs_dir: str | os.PathLike) -> int:
    """How many runs ``record_run`` recorded in ``runs_dir``."""
    return sum(1 for name in os.listdir(runs_dir) if name.startswith('run-'))


@app.task()
def raise_base_exception(runs_dir: str, kind: str):
    record_run(runs_dir)
    raise RAISED[kind]()


@app.task()
def signal_own_process(runs_dir: str, signum: int, then_sleep: float = 10.0) -> str:
    """Sends ``signum`` to the process running it, then lingers: a task whose run stops or
    interrupts its own worker every time."""
    record_run(runs_dir)
    os.kill(os.getpid(), signum)
    time.sleep(then_sleep)
    return 'not interrupted'


@app.task()
def killed_by_its_hook(runs_dir: str) -> str:
    """Never runs in a consumer: ``_exit_in_hook`` ends its worker thread first, and records
    each of those runs in ``runs_dir``."""
    return 'ran'


@huey.pre_execute()
def _exit_in_hook(task) -> None:
    """A pre-execute hook that raises SystemExit for ``killed_by_its_hook``: Huey lets it end
    the worker thread, outside the task's code, while the thread holds the task's delivery."""
    if isinstance(task, killed_by_its_hook.task_class):
        record_run(task.args[0])
        raise SystemExit(4)

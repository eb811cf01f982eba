"""Tasks only the consumer integration tests use, declared on the default app.

Consumers run them with ``huey_consumer tests.worker_tasks.huey`` and
``huey_consumer tests.worker_tasks.hipri`` (cwd: the checkout, so ``tests`` imports); this
module re-exports the default app's queues so that importing it registers these tasks too.
"""
from __future__ import annotations

import os
import time

from hueyapp.tasks import add, app, huey, hipri  # noqa: F401  (re-exported for huey_consumer)

__all__ = ['add', 'app', 'huey', 'hipri', 'echo', 'hipri_echo', 'waits_for_file']


@app.task()
def echo(*args, **kwargs):
    """Returns exactly what reached the function in the worker."""
    return args, kwargs


@app.task(queue='hipri')
def hipri_echo(*args, **kwargs):
    """Declared with its own default queue: ``delay`` sends it to hipri."""
    return args, kwargs


@app.task()
def waits_for_file(path: str, timeout: float) -> bool:
    """Holds its worker until ``path`` exists (True), or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True

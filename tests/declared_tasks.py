"""Tasks declared the ways Celery users declare them, for tests/test_task_options.py.

Consumers run them with ``huey_consumer tests.declared_tasks.huey``; the module re-exports
the default app's queues so that importing it registers these tasks too.
"""
from __future__ import annotations

import importlib

from hueyapp.tasks import app, huey, hipri  # noqa: F401  (re-exported for huey_consumer)

__all__ = ['app', 'huey', 'hipri', 'bare', 'named', 'returns_from', 'raises_from']


@app.task
def bare(x, y):
    """Declared without parentheses, as Celery's ``@app.task``."""
    return x + y


@app.task(name='sum-of-two-numbers')
def named(x, y):
    return x + y


@app.task()
def returns_from(module: str):
    """Returns a ``Thing`` of a module that only the worker can import."""
    return importlib.import_module(module).Thing()


@app.task()
def raises_from(module: str, plain: bool):
    """Raises ``Oops`` of a module only the worker can import, with a plain or a ``Thing`` arg."""
    found = importlib.import_module(module)
    raise found.Oops('plain words' if plain else found.Thing())

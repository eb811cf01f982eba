"""The app: its settings, its declared queues (one Huey each, one SQLite file), its tasks.

``hueyapp.tasks`` builds the app users get by default; the first app built in a process is
the *current* one, which ``AsyncResult(task_id)`` and the locks use when given no app.
"""
from __future__ import annotations

import dataclasses
import importlib
import sqlite3
from collections.abc import Callable

from hueyapp.config import Database, Settings, create_queues, storage_options
from hueyapp.engine import RoutedHuey
from hueyapp.result import AsyncResult
from hueyapp.serializer import create_serializer
from hueyapp.task_options import check_task_options

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any

_current: 'App | None' = None


def current_app() -> 'App':
    """The first app built in this process (importing ``hueyapp.tasks`` builds one)."""
    if _current is None:
        import hueyapp.tasks  # noqa: F401  (builds the default app)
    assert _current is not None
    return _current


class App:
    """Celery's ``app``: settings, queues, and the ``task`` decorator."""

    def __init__(self, settings: Settings | None = None) -> None:
        global _current
        self.settings = settings or Settings.from_env()
        self.database = Database.for_settings(self.settings)
        self.queues: dict[str, RoutedHuey] = create_queues(self.settings, self.database, app=self)
        if _current is None:
            _current = self

    def __repr__(self) -> str:
        return f'<App queues={list(self.queues)} db={self.database.target!r}>'

    @property
    def default(self) -> RoutedHuey:
        """The default queue's Huey (the first declared queue)."""
        return self.queues[self.settings.default_queue]

    def queue(self, name: str | None = None) -> RoutedHuey:
        """A declared queue's Huey; an unknown name raises ValueError listing the declared ones."""
        return self.default.queue_named(name or self.settings.default_queue)

    def task(self, queue: str | Callable | None = None, **options: Any) -> Callable:
        """Declare a task: ``@app.task``, or ``@app.task(queue=..., retries=..., name=...)``.

        Takes Huey's task options (retries, retry_delay, retry_backoff, priority, context,
        name, expires, timeout) and ``queue``; ``name=`` is the task's exact name, as in
        Celery. Any other option raises ``TypeError`` (see :mod:`hueyapp.task_options`).
        """
        if callable(queue) and not options:  # bare @app.task
            return self.task()(queue)
        check_task_options(options, strict=True, decorator='@app.task()')
        return self.queue(queue).task(**options)

    def periodic_task(self, validate_datetime: Callable, queue: str | None = None, **options: Any) -> Callable:
        """Declare a periodic task, e.g. ``@app.periodic_task(crontab(minute='0'))``."""
        check_task_options(options, strict=True, decorator='@app.periodic_task()')
        return self.queue(queue).periodic_task(validate_datetime, **options)

    def import_task_modules(self) -> None:
        """Import ``HUEYAPP_IMPORTS``, so this process knows the user's own tasks."""
        for module in self.settings.imports:
            importlib.import_module(module)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self)

    def connect(self) -> sqlite3.Connection:
        """A new connection to the app's database, for the app's own tables (feeds…)."""
        return sqlite3.connect(self.database.target, uri=self.database.uri, timeout=30,
                               isolation_level=None)

    def configure(self, **changes: Any) -> None:
        """Change settings (``db=``, ``immediate=``, ``secret_key=``…) at run time.

        Every queue gets a new storage and serializer; the declared queues stay as they are.
        """
        settings = dataclasses.replace(self.settings, **changes)
        if settings.queues != self.settings.queues:
            raise ValueError('the declared queues cannot change once tasks are declared')
        self.settings = settings
        self.database = Database.for_settings(settings)
        serializer = create_serializer(settings.serializer, settings.secret_key)
        for huey in self.queues.values():
            huey.storage.close()
            huey.storage_kwargs = storage_options(settings, self.database)
            huey._immediate = settings.immediate
            huey.storage = huey.create_storage()
            huey.serializer = serializer

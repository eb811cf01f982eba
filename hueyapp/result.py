"""Celery's result API over the shared result store: ``AsyncResult`` and ``GroupResult``.

Reads never consume: Huey's ``Result`` pops a result when read, but any number of handles
and processes may ask for the same task id here, until the result expires or is forgotten.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from huey.constants import EmptyData
from huey.utils import Error

from hueyapp.errors import TaskRevokedError, TimeoutError
from hueyapp.outcome import Revoked, rebuild_exception

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any
    from hueyapp.app import App

PENDING = 'PENDING'
SUCCESS = 'SUCCESS'
FAILURE = 'FAILURE'
REVOKED = 'REVOKED'
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})

_NOT_READY = object()


class AsyncResult:
    """The outcome of one task id, readable from any process that shares the database."""

    def __init__(self, id: str, app: 'App | None' = None, parent: 'AsyncResult | GroupResult | None' = None) -> None:
        if app is None:
            from hueyapp.app import current_app
            app = current_app()
        self.id = id
        self.app = app
        self.parent = parent
        self._outcome: Any = _NOT_READY

    task_id = property(lambda self: self.id)

    def __repr__(self) -> str:
        return f'<AsyncResult: {self.id}>'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self):
        # A task may return a result handle (Celery stores it by id); it rebinds to the reader's app.
        return (AsyncResult, (self.id, None, self.parent))

    @property
    def _huey(self):
        return self.app.default

    def _read(self) -> Any:
        """The outcome, or ``_NOT_READY``; a stored outcome is cached on the handle.

        A task revoked while still queued reads as revoked at once, as its state says.
        """
        if self._outcome is _NOT_READY:
            raw = self._huey.storage.peek_data(self.id)
            if raw is not EmptyData:
                self._outcome = self._huey.read_result(self.id, raw)
            elif self._huey.is_revoked(self.id):
                return Revoked(self.id, 'revoked before it ran')
        return self._outcome

    @property
    def state(self) -> str:
        outcome = self._read()
        if outcome is _NOT_READY:
            return PENDING
        if isinstance(outcome, Error):
            return FAILURE
        if isinstance(outcome, Revoked):
            return REVOKED
        return SUCCESS

    status = state

    def ready(self) -> bool:
        return self._read() is not _NOT_READY

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> Any:
        """Wait for the outcome: the value, or the task's exception raised (``propagate``) or returned."""
        if self._read() is _NOT_READY:
            self._huey.storage.wait_result(self.id, timeout, backoff=1.15, max_delay=interval)
        outcome = self._read()
        if outcome is _NOT_READY:
            raise TimeoutError(f'task {self.id} did not finish within {timeout}s')
        error = self._exception(outcome)
        if error is None:
            return outcome
        if propagate:
            raise error
        return error

    wait = get

    def _exception(self, outcome: Any) -> BaseException | None:
        if isinstance(outcome, Error):
            return rebuild_exception(outcome.metadata)
        if isinstance(outcome, Revoked):
            return TaskRevokedError(f'task {self.id} was revoked ({outcome.reason})')
        return None

    @property
    def result(self) -> Any:
        """The return value, or the exception instance if the task failed; ``None`` while pending."""
        outcome = self._read()
        if outcome is _NOT_READY:
            return None
        return self._exception(outcome) or outcome

    info = result

    @property
    def traceback(self) -> str | None:
        """The worker's formatted traceback of a failed task."""
        outcome = self._read()
        return outcome.metadata.get('traceback') if isinstance(outcome, Error) else None

    def revoke(self) -> None:
        """Do not run this task if it has not started yet."""
        self._huey.revoke_by_id(self.id, revoke_once=True)

    def forget(self) -> None:
        """Delete the stored result; the id reads as PENDING afterwards (the task is not
        run again, should its message come back)."""
        self._huey.storage.delete_data(self.id)
        self._outcome = _NOT_READY


class GroupResult:
    """The results of a group, in the order its tasks were given."""

    def __init__(self, id: str, results: Iterable[AsyncResult], parent: Any = None) -> None:
        self.id = id
        self.results = list(results)
        self.parent = parent

    def __repr__(self) -> str:
        return f'<GroupResult: {self.id} [{", ".join(r.id for r in self.results)}]>'

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.05) -> list:
        """Every value in order; ``timeout`` bounds the whole wait, not each task."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=remaining, propagate=propagate, interval=interval))
        return values

    join = get

    def ready(self) -> bool:
        return all(result.ready() for result in self.results)

    def completed_count(self) -> int:
        """How many tasks finished successfully."""
        return sum(result.successful() for result in self.results)

    def successful(self) -> bool:
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        return any(result.failed() for result in self.results)

    def revoke(self) -> None:
        for result in self.results:
            result.revoke()

    def forget(self) -> None:
        for result in self.results:
            result.forget()

"""Exceptions a hueyapp user may catch (named after Celery's, where Celery has one)."""
from __future__ import annotations

import builtins

from huey.exceptions import ResultTimeout


class HueyappError(Exception):
    """Base of hueyapp's own errors."""


class TimeoutError(ResultTimeout, builtins.TimeoutError):
    """``get(timeout=...)`` ran out before the task finished (also a builtin TimeoutError)."""


class SerializationError(HueyappError, TypeError):
    """A task's arguments cannot be serialized; nothing was enqueued."""


class PayloadTooLarge(SerializationError):
    """A task's message is larger than ``HUEYAPP_MAX_PAYLOAD``; nothing was enqueued."""


class StorageBusyError(HueyappError):
    """The database stayed locked by another process for longer than ``HUEYAPP_BUSY_TIMEOUT``."""


class StorageFullError(HueyappError):
    """The database's disk is full: SQLite rolled the write back whole, so nothing of it was
    stored (no task enqueued, no result written). Workers wait and resume by themselves once
    there is space again; a producer may retry the call then."""

    def __init__(self, path: str, sqlite_error: str) -> None:
        super().__init__(path, sqlite_error)
        self.path = path                  # the database file
        self.sqlite_error = sqlite_error  # SQLite's own words, e.g. 'database or disk is full'

    def __str__(self) -> str:
        return (f'cannot write to {self.path}: its disk is full (SQLite: {self.sqlite_error}); '
                f'nothing of this write was stored, no task enqueued: free space on that disk')


class TaskError(HueyappError):
    """A task failed with an exception this process cannot rebuild; carries its type and text."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(exc_type, message)
        self.exc_type = exc_type
        self.message = message

    def __str__(self) -> str:
        return f'{self.exc_type}: {self.message}'


class CorruptResultError(HueyappError):
    """A stored result cannot be read: corrupt, or forged (its signature does not match)."""


class BadSignature(ValueError):
    """The data is not signed with this secret: forged, corrupted, or from another app."""


class StaleMessage(BadSignature):
    """Correctly signed, but longer ago than ``max_age`` allows (a replayed message?)."""


class ResultNotLoadable(HueyappError, ImportError):
    """A stored result is intact, but names a module or class this process cannot import.

    The task returned (or raised with) an object of a class the worker had and this reader
    has not: import that module here, or have the task return plain data."""


class TaskRevokedError(HueyappError):
    """The task was revoked or expired before it ran."""


class ChordError(HueyappError):
    """A chord's header task failed, so its body never ran."""

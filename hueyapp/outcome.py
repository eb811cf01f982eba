"""What a finished task leaves in the result store, and how an exception travels in it.

A success is the return value itself. A failure is Huey's ``Error(metadata)``; hueyapp adds
the exception's type path and arguments to the metadata so ``get()`` can raise the task's
own exception type in another process. A task that never ran leaves a ``Revoked`` marker.
What a task's code raises that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``…)
is recorded as it is, and read back as a ``TaskError`` naming it.
"""
from __future__ import annotations

import pickle
import sys
import traceback
from collections import namedtuple
from collections.abc import Callable

from huey.utils import Error

from hueyapp.errors import BadSignature, CorruptResultError, ResultNotLoadable, TaskError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any

Revoked = namedtuple('Revoked', ('task_id', 'reason'))

# Every stored outcome names the key it was stored under, so a signed result copied onto
# another task's key is caught when read (the signature alone does not cover the key).
Stored = namedtuple('Stored', ('key', 'value'))


class TaskRaisedBaseException(Exception):
    """Carries what a task's code raised that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``, a ``BaseException`` subclass of its own) through
    Huey's ``_execute`` as an ordinary failure. Huey would take a ``KeyboardInterrupt`` for its
    consumer's shutdown and let the others end the worker thread. ``failure`` records the
    exception carried, not this one."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(f'the task raised {raised!r}')
        self.raised = raised


def describe_exception(exc: BaseException, serialize: Callable[[Any], bytes] = pickle.dumps) -> dict[str, Any]:
    """The portable part of an exception: type path, message, and its args if they serialize."""
    exc_type = type(exc)
    try:
        serialize(exc.args)
        args = exc.args
    except Exception:
        args = None
    return {
        'exc_type': f'{exc_type.__module__}.{exc_type.__qualname__}',
        'exc_message': str(exc),
        'exc_args': args,
    }


def failure(task_id: str, exc: BaseException, retries: int = 0,
            serialize: Callable[[Any], bytes] = pickle.dumps) -> Error:
    """A failure outcome for ``exc`` raised (or decided) for ``task_id``, storable by ``serialize``."""
    if isinstance(exc, TaskRaisedBaseException):
        exc = exc.raised
    return Error({
        'error': repr(exc),
        'retries': retries,
        'traceback': ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        'task_id': task_id,
        **describe_exception(exc, serialize),
    })


def rebuild_exception(metadata: dict[str, Any]) -> Exception:
    """The task's own exception if its type is already loaded here, is an ``Exception`` and
    accepts its args, else TaskError. Nothing is imported: a stored result must never make a
    reader run a module's code (a forged row could name any module). Nor is a ``SystemExit``,
    ``KeyboardInterrupt`` or other ``BaseException`` raised again in the reader, where it would
    stop the process or pass for its own Ctrl-C (Celery reports them as ``WorkerLostError``)."""
    type_path = metadata.get('exc_type') or 'Exception'
    message = metadata.get('exc_message') or metadata.get('error') or ''
    module_name, _, qualname = type_path.rpartition('.')
    try:
        found: Any = sys.modules[module_name or 'builtins']
        for part in qualname.split('.'):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, Exception):
            args = metadata.get('exc_args')
            return found(*args) if args is not None else found(message)
    except Exception:
        pass
    return TaskError(type_path, message)


def unreadable_result(key: str, exc: Exception) -> Exception:
    """The error to raise for a stored result of ``key`` that failed to deserialize.

    A result that decodes but names a module or class this process lacks is not corrupt:
    say what is missing. Only a bad signature or undecodable bytes is ``CorruptResultError``.
    """
    if _names_something_missing(exc):
        return ResultNotLoadable(
            f'the stored result of task {key} cannot be rebuilt in this process: {exc}. '
            f'Import that module here, or have the task return plain data')
    if isinstance(exc, BadSignature):
        return CorruptResultError(
            f'the stored result of task {key} fails its signature ({exc}): forged, or '
            f'written with another HUEYAPP_SECRET_KEY')
    return CorruptResultError(
        f'the stored result of task {key} cannot be decoded ({exc!r}): corrupt, or written '
        f'with another serializer (HUEYAPP_SERIALIZER)')


def _names_something_missing(exc: Exception) -> bool:
    """Whether pickle failed on a module it could not import or a class a module lacks."""
    # pickle's find_class says "Can't get attribute 'Y' on <module 'x' from '...'>".
    return isinstance(exc, ImportError) or (
        isinstance(exc, AttributeError) and str(exc).startswith("Can't get attribute"))

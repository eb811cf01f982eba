"""What a declared task is: the function users call, and the Huey task instance it makes.

``TaskFunction`` extends :class:`huey.api.TaskWrapper` with Celery's calling API. Calling it
runs the function here and now, as in Celery (Huey would enqueue instead); ``delay`` and
``apply_async`` enqueue. ``RoutedTask`` extends :class:`huey.api.Task` with the queue it is
bound for and Celery's rule for chains: a parent's return value becomes the *first*
argument of the next task, as one value (Huey appends it, and splats tuples).
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Iterator

from huey.api import PeriodicTask, Task, TaskWrapper

from hueyapp.delivery import WorkerInterrupted
from hueyapp.errors import SerializationError
from hueyapp.outcome import TaskRaisedBaseException

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any
    from hueyapp.canvas import Signature
    from hueyapp.result import AsyncResult, GroupResult


_random_words: Iterator[int] = iter(())


def _random_62_bits() -> int:
    """62 bits from the system's random source, read 4 KiB at a time: one system call per
    512 ids instead of one per id. Each ``next`` is atomic under the GIL, so threads never
    share a word; a forked child starts on a fresh block (see below), not on its parent's."""
    global _random_words
    word = next(_random_words, None)
    if word is None:
        _random_words = iter(memoryview(os.urandom(4096)).cast('Q'))
        word = next(_random_words)
    return word >> 2


def _fresh_random_words() -> None:
    global _random_words
    _random_words = iter(())


os.register_at_fork(after_in_child=_fresh_random_words)


class RoutedTask(Task):
    queue: str | None = None      # class default set by ``@huey.task(queue=...)``
    immutable: bool = False       # ``.si()``: ignores its parent's result
    exact_name: str | None = None  # ``name=`` given at declaration: the registered name

    def create_id(self) -> str:
        """A time-ordered UUID string (version 7, RFC 9562) instead of Huey's random uuid4.

        Results and done marks are keyed by task id: with ids in creation order, each new
        result lands on the last page of the key table, which is in SQLite's cache, not on
        a random one that must be read first. Measured: one-thread drains 11% faster.
        The first 48 bits are the Unix time in milliseconds, the next 12 its sub-millisecond
        fraction (the RFC's method 3), the last 62 random, from the system's source, as
        uuid4's: a web page may hand a task id out as the key to its result.
        """
        milliseconds, nanoseconds = divmod(time.time_ns(), 1_000_000)
        tail = _random_62_bits()
        return '%08x-%04x-%04x-%04x-%012x' % (
            milliseconds >> 16, milliseconds & 0xFFFF, 0x7000 | nanoseconds * 4096 // 1_000_000,
            0x8000 | tail >> 48, tail & 0xFFFF_FFFF_FFFF)

    def extend_data(self, data: Any) -> None:
        """Huey's hook for a parent result (chains, chord bodies): prepend it, unsplatted."""
        if not self.immutable:
            self.args = (data,) + tuple(self.args)


class TaskFunction(TaskWrapper):
    """A function declared with ``@huey.task()``: call it, ``delay`` it, or sign it."""

    task_base = RoutedTask

    def __init__(self, huey, func, context=False, name=None, task_base=None, **settings) -> None:
        # Huey.periodic_task passes its PeriodicTask base, whose results Huey never stores.
        # Here a periodic task is an ordinary task that also fires on its schedule (as with
        # Celery beat), so `refresh_feeds.delay().get()` works; Huey's registry recognises it
        # by its `validate_datetime` attribute alone.
        if task_base is PeriodicTask:
            task_base = RoutedTask
        if name:  # Celery's name= is exact; Huey would register '<module>.<name>'
            settings['exact_name'] = name
        super().__init__(huey, func, context=context, name=name, task_base=task_base, **settings)
        self.name = huey._registry.task_to_string(self.task_class)
        self.__name__ = getattr(func, '__name__', self.name)
        self.__module__ = getattr(func, '__module__', None)

    def __repr__(self) -> str:
        return f'<task {self.name}>'

    def create_task(self, func, context=False, name=None, **settings):
        # Extends TaskWrapper.create_task, around exactly the task's code:
        # - whatever that code raises fails the task, even what is not an Exception (Huey
        #   would take a KeyboardInterrupt for its consumer's shutdown and put the task back,
        #   for ever, and let a SystemExit end the worker thread with the task's lease held).
        #   Left as they are: the consumer's own interrupt (the task goes back on its queue),
        #   and anything in immediate mode, where the task runs in the caller's thread: a
        #   KeyboardInterrupt there may be the user's Ctrl-C (Celery's eager mode lets them
        #   through too);
        # - a return value that cannot be stored fails the task (Huey would raise while
        #   storing it, after the run, and leave the result missing).
        huey = self.huey
        task_name = name or func.__name__

        @functools.wraps(func)
        def run_task_code(*args, **kwargs):
            try:
                value = func(*args, **kwargs)
            except Exception:
                raise
            except BaseException as exc:
                if huey.immediate or isinstance(exc, WorkerInterrupted):
                    raise
                raise TaskRaisedBaseException(exc) from exc
            try:
                huey.serializer.serialize(value)
            except Exception as exc:
                raise SerializationError(
                    f'task {task_name!r} returned a value that cannot be serialized: {exc}') from None
            return value

        return super().create_task(run_task_code, context, name, **settings)

    @property
    def queue(self) -> str:
        """The queue this task goes to unless a call says otherwise."""
        return self.task_class.queue or self.huey.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process, as Celery does (no queue, no result)."""
        return self.func(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> 'Signature':
        """A signature: this task with (partial) arguments, to call or compose later."""
        from hueyapp.canvas import Signature
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> 'Signature':
        """An immutable signature: in a chain it does not receive its parent's result."""
        from hueyapp.canvas import Signature
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Iterable = (), kwargs: dict | None = None, **options: Any) -> 'Signature':
        from hueyapp.canvas import Signature
        return Signature(self, tuple(args), kwargs or {}, options=options)

    def delay(self, *args: Any, **kwargs: Any) -> 'AsyncResult':
        """Enqueue with these arguments; every keyword reaches the function untouched."""
        return self.s(*args, **kwargs).apply_async()

    def apply_async(self, args: Iterable = (), kwargs: dict | None = None, **options: Any) -> 'AsyncResult':
        """Enqueue with options: countdown, eta, expires, queue, priority, retries, task_id."""
        return self.signature(args, kwargs).apply_async(**options)

    def map(self, iterable: Iterable) -> 'GroupResult':
        """Huey's ``map``: enqueue one call per item (tuples are argument lists)."""
        from hueyapp.canvas import group
        return group(self.s(*(item if isinstance(item, tuple) else (item,)))
                     for item in iterable).apply_async()

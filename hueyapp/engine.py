"""One queue's Huey, which knows its sibling queues and gives Huey Celery's semantics.

``RoutedHuey`` extends :class:`huey.api.Huey`. Every queue of an app is one instance; all
share the task registry and the SQLite file. The overrides, each marked where it sits:

* ``enqueue`` sends a task to the queue it names (a chain's next step, a chord's body or a
  retry may be bound for another queue than the one that ran its parent);
* ``enqueue_many`` writes a whole group or chord header in one transaction, all or nothing;
* ``serialize_task`` fails with the task's name when an argument cannot be serialized;
* immediate mode serializes and deserializes each task, then runs it at once (countdowns and
  retry delays included), so users' unit tests see what the consumer would do;
* ``_check_chord``: the body runs only when every header task succeeded, else its result is
  a ``ChordError`` naming the failed task (Huey would run the body with the error values);
* revoked and expired tasks leave a ``Revoked`` outcome instead of no result at all;
* results are stored as ``Stored(key, value)`` and read back checked against their key;
* a periodic task fires once per minute per file, however many consumers ask.

At-least-once delivery (leases, one transaction per outcome) is :mod:`hueyapp.delivery`.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping

from huey import signals as S
from huey.api import Huey, Task
from huey.utils import SKIPPED, Error, normalize_time

from hueyapp.delivery import AtLeastOnce, current_task, done_key
from hueyapp.errors import ChordError, CorruptResultError, PayloadTooLarge, SerializationError
from hueyapp.outcome import Revoked, Stored, failure, unreadable_result
from hueyapp.storage import SqliteStorage
from hueyapp.task_options import check_task_options
from hueyapp.task import TaskFunction

logger = logging.getLogger('hueyapp')


class RoutedHuey(AtLeastOnce, Huey):
    storage_class = SqliteStorage

    def __init__(self, name: str, *, queues: Mapping[str, 'RoutedHuey'], registry, app,
                 **kwargs) -> None:
        super().__init__(name, results=True, store_none=True, utc=True,
                         store_intermediate_errors=False, immediate_use_memory=False, **kwargs)
        self._registry = registry
        self.queues = queues
        self.app = app
        self.signal(S.SIGNAL_REVOKED, S.SIGNAL_EXPIRED)(self._record_not_run)
        self._connect_delivery_signals()

    def get_task_wrapper_class(self):
        return TaskFunction

    def task(self, *args, **kwargs):
        """Huey's ``task()``; ``queue=`` (default: this one) says where calls go.

        Bare ``@huey.task`` works too, as Celery's ``@app.task`` does (Huey's first
        positional option is ``retries``, never a function). Celery's options that hueyapp
        does not implement raise ``TypeError`` (see :mod:`hueyapp.task_options`)."""
        if len(args) == 1 and not kwargs and callable(args[0]):
            return self.task()(args[0])
        check_task_options(kwargs, strict=False, decorator='@huey.task()')
        kwargs.setdefault('queue', self.name)
        return super().task(*args, **kwargs)

    def periodic_task(self, *args, **kwargs):
        check_task_options(kwargs, strict=False, decorator='@huey.periodic_task()')
        kwargs.setdefault('queue', self.name)
        return super().periodic_task(*args, **kwargs)

    def create_consumer(self, **options):
        """Huey's consumer plus the result sweep; imports ``HUEYAPP_IMPORTS`` first."""
        from hueyapp.consumer import Consumer
        self.app.import_task_modules()
        return Consumer(self, **options)

    # -- routing ----------------------------------------------------------------------
    def queue_named(self, name: str) -> 'RoutedHuey':
        try:
            return self.queues[name]
        except KeyError:
            raise ValueError(f'unknown queue {name!r}; declared queues: '
                             f'{", ".join(self.queues)} (set HUEYAPP_QUEUES)') from None

    def queue_for(self, task: Task) -> 'RoutedHuey':
        return self.queue_named(getattr(task, 'queue', None) or self.name)

    def enqueue(self, task):
        # Extends Huey.enqueue, which always writes to this instance's queue.
        if isinstance(task, Task):
            target = self.queue_for(task)
            if target is not self:
                return target.enqueue(task)
            if self.immediate:
                task = self._as_delivered(task)
        return super().enqueue(task)

    def enqueue_many(self, tasks: Iterable[Task]) -> None:
        """Enqueue several tasks, each to its own queue, in one transaction."""
        tasks = list(tasks)
        rows = []
        for task in tasks:  # serialize every task before writing any
            if task.expires:
                task.resolve_expires(self.utc)
            rows.append((self.queue_for(task).name, self.serialize_task(task), task.priority))
        if self.immediate:
            for task in tasks:
                self.enqueue(task)
            return
        self.storage.enqueue_many(rows)
        for task in tasks:
            self._emit(S.SIGNAL_ENQUEUED, task)

    def serialize_task(self, task: Task) -> bytes:
        try:
            data = super().serialize_task(task)
        except Exception as exc:
            culprit = self._unserializable_step(task) or task
            raise SerializationError(
                f'cannot serialize a call of task {culprit.name!r}: {exc}; nothing was enqueued') from exc
        limit = self.app.settings.max_payload
        if len(data) > limit:
            raise PayloadTooLarge(f'a call of task {task.name!r} is {len(data):,} bytes, over the '
                                  f'{limit:,}-byte limit (HUEYAPP_MAX_PAYLOAD); nothing was enqueued')
        return data

    def _unserializable_step(self, task: Task) -> Task | None:
        """Which task of a message (its chain steps, its chord's body) has the bad arguments."""
        for step in _tasks_in_message(task):
            try:
                self.serializer.serialize(step.data)
            except Exception:
                return step
        return None

    def revoke(self, task, revoke_until=None, revoke_once=False):
        # Huey.revoke keeps the flag forever; here it lives as long as a result would.
        if revoke_until is not None:
            revoke_until = normalize_time(revoke_until, utc=self.utc)
        self.storage.put_data(task.revoke_id, self.serializer.serialize((revoke_until, revoke_once)),
                              is_result=True)

    # -- the result store ---------------------------------------------------------------
    def put_result(self, key: str, data) -> None:
        # Replaces Huey.put_result (serialize, put_data): the stored value names its key (see
        # outcome.Stored), and a task's own outcome also marks the task done, in the same
        # statement; forget() does not remove the mark.
        items = {key: self.serializer.serialize(Stored(key, data))}
        running = current_task.get()
        if running is not None and running.id == key:
            items[done_key(key)] = b''
        self.storage.put_results(items)

    def read_result(self, key: str, raw: bytes):
        """The outcome stored under ``key``, checked to belong there."""
        try:
            stored = self.serializer.deserialize(raw)
        except Exception as exc:
            raise unreadable_result(key, exc) from None
        if not isinstance(stored, Stored) or stored.key != key:
            raise CorruptResultError(f'the stored result of task {key} was written for another key')
        return stored.value

    def read_periodic(self, timestamp):
        # Huey's scheduler asks every consumer each minute. Only the queue a periodic task
        # belongs to fires it, and only the first of that queue's consumers to claim the minute.
        if timestamp is None:
            timestamp = self._get_timestamp()
        minute = timestamp.strftime('%Y-%m-%dT%H:%M')
        return [task for task in super().read_periodic(timestamp)
                if self.queue_for(task) is self
                and self.storage.put_if_empty(
                    f'hueyapp.periodic:{self._registry.task_to_string(type(task))}:{minute}', b'1', ttl=3600)]

    # -- immediate mode ---------------------------------------------------------------
    def _as_delivered(self, task: Task) -> Task:
        """The task as a consumer would see it: through the serializer, due now."""
        delivered = self.deserialize_task(self.serialize_task(task))
        delivered.eta = None
        return delivered

    def add_schedule(self, task: Task) -> None:
        # Huey.add_schedule parks a task until its eta; immediate mode runs it now, as Celery's eager mode.
        if self.immediate:
            task.eta = None
            self.enqueue(task)
        else:
            super().add_schedule(task)

    # -- outcomes ---------------------------------------------------------------------
    def build_error_result(self, task: Task, exception: BaseException) -> dict:
        # Extends Huey's error metadata with the exception's type and args (see hueyapp.outcome).
        return failure(task.id, exception, task.retries, self.serializer.serialize).metadata

    def put_result_along_chain(self, task: Task, outcome) -> None:
        """Store ``outcome`` for the task and every later step of its chain (none will run)."""
        step = task
        while step is not None:
            self.put_result(step.id, outcome)
            step = step.on_complete

    def _record_not_run(self, signal: str, task: Task, *args) -> None:
        self.put_result_along_chain(task, Revoked(task.id, signal))

    def _abort_chord_member(self, task: Task, value):
        # Huey reports a skipped member as an anonymous SKIPPED; name it, for the ChordError.
        if value is SKIPPED:
            value = Revoked(task.id, 'skipped')
        return super()._abort_chord_member(task, value)

    def _check_chord(self, cc, value) -> None:
        # Replaces Huey._check_chord (same keys and counter) to give Celery's semantics:
        # the body receives the ordered list of results, and does not run if a member failed.
        self.put_result(f'chord:{cc.cid}:{cc.idx}', value)
        if self.storage.incr(f'chord:{cc.cid}') != cc.size:
            return
        self.storage.delete_counter(f'chord:{cc.cid}')
        keys = [f'chord:{cc.cid}:{idx}' for idx in range(cc.size)]
        values = [self.read_result(key, self.storage.peek_data(key)) for key in keys]
        for key in keys:
            self.delete(key)

        callback = copy.copy(cc.callback)
        bad = next((v for v in values if isinstance(v, (Error, Revoked))), None)
        if bad is None:
            callback.extend_data(values)
            self.enqueue(callback)
            return
        cause = (bad.metadata.get('error') if isinstance(bad, Error) else 'was revoked')
        failed_id = bad.metadata.get('task_id') if isinstance(bad, Error) else bad.task_id
        error = failure(callback.id, ChordError(f'Dependency {failed_id} raised {cause}'),
                        serialize=self.serializer.serialize)
        self.put_result_along_chain(callback, error)


def _tasks_in_message(task: Task) -> Iterator[Task]:
    """A task and every task its message carries: chain steps, chord body, error handler."""
    yield task
    for carried in (task.on_complete, task.on_error,
                    task.chord_config.callback if task.chord_config is not None else None):
        if carried is not None:
            yield from _tasks_in_message(carried)

"""At-least-once delivery: a task is leased, run, and acknowledged with its outcome, atomically.

``AtLeastOnce`` is a mixin for :class:`hueyapp.engine.RoutedHuey` (a ``huey.Huey``). It
replaces Huey's destructive ``dequeue`` with a lease, and wraps ``execute`` so that what a
run leaves behind (its result or failure, its chain's next step, its chord count, its retry,
its reschedule) and the acknowledgement of its delivery commit in one SQLite transaction.
A worker that dies before that commit leaves nothing behind: its lease lapses and the task
runs again elsewhere. A delivery whose task already has an outcome (a replayed or duplicated
message) is acknowledged without running. Messages that cannot run go to the dead letters.

Whatever a task's code raises is its failure (see ``TaskFunction.create_task``). Only the
consumer's own interrupt, ``WorkerInterrupted``, puts a running task back on the queue; that
run still counts as a hand-out, so a task whose runs never end with an outcome, however they
end, is dead-lettered after ``HUEYAPP_MAX_DELIVERIES`` of them.
"""
from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from huey import signals as S
from huey.api import Task
from huey.constants import EmptyData

from hueyapp.errors import StorageBusyError, StorageFullError
from hueyapp.outcome import failure

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any

logger = logging.getLogger('hueyapp.delivery')

current_task: ContextVar[Task | None] = ContextVar('hueyapp_current_task', default=None)

# How many unrunnable messages one dequeue call may bury before it yields to the worker loop.
BURIALS_PER_DEQUEUE = 100
# How long a batch's read of outcomes and revocations stands for its later tasks (seconds).
READ_AHEAD_FRESH = 0.02


def done_key(task_id: str) -> str:
    """Marks a task whose outcome was recorded; lives as long as a result, survives forget().

    It sorts right after the result's own key, so both land on the same page of the key
    table and recording an outcome writes one page fewer.
    """
    return f'{task_id}:done'


class LeaseLost(Exception):
    """The delivery being settled is no longer this worker's."""


class WorkerInterrupted(KeyboardInterrupt):
    """The consumer interrupts this worker's running task to stop (SIGTERM in a process
    worker; see ``hueyapp.consumer.ProcessEnvironment``): the task goes back on its queue.
    A ``KeyboardInterrupt`` the task's code raises itself is its failure instead."""


class AtLeastOnce:
    def _connect_delivery_signals(self) -> None:
        self.signal(S.SIGNAL_INTERRUPTED)(self._mark_interrupted)

    @staticmethod
    def _mark_interrupted(signal: str, task: Task, *args: Any) -> None:
        task.interrupted = True

    def dequeue(self) -> Task | None:
        # Replaces Huey.dequeue (pop, then deserialize): lease, and bury what cannot run.
        for _ in range(BURIALS_PER_DEQUEUE):
            delivery = self.storage.lease()
            if delivery is None:
                return None
            limit = self.app.settings.max_deliveries
            if delivery.deliveries > limit:
                self._bury(delivery, f'handed out {delivery.deliveries} times (limit {limit}): '
                                     f'its runs keep ending without an outcome (worker killed, '
                                     f'stopped or interrupted)')
                continue
            task = self._read_ahead(delivery)
            if task is None:
                try:
                    task = self.deserialize_task(delivery.data)
                except Exception as exc:
                    self._bury(delivery, f'cannot be read: {exc!r}')
                    continue
            if self._signed_too_long_ago(delivery.data):
                self._bury(delivery, 'signed longer ago than a result lives '
                                     '(HUEYAPP_RESULT_EXPIRES): a replayed row?')
                continue
            task.delivery = delivery
            return task
        return None

    def _read_ahead(self, delivery) -> Task | None:
        """The delivery's task, if the first taker of its batch read the batch ahead.

        A batch of one is not: reading it ahead would save nothing, and its task reads its
        keys just before it runs instead."""
        batch = delivery.batch
        if batch is None or len(batch.deliveries) < 2:
            return None
        if batch.prepared is None:
            batch.prepared = {}  # claimed: a sibling taken by another thread meanwhile reads its own
            batch.prepared.update(self._prepare_batch(batch.deliveries))
        return batch.prepared.pop(delivery.row_id, None)

    def _prepare_batch(self, deliveries) -> dict:
        """Every readable message of a batch as a task, by row id, each with the outcome and
        revocation keys of all of them, read in one query (see ``_outcome_and_revocations``).
        A message that cannot be read is left to its taker, which buries it."""
        tasks = {}
        for delivery in deliveries:
            try:
                tasks[delivery.row_id] = self.deserialize_task(delivery.data)
            except Exception:
                pass
        read_at = time.monotonic()
        try:
            found = self.storage.peek_many([key for task in tasks.values()
                                            for key in self._keys_to_check(task)])
        except Exception:  # each task reads its own keys before it runs
            return tasks
        for task in tasks.values():
            task.read_ahead = (read_at, found)
        return tasks

    def _keys_to_check(self, task: Task) -> list[str]:
        """The keys read before a run: its outcome, its done mark, its revocations."""
        return [task.id, done_key(task.id), *self._revoke_keys(task)]

    def _outcome_and_revocations(self, task: Task) -> dict:
        """Which of ``_keys_to_check(task)`` hold a value, and the values.

        A batch's read stands for its later tasks for ``READ_AHEAD_FRESH`` seconds: a
        revocation or outcome recorded after the read and before the run would have been
        as late, had it come a moment after the task started.
        """
        read_ahead = getattr(task, 'read_ahead', None)
        if read_ahead is not None and time.monotonic() - read_ahead[0] <= READ_AHEAD_FRESH:
            return read_ahead[1]
        return self.storage.peek_many(self._keys_to_check(task))

    def _bury(self, delivery, reason: str) -> None:
        logger.error('Dead-lettered a message of queue %s: %s', delivery.queue, reason)
        self.storage.bury(delivery, reason)

    def _signed_too_long_ago(self, data: bytes) -> bool:
        """A signed row older than a result's lifetime could be a replay that no stored
        outcome would catch any more; rows are re-signed whenever they move, so a live one
        is never that old unless the queue is that far behind (it is dead-lettered, and an
        operator's replay re-signs it)."""
        return self._signed_before(data, time.time() - self.app.settings.result_expires)

    def _signed_before(self, data: bytes, moment: float) -> bool:
        signed_at = getattr(self.serializer, 'signed_at', None)
        return signed_at is not None and signed_at(data) < moment

    def execute(self, task: Task, timestamp=None) -> Any:
        token = current_task.set(task)
        try:
            delivery = getattr(task, 'delivery', None)
            if delivery is None:  # immediate mode, or a caller running a task by hand
                return super().execute(task, timestamp)
            return self._execute_delivery(task, delivery, timestamp)
        finally:
            current_task.reset(token)

    def _execute_delivery(self, task: Task, delivery, timestamp) -> Any:
        found = self._outcome_and_revocations(task)  # one read for both checks
        if task.id in found or done_key(task.id) in found:
            logger.warning('%s already has an outcome; acknowledged without running it again', task)
            self.storage.ack(delivery)
            return None
        task.revocations = {key: found.get(key, EmptyData) for key in self._revoke_keys(task)}
        task.revoke_flag_seen = task.revoke_id in found
        try:
            with self.storage.database.unit_of_work():
                value = super().execute(task, timestamp)
                # Interrupted by the consumer's stop: back on the queue, and the run counts.
                stopping = getattr(task, 'interrupted', False)
                if not (self.storage.release if stopping else self.storage.ack)(delivery):
                    raise LeaseLost(task.id)
                if not stopping:
                    self.storage.lease_ahead()
                return value
        except LeaseLost:
            # This worker stalled past its lease and another took the task over: its outcome
            # is the other run's to record, so everything this run wrote is rolled back.
            logger.warning('%s: lease lost while running; outcome discarded', task)
            return None
        except StorageBusyError:
            # The file stayed locked past HUEYAPP_BUSY_TIMEOUT and the outcome was rolled back:
            # stop renewing the lease, so the task runs again once it lapses. Nothing is lost.
            logger.exception('Could not record the outcome of %s; it will run again', task)
            self.storage.leases.drop(delivery)
            return None
        except StorageFullError:
            # The same on a full disk, which the storage logs once per episode, not per task.
            self.storage.leases.drop(delivery)
            return None
        except Exception as exc:
            # Recording the outcome failed and was rolled back (e.g. the chain's next step is
            # too large): record that failure on the task, its chain and its chord instead, so
            # they end once rather than hang, or re-run until dead-lettered.
            logger.exception('Could not record the outcome of %s', task)
            self._record_failure(task, delivery, exc)
            return None

    def _record_failure(self, task: Task, delivery, exc: Exception) -> None:
        error = failure(task.id, exc, serialize=self.serializer.serialize)
        try:
            with self.storage.database.unit_of_work():
                self.put_result_along_chain(task, error)
                self._abort_chord_member(task, error)
                self.storage.ack(delivery)
        except Exception:
            logger.exception('Could not record the failure of %s either; it will run again', task)
            self.storage.leases.drop(delivery)

    def is_revoked(self, task, timestamp=None, peek=True) -> bool:
        # Extends Huey.is_revoked, which reads the revoke keys itself: a delivery read them
        # just before, with its outcome check. Huey's _check_revoked judges each value.
        seen = getattr(task, 'revocations', None)
        if seen is None or peek:
            return super().is_revoked(task, timestamp, peek)
        task.revocations = None
        for key, data in seen.items():
            revoked, restore = self._check_revoked(data, timestamp, peek)
            if restore:
                self.delete(key)
            if revoked:
                return True
        return False

    def delete(self, key: str) -> bool:
        # Huey._execute clears the task's revoke flag after every run: one more write per task.
        # When the delivery's read found no flag there is none to clear; one set while the task
        # ran stays, as in Celery, where a revoked id stays revoked and its retries do not run.
        running = current_task.get()
        flag_seen = getattr(running, 'revoke_flag_seen', True)
        if running is not None and key == running.revoke_id and not flag_seen:
            return False
        return super().delete(key)

    @contextmanager
    def _timeout_context(self, task: Task) -> Iterator[None]:
        # Huey wraps exactly the user's function in this context. Run it outside the unit of
        # work: its own writes (locks, enqueues) commit at once, and no write lock is held.
        with self.storage.database.suspended():
            if task.timeout:  # else Huey's context is a no-op: skip its cost on every run
                with super()._timeout_context(task):
                    yield
            else:
                yield

    def read_schedule(self, timestamp=None) -> list:
        # Replaces the scheduler's read-then-enqueue (two transactions, a crash between them
        # lost the tasks): due tasks move onto their queues in one transaction, and Huey's
        # scheduler gets nothing left to enqueue.
        if timestamp is None:
            timestamp = self._get_timestamp()
        with self.storage.database.unit_of_work():
            due = []
            for data in self.storage.read_schedule(timestamp):
                try:
                    task = self.deserialize_task(data)
                except Exception as exc:
                    self._bury_data(data, f'cannot be read: {exc!r}')
                    continue
                if self._stale_in_schedule(task, data):
                    self._bury_data(data, 'signed longer ago than a result lives '
                                          '(HUEYAPP_RESULT_EXPIRES), and due as long ago: '
                                          'a replayed row?')
                    continue
                due.append(task)
            self.enqueue_many(due)  # re-signed on the way
        return []

    def _stale_in_schedule(self, task: Task, data: bytes) -> bool:
        """Signed and due more than a result's lifetime ago: a copied row, not a late one."""
        due_at = task.eta.replace(tzinfo=datetime.timezone.utc).timestamp() if task.eta else 0
        horizon = time.time() - self.app.settings.result_expires
        return due_at < horizon and self._signed_before(data, horizon)

    def _bury_data(self, data: bytes, reason: str) -> None:
        logger.error('Dead-lettered a scheduled message of queue %s: %s', self.name, reason)
        self.storage.bury_data(data, reason)

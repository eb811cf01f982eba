"""Huey's SQLite storage with leases, dead letters, shared expiring keys and a blocking dequeue.

Extends :class:`huey.storage.SqliteStorage`; Huey's schedule methods and its ``task`` table
are used as they are. What changes, and why:

* connections come from :mod:`hueyapp.storage.sqlite_db` (one per thread, shared by every
  storage of the file), so one task's outcome is one transaction across queues, and a
  locked database is waited for instead of surfacing ``database is locked``;
* ``lease()`` hands a task out with an owner and an expiry instead of deleting it (up to
  ``prefetch`` in one statement, the rest kept in this process's reserve); the worker
  acknowledges it in the transaction that records its outcome, and leases the next batch
  in that same commit when the reserve runs out on a backlog; a keeper thread renews the
  lease while the task runs or waits in the reserve, and a lease that lapses (its worker
  died) hands the task out again; ``bury()`` moves an unrunnable message to the dead letters;
* a single write (an enqueue, a lease from ``task``, a lock) is one statement that commits
  by itself;
* ``enqueue()`` appends to an inbox table without an index, and the next ``lease()`` moves
  the inbox into ``task``, in the lease's transaction, or a chunk per transaction when it is
  large (see :mod:`hueyapp.storage.sqlite_sql`): producers hold the write lock for less time;
* a full disk raises :class:`hueyapp.errors.StorageFullError` and nothing is written; a
  worker meanwhile still leases what is in ``task``, moves the inbox in smaller chunks as
  space comes back, and waits between tries;
* keys are shared by all queues of the file and can expire: results after
  ``result_expires``, and ``put_if_empty(..., ttl=...)`` works, so Huey's own
  ``huey.lock_task(name, ttl=...)`` works on SQLite (plain Huey raises there);
* ``lease()`` waits up to ``read_timeout`` for a task (``blocking = True``), so Huey's worker
  never backs off to its 10 s polling interval; it sleeps on a wake-up socket
  (:mod:`hueyapp.storage.wakeup`) that producers signal after their commit, and so does
  ``wait_result`` for results: pickup and ``get()`` answer in about a millisecond.
"""
from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from huey.constants import EmptyData
from huey.storage import SqliteStorage as HueySqliteStorage

from hueyapp.errors import StorageFullError
from hueyapp.storage import sqlite_sql as sql
from hueyapp.storage.sqlite_db import SqliteDatabase, database_for

# Seconds between two chunks of a purge: other writers' turn. Without it the next chunk took
# the lock at once. Measured over nine purges of 20,000 keys (and a compaction), with a thread
# of the same process writing all along: 10-20 of its writes went through, the slowest
# waiting 34-66 ms; with the pause and SqliteDatabase.maintenance(), 34-86 and 9-55 ms.
PURGE_PAUSE = 0.001
# Free pages (2 KiB each) past which a lease that emptied the inbox gives them back at once:
# results written into the pages the inbox left behind made two process workers drain 10,000
# tasks 4% slower; giving 628 pages back took 2.7 ms.
VACUUM_AFTER_FOLD = 256
# Inbox rows moved into ``task`` per transaction. An inbox of up to this many moves whole in
# the transaction of the lease; a larger one a chunk per commit first, oldest first, so that
# one move never needs more room in the WAL, and on the disk, than a chunk does. Measured,
# moving 10,000 and 50,000 rows: chunks of 1,000-5,000 as fast as one transaction.
FOLD_CHUNK = 2000
FOLDS_PER_LEASE = 1000  # chunks one lease() moves at most before it leases anyway
# After a move found the disk full, the next waits this long, doubling up to the longest,
# and tries a quarter of the rows; every move that fits doubles them again.
FOLD_PAUSE = 0.05
LONGEST_FOLD_PAUSE = 1.0


class LeaseBatch:
    """The deliveries one lease statement handed out, and room for what their first taker
    works out for all of them at once (the delivery layer reads their outcomes ahead)."""

    __slots__ = ('deliveries', 'prepared')

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.prepared: dict | None = None  # None until a taker fills it


@dataclass(frozen=True)
class Delivery:
    """One hand-out of a queued task: the row, its lease owner, and how many hand-outs so far."""

    row_id: int
    data: bytes
    deliveries: int
    owner: str
    queue: str
    batch: LeaseBatch | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    queue: str
    reason: str
    deliveries: int
    buried_at: float
    size: int
    data: bytes | None = None


class SqliteStorage(HueySqliteStorage):
    blocking = True
    prefetch = 1  # tasks leased per statement; a consumer raises it (HUEYAPP_PREFETCH_MULTIPLIER)
    _backlog = False
    fold_chunk = FOLD_CHUNK  # fewer after a full disk (see _fold_found_disk_full)
    _fold_pause = 0.0
    _next_fold = 0.0  # time.monotonic() before which no move is tried (a full disk)

    ddl = [sql.AUTO_VACUUM, HueySqliteStorage.table_sched, HueySqliteStorage.index_sched,
           sql.CREATE_TASKS, HueySqliteStorage.index_task, sql.CREATE_INBOX, sql.CREATE_KEYS,
           sql.DROP_KEYS_EXPIRY_INDEX, sql.CREATE_COUNTERS, sql.CREATE_DEAD_LETTERS]

    def __init__(self, name: str = 'huey', filename: str = 'hueyapp.db', *,
                 result_expires: float = 86400.0, lease_seconds: float = 30.0,
                 busy_timeout: float = 60.0, read_timeout: float = 1.0,
                 poll_interval: float = 0.25, uri: bool = False, synchronous: str = 'normal',
                 **kwargs) -> None:
        self.result_expires = result_expires
        self.lease_seconds = lease_seconds
        self.read_timeout = read_timeout
        self.poll_interval = poll_interval
        if not uri:
            _create_private_file(filename)
        self.database: SqliteDatabase = database_for(filename, uri, busy_timeout, synchronous)
        self.leases = LeaseKeeper(self)
        super().__init__(name, filename, **kwargs)

    # -- connections: replaces BaseSqlStorage's single shared connection ------------------
    @contextmanager
    def db(self, commit: bool = False, close: bool = False) -> Iterator:
        if commit:
            with self.database.transaction() as cursor:
                yield cursor
        else:
            yield self.database.connection.cursor()

    def sql(self, query, params=None, commit=False, results=False):
        # Every caller runs one statement: a write commits on its own (or joins open work).
        if commit:
            rows, _ = self.database.write(query, params or ())
        else:
            rows = self.database.execute(query, params or ())
        return rows if results else None

    def close(self) -> bool:
        self.database.close()
        return True

    def initialize_schema(self) -> None:
        # ddl[0], auto_vacuum, is set on a new database by its first connection
        # (SqliteDatabase._configure): set again, it would write a page each time.
        for statement in self.ddl[1:]:
            self.sql(statement, commit=True)
        columns = {row[1] for row in self.sql(sql.TASK_COLUMNS, results=True)}
        for column, statement in sql.ADD_TASK_COLUMNS.items():
            if column not in columns:
                self.sql(statement, commit=True)

    # -- queue ------------------------------------------------------------------------
    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        self.sql(sql.ENQUEUE, (self.name, self.to_blob(data), priority or 0), commit=True)
        self._wake(f'queue.{self.name}')

    def enqueue_many(self, rows: Iterable[tuple[str, bytes, float | None]]) -> None:
        """Insert ``(queue, data, priority)`` rows in one transaction: all or none."""
        params = [(queue, self.to_blob(data), priority or 0) for queue, data, priority in rows]
        with self.database.transaction() as cursor:
            cursor.executemany(sql.ENQUEUE, params)
        for queue in {queue for queue, _, _ in params}:
            self._wake(f'queue.{queue}')

    def _wake(self, topic: str) -> None:
        """Wake the waiters of ``topic`` once this thread's writes are committed."""
        wakeups = self.database.wakeups
        if wakeups is not None:
            self.database.after_commit(lambda: wakeups.notify(topic))

    def _wait(self, topic: str, seconds: float) -> bool:
        """Sleep until ``topic`` is notified (True) or ``seconds`` pass (False)."""
        wakeups = self.database.wakeups
        if wakeups is None:
            time.sleep(seconds)
            return False
        return wakeups.wait(topic, seconds)

    def lease(self) -> Delivery | None:
        """Hand out the next free task for ``lease_seconds``, waiting up to ``read_timeout``.

        Leases up to ``prefetch`` tasks in one statement and hands the rest out from this
        process's reserve on the next calls (their leases are renewed meanwhile).
        """
        reserved = self.leases.take_reserved()
        if reserved is not None:
            return reserved
        deadline = time.monotonic() + self.read_timeout
        topic = f'queue.{self.name}'
        if self.database.wakeups is not None:
            self.database.wakeups.arm(topic)
        woken = self._backlog  # the last lease filled its batch: there is likely more
        for _ in range(1000):  # each round waits, or ends the call: bounded by read_timeout
            # A cheap read first, so polling an empty queue never takes the write lock;
            # a producer's wake-up (or a backlog) says there is work, and skips it.
            inbox_has_rows = None  # unknown: the lease reads it
            if not woken:
                (inbox_has_rows, free_task), = self.sql(
                    sql.ANY_WORK, {'queue': self.name, 'now': time.time()}, results=True)
            if woken or inbox_has_rows or free_task:
                deliveries = self._lease_batch(inbox_has_rows)
                if deliveries:
                    self.leases.hold(deliveries[0], reserve=deliveries[1:])
                    return deliveries[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            woken = self._wait(topic, min(remaining, self.poll_interval))
        return None

    def _lease_batch(self, inbox_has_rows: bool | None = None) -> list[Delivery]:
        """Lease a batch, moving the inbox into ``task`` first if it has rows. On a full disk
        (logged once by the database), what is already in ``task`` is still leased if the
        disk lets that be written; else none, and ``lease()`` waits before it tries again."""
        params = self._lease_params()
        if inbox_has_rows is None:
            inbox_has_rows = self.sql(sql.INBOX_HAS_ROWS, results=True)[0][0]
        try:
            rows = None
            if inbox_has_rows and time.monotonic() >= self._next_fold:
                rows = self._fold_inbox_and_lease(params)
            if rows is None:  # while draining a backlog: one statement, no BEGIN/COMMIT round trips
                rows = self.sql(sql.LEASE, params, commit=True, results=True)
        except StorageFullError:
            return []
        if rows and self.database.full_since is not None:
            self.database.space_again()
        return self._batch_of(rows, params['owner'])

    def lease_ahead(self) -> None:
        """Inside a task's unit of work: lease the next batch in the commit of its outcome,
        if this process's reserve is empty and the last lease filled its batch.

        One commit per batch fewer while draining a backlog (measured: a one-thread drain
        about 4% faster). The batch is held only once the unit commits; rolled back, it was
        never leased. Nothing is leased while the inbox has rows: the next ``lease()`` moves
        them first, so a task enqueued with a higher priority is not passed over.
        """
        if not self._backlog or self.leases.has_reserved():
            return
        params = self._lease_params()
        try:
            rows, _ = self.database.write(sql.LEASE_UNLESS_INBOX, params)
        except sqlite3.Error:  # the outcome matters, not this: the next lease() tries again
            if not self.database.connection.in_transaction:
                raise  # SQLite rolled the whole unit back (a full disk): the outcome is gone too
            return
        deliveries = self._batch_of(rows, params['owner'])  # none: the backlog hint goes off
        if deliveries:
            self.database.after_commit(lambda: self.leases.hold(reserve=deliveries))

    def _lease_params(self) -> dict:
        return {'queue': self.name, 'now': time.time(), 'owner': uuid.uuid4().hex,
                'lease': self.lease_seconds, 'count': self.prefetch}

    def _batch_of(self, rows: list[tuple], owner: str) -> list[Delivery]:
        rows.sort(key=lambda row: (-row[3], row[0]))  # priority first, then FIFO
        self._backlog = len(rows) == self.prefetch  # a hint, shared by the worker threads
        batch = LeaseBatch()
        batch.deliveries = [Delivery(row_id, bytes(data), deliveries, owner, self.name, batch)
                            for row_id, data, deliveries, _ in rows]
        return batch.deliveries

    def _fold_inbox_and_lease(self, params: dict) -> list[tuple] | None:
        """Move the inbox into ``task``, a chunk per transaction (see ``FOLD_CHUNK``), and
        lease in the transaction of the last chunk; then give the inbox's pages back if they
        are many (see ``VACUUM_AFTER_FOLD``). None when the move did not reach the end of the
        inbox (the disk is full, or producers kept refilling it): the caller leases alone."""
        for _ in range(FOLDS_PER_LEASE):
            try:
                with self.database.transaction() as cursor:
                    emptied = self._fold_chunk(cursor)
                    if emptied:
                        rows = cursor.execute(sql.LEASE, params).fetchall()
                        free_pages = cursor.execute(sql.FREE_PAGES).fetchone()[0]
            except StorageFullError:
                self._fold_found_disk_full()
                return None
            self._fold_fitted()
            if emptied:
                break
        else:
            return None
        # Short of space, the next chunks reuse the free pages in place; moving them to the
        # end of the file to cut it would cost WAL the disk does not have.
        if free_pages >= VACUUM_AFTER_FOLD and not self.database.short_of_space:
            self.database.give_back_free_pages()
        return rows

    def _fold_chunk(self, cursor: sqlite3.Cursor) -> bool:
        """Move the inbox's oldest ``fold_chunk`` rows into ``task`` (fewer while short of
        space, see ``_short_chunk_end``); True if that emptied it."""
        first, last = cursor.execute(sql.INBOX_ROWIDS).fetchone()
        if first is None:
            return True
        up_to = first + self.fold_chunk - 1  # rowids are unique: no more rows than a chunk
        if self.database.short_of_space:
            up_to = self._short_chunk_end(cursor, first)
        if up_to >= last:
            cursor.execute(sql.FOLD_INBOX)
            cursor.execute(sql.EMPTY_INBOX)  # a DELETE without WHERE drops its pages at once
            return True
        cursor.execute(sql.FOLD_INBOX_UP_TO, {'last': up_to})
        cursor.execute(sql.EMPTY_INBOX_UP_TO, {'last': up_to})
        return False

    def _short_chunk_end(self, cursor: sqlite3.Cursor, first: int) -> int:
        """The last rowid of a chunk whose data takes an eighth of the free space at most
        (one row at least). A committed chunk must fit twice: in the WAL, then in the file
        while the checkpoint copies it there, and each can take two pages per row of about
        a page; a chunk past that would leave a WAL that no checkpoint can empty."""
        budget = self.database.free_bytes() // 8
        end, = cursor.execute(sql.INBOX_CHUNK_END,
                              {'rows': self.fold_chunk, 'budget': budget}).fetchone()
        return first if end is None else end

    def _fold_found_disk_full(self) -> None:
        """A move did not fit on the disk: SQLite rolled it back, but the WAL file keeps the
        blocks it wrote, so checkpoint it (TRUNCATE, see ``SqliteDatabase.disk_full``) for
        leases from ``task`` to fit meanwhile. Try a quarter of the rows after a pause,
        doubling the pause (bounded) while it keeps failing."""
        self.database.checkpoint()
        self.fold_chunk = max(1, self.fold_chunk // 4)
        self._fold_pause = min(max(self._fold_pause * 2, FOLD_PAUSE), LONGEST_FOLD_PAUSE)
        self._next_fold = time.monotonic() + self._fold_pause

    def _fold_fitted(self) -> None:
        """A move committed. After a full disk: try twice the rows next, and checkpoint
        first, so that the next move writes into the WAL this one left, not onto the disk."""
        if self.fold_chunk < FOLD_CHUNK:
            self.fold_chunk = min(FOLD_CHUNK, self.fold_chunk * 2)
            self._fold_pause = 0.0
        if self.database.short_of_space:
            self.database.checkpoint()

    def wait_result(self, key: str, timeout: float | None = None, backoff: float = 1.15,
                    max_delay: float = 1.0) -> bool:
        """Block until ``key`` has a result (True) or ``timeout`` passes (False).

        Replaces Huey's polling with backoff: sleeps on the results wake-up, looking at
        the database at least every ``poll_interval`` in case a wake-up went missing.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.database.wakeups is not None:
            self.database.wakeups.arm('results')
        while True:
            if self.has_data_for_key(key):
                return True
            remaining = self.poll_interval if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._wait('results', min(remaining, self.poll_interval))

    def dequeue(self) -> bytes | None:
        """Huey's destructive dequeue, for code that calls the storage directly."""
        delivery = self.lease()
        if delivery is None:
            return None
        self.ack(delivery)
        return delivery.data

    def ack(self, delivery: Delivery) -> bool:
        """The task's outcome is recorded: delete its row (joins the unit of work, if any)."""
        self.leases.drop(delivery)
        _, count = self.database.write(sql.ACK, {'id': delivery.row_id, 'owner': delivery.owner})
        return count == 1

    def release(self, delivery: Delivery) -> bool:
        """Put an unfinished task back on the queue at once (the consumer stops). A delivery
        handed to a worker keeps its count (see ``sql.RELEASE``); one still in the reserve
        gets it back."""
        statement = sql.RELEASE if self.leases.handed_out(delivery) else sql.RELEASE_UNSTARTED
        self.leases.drop(delivery)
        _, count = self.database.write(statement, {'id': delivery.row_id, 'owner': delivery.owner})
        self._wake(f'queue.{delivery.queue}')
        return count == 1

    def bury(self, delivery: Delivery, reason: str) -> None:
        """Move a message no worker can run to the dead letters, with the reason."""
        self.leases.drop(delivery)
        with self.database.transaction() as cursor:
            cursor.execute(sql.BURY, {'id': delivery.row_id, 'owner': delivery.owner,
                                      'reason': reason, 'now': time.time()})
            cursor.execute(sql.ACK, {'id': delivery.row_id, 'owner': delivery.owner})

    def bury_data(self, data: bytes, reason: str) -> None:
        """Dead-letter a message read from elsewhere (the schedule)."""
        self.sql(sql.BURY_DATA, {'queue': self.name, 'data': self.to_blob(data),
                                 'reason': reason, 'now': time.time()}, commit=True)

    def queue_size(self) -> int:
        return self.sql(sql.FREE_COUNT, {'queue': self.name, 'now': time.time()}, results=True)[0][0]

    def enqueued_items(self, limit: int | None = None) -> list[bytes]:
        rows = self.sql(sql.FREE_ITEMS, {'queue': self.name, 'now': time.time()}, results=True)
        return [data for data, in rows[:limit]]

    def flush_queue(self) -> None:
        with self.database.transaction() as cursor:
            cursor.execute(sql.FLUSH_INBOX, {'queue': self.name})
            cursor.execute(sql.FLUSH_QUEUE, {'queue': self.name})

    # -- dead letters -----------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(*row) for row in self.sql(sql.DEAD_LETTERS, {'limit': limit}, results=True)]

    def dead_letter(self, letter_id: int) -> DeadLetter | None:
        rows = self.sql(sql.DEAD_LETTER, {'id': letter_id}, results=True)
        if not rows:
            return None
        id_, queue, reason, deliveries, buried_at, data, _ = rows[0]
        return DeadLetter(id_, queue, reason, deliveries, buried_at, len(data), bytes(data))

    def replay_dead_letter(self, letter_id: int) -> bool:
        """Put a dead letter back on its queue, as a fresh delivery."""
        with self.database.transaction() as cursor:
            cursor.execute(sql.REPLAY, {'id': letter_id})
            if cursor.rowcount != 1:
                return False
            cursor.execute(sql.DELETE_DEAD_LETTER, {'id': letter_id})
            return True

    def purge_dead_letters(self, letter_ids: Iterable[int] | None = None) -> int:
        with self.database.transaction() as cursor:
            if letter_ids is None:
                cursor.execute(sql.DELETE_ALL_DEAD_LETTERS)
                return cursor.rowcount
            cursor.executemany(sql.DELETE_DEAD_LETTER, [{'id': i} for i in letter_ids])
            return cursor.rowcount

    def dead_letter_count(self) -> int:
        return self.sql(sql.COUNT_DEAD_LETTERS, results=True)[0][0]

    # -- keys -------------------------------------------------------------------------
    def put_data(self, key: str, value: bytes, is_result: bool = False) -> None:
        expires_at = time.time() + self.result_expires if is_result else None
        self.sql(sql.PUT, {'key': key, 'value': self.to_blob(value), 'expires_at': expires_at},
                 commit=True)
        if is_result:
            self._wake('results')

    def put_results(self, items: dict[str, bytes]) -> None:
        """Store several results in one statement (a task's outcome and its done mark)."""
        expires_at = time.time() + self.result_expires
        params = [{'key': key, 'value': self.to_blob(value), 'expires_at': expires_at}
                  for key, value in items.items()]
        self.database.write_many(sql.PUT, params)
        self._wake('results')

    def peek_data(self, key: str):
        rows = self.sql(sql.PEEK, {'key': key, 'now': time.time()}, results=True)
        return rows[0][0] if rows else EmptyData

    def peek_many(self, keys: list[str]) -> dict:
        if not keys:
            return {}
        query = sql.PEEK_MANY.format(keys=','.join('?' * len(keys)))
        return dict(self.sql(query, (*keys, time.time()), results=True))

    def pop_data(self, key: str):
        rows = self.sql(sql.POP, {'key': key, 'now': time.time()}, commit=True, results=True)
        return rows[0][0] if rows else EmptyData

    def has_data_for_key(self, key: str) -> bool:
        return self.peek_data(key) is not EmptyData

    def put_if_empty(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Set ``key`` unless a live value holds it; with ``ttl`` the key expires by itself."""
        return self._put_if_free(sql.PUT_IF_EMPTY, key, value, ttl)

    def take_lock(self, key: str, owner: bytes, ttl: float, family: bytes | None = None) -> bool:
        """As ``put_if_empty``; also takes the key over from another owner of ``family``."""
        if family is None:
            return self._put_if_free(sql.PUT_IF_EMPTY, key, owner, ttl)
        return self._put_if_free(sql.TAKE_LOCK, key, owner, ttl, family=family)

    def _put_if_free(self, query: str, key: str, value: bytes, ttl: float | None, **extra) -> bool:
        now = time.time()
        params = {'key': key, 'value': self.to_blob(value), 'now': now,
                  'expires_at': None if ttl is None else now + ttl, **extra}
        _, count = self.database.write(query, params)
        return count == 1

    def delete_if_value(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it still holds ``value`` (an owner-checked release)."""
        _, count = self.database.write(sql.DELETE_IF_VALUE, {'key': key, 'value': self.to_blob(value)})
        return count == 1

    def incr(self, key: str, amount: int = 1) -> int:
        rows = self.sql(sql.INCR, {'key': key, 'amount': amount}, commit=True, results=True)
        return rows[0][0]

    def delete_counter(self, key: str) -> None:
        self.sql(sql.DELETE_COUNTER, {'key': key}, commit=True)

    def result_store_size(self) -> int:
        return self.sql(sql.COUNT_LIVE, {'now': time.time()}, results=True)[0][0]

    def result_items(self) -> dict:
        return dict(self.sql(sql.ALL_LIVE, {'now': time.time()}, results=True))

    def flush_results(self) -> None:
        self.sql(sql.DELETE_ALL_KEYS, commit=True)

    def flush_counters(self) -> None:
        self.sql(sql.DELETE_ALL_COUNTERS, commit=True)

    # -- hygiene ----------------------------------------------------------------------
    def purge_expired(self, chunk: int = 500) -> int:
        """Delete results and locks whose lifetime is over; returns how many went.

        Finds them with a read (it scans the table, and readers never block writers), then
        deletes them a ``chunk`` at a time with a ``PURGE_PAUSE`` between chunks, so no
        writer waits long for the lock.
        """
        now = time.time()
        expired = [{'key': key, 'now': now}
                   for key, in self.database.execute(sql.EXPIRED, {'now': now})]
        deleted = 0
        with self.database.maintenance():
            for start in range(0, len(expired), chunk):
                if start:
                    time.sleep(PURGE_PAUSE)
                with self.database.transaction() as cursor:
                    cursor.executemany(sql.DELETE_EXPIRED, expired[start:start + chunk])
                    deleted += cursor.rowcount
        return deleted

    def compact(self) -> None:
        """Give freed pages back and fold the WAL into the file, so it does not grow unbounded."""
        if self.database.uri:
            return
        with self.database.maintenance():
            self._vacuum_and_checkpoint()

    def _vacuum_and_checkpoint(self) -> None:
        self.database.give_back_free_pages()
        # TRUNCATE blocks every writer while it copies the WAL; most of it is copied first
        # without blocking anyone. Measured after a drain of 10,000 tasks (22 MB of WAL):
        # writers blocked 9-10 ms instead of 22-30 ms (the rest is emptying the file).
        self.database.execute(sql.CHECKPOINT_PASSIVE)
        # A checkpoint cannot reset the WAL while a reader (another worker's poll) is inside
        # it; such readers are short, so try a few times.
        for _ in range(50):
            (busy, _, _), = self.database.execute(sql.CHECKPOINT)
            if not busy:
                return
            time.sleep(0.02)


class LeaseKeeper:
    """The tasks this process holds (running, or reserved to run next): renews their leases
    from a daemon thread, and puts them back on their queue at shutdown. A task whose worker
    thread ended without settling it (a SystemExit outside the task's code, say) goes back on
    its queue at the next renewal, instead of being renewed for ever."""

    logger = logging.getLogger('hueyapp.storage.leases')

    def __init__(self, storage: SqliteStorage) -> None:
        self.storage = storage
        self._reset()

    def _reset(self) -> None:
        self._held: dict[int, Delivery] = {}
        self._reserved: collections.deque[Delivery] = collections.deque()
        self._runners: dict[int, threading.Thread] = {}  # row id: the thread it was handed to
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, delivery: Delivery | None = None, reserve: Iterable[Delivery] = ()) -> None:
        """Renew ``delivery`` (being handed out now, to this thread) and ``reserve`` (handed
        out later)."""
        if self._pid != os.getpid():
            self._reset()  # forked (process workers): the parent's thread and lock are not ours
        handed_out = () if delivery is None else (delivery,)
        with self._lock:
            for held in (*handed_out, *reserve):
                self._held[held.row_id] = held
            if delivery is not None:
                self._runners[delivery.row_id] = threading.current_thread()
            self._reserved.extend(reserve)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='hueyapp-lease-keeper',
                                                daemon=True)
                self._thread.start()

    def has_reserved(self) -> bool:
        return bool(self._reserved)

    def take_reserved(self) -> Delivery | None:
        """The next reserved delivery still held (not released meanwhile), if any, handed
        out to this thread."""
        with self._lock:
            while self._reserved:
                delivery = self._reserved.popleft()
                if self._held.get(delivery.row_id) is delivery:
                    self._runners[delivery.row_id] = threading.current_thread()
                    return delivery
        return None

    def handed_out(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` left the reserve for a worker (its run may have started)."""
        with self._lock:
            return delivery.row_id in self._runners

    def drop(self, delivery: Delivery) -> None:
        with self._lock:
            self._held.pop(delivery.row_id, None)
            self._runners.pop(delivery.row_id, None)

    def held(self) -> list[Delivery]:
        with self._lock:
            return list(self._held.values())

    def release_reserved(self) -> int:
        """Put the reserved tasks, which no worker started, back on their queue."""
        with self._lock:
            reserved, self._reserved = list(self._reserved), collections.deque()
        return sum(self.storage.release(delivery) for delivery in reserved
                   if self._held.get(delivery.row_id) is delivery)

    def release_all(self) -> int:
        """Put every task still held by this process back on its queue (shutdown)."""
        return sum(self.storage.release(delivery) for delivery in self.held())

    def _abandoned(self) -> list[tuple[Delivery, threading.Thread]]:
        """Deliveries handed to a worker thread that has ended without settling them."""
        with self._lock:
            return [(self._held[row_id], runner) for row_id, runner in self._runners.items()
                    if not runner.is_alive() and row_id in self._held]

    def _release_abandoned(self) -> None:
        for delivery, runner in self._abandoned():
            self.logger.warning('Thread %s ended without the outcome of its task of queue %s; '
                                'the task goes back on the queue', runner.name, delivery.queue)
            try:
                self.storage.release(delivery)  # the run counts: see sql.RELEASE
            except Exception:  # not renewed any more: it runs again once its lease lapses
                self.drop(delivery)

    def _run(self) -> None:
        interval = self.storage.lease_seconds / 3
        while True:
            time.sleep(interval)
            self._release_abandoned()
            held = self.held()
            if not held:
                continue
            expires = time.time() + self.storage.lease_seconds
            try:
                with self.storage.database.transaction() as cursor:
                    cursor.executemany(sql.RENEW, [{'id': d.row_id, 'owner': d.owner, 'expires': expires}
                                                   for d in held])
            except Exception:  # the next round tries again; the lease still has 2/3 to run
                pass


def _create_private_file(filename: str) -> None:
    """Create the database file readable by its owner only (pickled tasks are code)."""
    try:
        os.close(os.open(filename, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass

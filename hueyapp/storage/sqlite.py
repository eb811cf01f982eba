"""Huey's SQLite storage with one key space per file, expiring keys and a blocking dequeue.

Extends :class:`huey.storage.SqliteStorage` (its connection handling, WAL setup and the
``task``/``schedule`` methods are used as they are). What changes, and why:

* keys and counters (results, locks, revocations, chord counters) are shared by all queues
  of the file, so ``AsyncResult(id)`` works whichever queue ran the task;
* results expire after ``result_expires`` seconds and ``put_if_empty(..., ttl=...)`` works,
  so ``huey.lock_task(name, ttl=...)`` and hueyapp's expiring locks work on SQLite (plain
  Huey raises ``NotImplementedError`` for a TTL here);
* ``dequeue`` waits up to ``read_timeout`` for a task instead of returning at once: Huey's
  worker skips its backoff sleep (up to 10 s) when ``storage.blocking`` is true, so an idle
  consumer still picks a task up within ``poll_interval``.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from typing import Iterable

from huey.constants import EmptyData
from huey.storage import SqliteStorage as HueySqliteStorage

from hueyapp.storage import sqlite_sql as sql

_open_storages: 'weakref.WeakSet[SqliteStorage]' = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    # A forked process must never use its parent's SQLite connection (Huey's consumer only
    # closes the connection of the queue it runs; the sibling queues' would leak into children).
    for storage in list(_open_storages):
        storage._conn = None
        storage.lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class SqliteStorage(HueySqliteStorage):
    blocking = True

    ddl = [HueySqliteStorage.table_sched, HueySqliteStorage.index_sched,
           HueySqliteStorage.table_task, HueySqliteStorage.index_task,
           sql.CREATE_KEYS, sql.CREATE_KEYS_EXPIRY_INDEX, sql.CREATE_COUNTERS]

    def __init__(self, name: str = 'huey', filename: str = 'hueyapp.db', *,
                 result_expires: float = 86400.0, read_timeout: float = 1.0,
                 poll_interval: float = 0.02, **kwargs) -> None:
        self.result_expires = result_expires
        self.read_timeout = read_timeout
        self.poll_interval = poll_interval
        # An in-memory shared-cache database lives only while a connection is open.
        self._keepalive = (sqlite3.connect(filename, uri=True, check_same_thread=False)
                           if kwargs.get('uri') and 'mode=memory' in filename else None)
        if not kwargs.get('uri'):
            _create_private_file(filename)
        super().__init__(name, filename, **kwargs)
        _open_storages.add(self)

    # -- queue ------------------------------------------------------------------------
    def enqueue_many(self, rows: Iterable[tuple[str, bytes, float | None]]) -> None:
        """Insert ``(queue, data, priority)`` rows in one transaction: all or none."""
        params = [(queue, self.to_blob(data), priority or 0) for queue, data, priority in rows]
        with self.db(commit=True) as curs:
            curs.executemany(sql.ENQUEUE, params)

    def dequeue(self) -> bytes | None:
        """Pop the next task, waiting up to ``read_timeout`` for one to arrive."""
        deadline = time.monotonic() + self.read_timeout
        while True:
            if self.sql(sql.ANY_TASK, {'queue': self.name}, results=True):
                rows = self.sql(sql.POP_TASK, {'queue': self.name}, commit=True, results=True)
                if rows:
                    return rows[0][0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.poll_interval)

    # -- keys -------------------------------------------------------------------------
    def put_data(self, key: str, value: bytes, is_result: bool = False) -> None:
        expires_at = time.time() + self.result_expires if is_result else None
        self.sql(sql.PUT, {'key': key, 'value': self.to_blob(value), 'expires_at': expires_at},
                 commit=True)

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
        now = time.time()
        params = {'key': key, 'value': self.to_blob(value), 'now': now,
                  'expires_at': None if ttl is None else now + ttl}
        with self.db(commit=True) as curs:
            curs.execute(sql.PUT_IF_EMPTY, params)
            return curs.rowcount == 1

    def delete_if_value(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it still holds ``value`` (an owner-checked release)."""
        with self.db(commit=True) as curs:
            curs.execute(sql.DELETE_IF_VALUE, {'key': key, 'value': self.to_blob(value)})
            return curs.rowcount == 1

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

    def purge_expired(self) -> int:
        """Delete results and locks whose lifetime is over; returns how many went."""
        with self.db(commit=True) as curs:
            curs.execute(sql.DELETE_EXPIRED, {'now': time.time()})
            return curs.rowcount


def _create_private_file(filename: str) -> None:
    """Create the database file readable by its owner only (pickled tasks are code)."""
    try:
        os.close(os.open(filename, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass

"""One SQLite database as the storages see it: a connection per thread, retried locks, and
units of work that make a task's whole outcome one transaction.

Why not Huey's single shared connection (``huey.storage.BaseSqlStorage.conn``): a worker must
record a task's result, enqueue its chain's next step (perhaps on another queue's storage),
count it in its chord and acknowledge its delivery in *one* transaction, so that a crash
leaves either all of it or none. All storages of one file therefore share this object, and
a thread's writes join the thread's open unit of work whichever storage makes them.

``database is locked`` never reaches callers while the lock frees within ``busy_timeout``:
a bounded retry loop waits instead of SQLite's busy handler (see :meth:`SqliteDatabase.retry`);
past that, :class:`StorageBusyError` says so plainly. A full disk raises
:class:`StorageFullError`, logged once per episode (see :meth:`SqliteDatabase.disk_full`).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hueyapp.errors import StorageBusyError, StorageFullError
from hueyapp.storage import sqlite_sql as sql
from hueyapp.storage.checkpointer import Checkpointer
from hueyapp.storage.wakeup import Wakeups
from hueyapp.storage.write_lock import WriteLockProbe

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar('T')

logger = logging.getLogger('hueyapp.storage')

_databases: dict[tuple[str, bool], 'SqliteDatabase'] = {}
_databases_lock = threading.Lock()


def database_for(target: str, uri: bool, busy_timeout: float,
                 synchronous: str = 'normal') -> 'SqliteDatabase':
    """The process-wide database object of ``target``: storages of one file share it."""
    with _databases_lock:
        database = _databases.get((target, uri))
        if database is None:
            database = _databases[(target, uri)] = SqliteDatabase(target, uri, busy_timeout)
        database.busy_timeout = busy_timeout
        database.synchronous = synchronous  # for connections opened from now on
        return database


def _forget_after_fork() -> None:
    # A forked process must never use its parent's connections or wake-up sockets: start
    # from none.
    global _databases_lock
    _databases_lock = threading.Lock()
    for database in _databases.values():
        database._local = _ThreadState()
        database._checkpointer = None  # its thread stayed in the parent
        database._checkpointer_lock = threading.Lock()
        if database.wakeups is not None:
            database.wakeups.forget_after_fork()
        if database.write_lock is not None:
            database.write_lock.forget_after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return 'locked' in message or 'busy' in message


SQLITE_IOERR = 10  # primary result codes (sqlite3.h); an extended code keeps one in its low byte
SQLITE_FULL = 13
# Free bytes below which a disk I/O error is taken for a full disk: SQLite grows the -shm
# index 32 KiB at a time.
NO_ROOM_BYTES = 64 * 1024


def _is_disk_full(exc: sqlite3.OperationalError, path: str) -> bool:
    """Whether SQLite failed for lack of space: SQLITE_FULL ("database or disk is full"), or a
    disk I/O error while the file's disk has no room left. The second is how a process that
    opens the file on a full disk fails, reads included: the -shm index cannot grow
    (SQLITE_IOERR_SHMSIZE)."""
    code = getattr(exc, 'sqlite_errorcode', None)  # Python 3.11+; before, only the message
    if code is None:
        message = str(exc)
        full, io_error = 'database or disk is full' in message, 'disk I/O error' in message
    else:
        full, io_error = code & 0xff == SQLITE_FULL, code & 0xff == SQLITE_IOERR
    return full or (io_error and _free_bytes(path) < NO_ROOM_BYTES)


def _free_bytes(path: str) -> int:
    """Free bytes on the disk of ``path``'s directory (a large number when unknown)."""
    import shutil  # only ever on an error path
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except (OSError, ValueError):
        return 1 << 62


class _ThreadState(threading.local):
    conn: sqlite3.Connection | None = None
    unit_depth: int = 0        # >0: inside unit_of_work(); writes join one transaction
    suspended: bool = False    # user code runs: its writes commit on their own
    in_transaction: bool = False

    def __init__(self) -> None:
        self.after_commit: list[Callable[[], None]] = []  # run once the open transaction commits


class SqliteDatabase:
    # No SQLite busy handler: its first sleep is 1 ms, fifty one-row commits' worth; retry()
    # waits instead. Measured: four producer processes enqueuing at once, +19% together.
    lock_wait = 0.0
    watch_seconds = 0.0005  # how long a writer watches another process's lock before sleeping
    # A new file gets 2 KiB pages, not SQLite's 4 KiB. Every commit appends each page it
    # changed to the WAL, and a one-row enqueue changes two (the row's and its index
    # entry's): half the bytes to checksum and copy. Measured: one producer's delay() 41 ->
    # 37 µs, drains and groups unchanged; 1 KiB pages made groups 5-10% slower. A file keeps
    # the page size it was made with (plain Huey's are 4 KiB).
    page_bytes = 2048
    # Fold the WAL into the file every 16 MB, not SQLite's 1000 pages: a page that every
    # outcome rewrites (a queue's head and its index page) is copied once per checkpoint
    # however often it changed. Measured: drain about 10% faster.
    checkpoint_bytes = 16 * 1024 * 1024
    # ... and at most once per checkpoint_pause in a process. SQLite's own autocheckpoint runs
    # after every commit while the WAL is past its limit, and while other processes keep
    # reading and writing the WAL cannot restart, so every commit checkpointed again: two
    # fdatasync each, and other writers refused while it holds the first read lock.
    # Measured: two producer processes, 579 fdatasync for 10,000 enqueues (one producer: 16),
    # and 21,600 -> 28,500 enqueues/s together once paced.
    checkpoint_pause = 0.1
    # A passive checkpoint lets the next writer start the WAL over only if no frame came
    # after it began copying. With several processes writing without pause one always has,
    # so the WAL never started over and grew by every commit, each new block of the file
    # allocated and zeroed: four producers left 200 MB of WAL after 40,000 enqueues. So a
    # RESTART checkpoint follows: it holds the write lock to copy what came meanwhile and
    # waits up to restart_wait_ms for readers, and the next writer starts over. Measured,
    # four producers alternating with the code before (5 pairs, a noisy hour): 40,000
    # enqueues, median 27.0k tasks/s together instead of 22.9k and 23-39 MB of WAL; 10,000,
    # 23.9k instead of 21.5k. Two process workers drained 6.3-7.0k tasks/s instead of
    # 5.9-6.5k. One producer: the same.
    restart_wait_ms = 5
    # Each thread has its own connection, and each connection its own page cache (2 MB by
    # default): a copy of what the OS caches anyway. 64 KiB holds the hot pages (b-tree
    # interiors, queue heads); measured: the same drain rate as 256 KiB and 2 MB, and 0.4 MB
    # less in an idle worker than 256 KiB.
    cache_kib = 64
    synchronous = 'normal'  # no fsync per commit: survives kill -9, not power loss ('full' does)
    # A WAL that outgrew this (checkpoints held off by readers) is cut back to it when it
    # starts over, instead of keeping its largest size on disk for good.
    wal_size_limit = 2 * checkpoint_bytes
    # Short of space (see disk_full): checkpoint when the WAL holds this much, at most every
    # short_checkpoint_pause, and TRUNCATE it, so that what a drain writes goes back to the
    # disk at once instead of piling up to checkpoint_bytes in a WAL the disk cannot hold.
    short_checkpoint_bytes = 128 * 1024
    short_checkpoint_pause = 0.01
    # Free bytes past which a process that found its disk full checkpoints as usual again.
    room_to_pace = 4 * checkpoint_bytes
    # A full disk is logged at most this often (seconds): once per episode, whatever the retries.
    full_log_interval = 60.0

    def __init__(self, target: str, uri: bool, busy_timeout: float = 60.0) -> None:
        self.target = target
        self.uri = uri
        self.busy_timeout = busy_timeout
        self._local = _ThreadState()
        # A shared-cache in-memory database lives only while a connection to it is open.
        self._keepalive = (sqlite3.connect(target, uri=True, check_same_thread=False)
                           if uri and 'mode=memory' in target else None)
        # Only a file has other processes to wake up.
        self.wakeups: Wakeups | None = None if uri else Wakeups(target)
        self.write_lock: WriteLockProbe | None = None if uri else WriteLockProbe(target)
        # Pacing needs the WAL's frame count, which the probe reads; elsewhere SQLite paces.
        self.paces_checkpoints = self.write_lock is not None and self.write_lock.supported
        self.checkpoint_frames = 0  # checkpoint_bytes in pages, known once connected
        self.short_checkpoint_frames = 0  # short_checkpoint_bytes likewise
        self._next_checkpoint = 0.0  # time.monotonic() before which none is tried
        self.background_checkpoints = False  # see checkpoint_in_background()
        self._checkpointer: Checkpointer | None = None  # started at the first checkpoint due
        self._checkpointer_lock = threading.Lock()
        self.maintaining = False  # this process's sweep is writing (see maintenance())
        self.short_of_space = False  # this process found the disk full (see disk_full())
        self.full_since: float | None = None  # time.monotonic() of this episode's first error
        self._next_full_log = 0.0

    def checkpoint_in_background(self) -> None:
        """From now on the paced checkpoints run in a thread of their own (consumers; see
        :mod:`hueyapp.storage.checkpointer`). Measured, one-thread drains of 10,000 tasks in
        4 alternating pairs: median 9,480 instead of 9,237 tasks/s. Producers keep them
        inline: for four producers at once a thread made no difference that showed through
        the noise, and a web process should not gain a thread for it."""
        self.background_checkpoints = True

    # -- connections ------------------------------------------------------------------
    @property
    def connection(self) -> sqlite3.Connection:
        conn = self._local.conn
        if conn is None:
            conn = self.retry(lambda: self._connect())
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.target, uri=self.uri, timeout=self.lock_wait,
                               isolation_level=None, check_same_thread=False)
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        if not conn.execute('pragma page_count').fetchone()[0]:
            # page_size and auto_vacuum only take on a new database, before its first table
            # and the switch to WAL. On an existing one, setting auto_vacuum writes a page
            # each time, which a full disk refuses: no connection could be opened then.
            if not self.uri:
                conn.execute(f'pragma page_size = {self.page_bytes}')
            conn.execute(sql.AUTO_VACUUM)
        if not self.uri:
            conn.execute('pragma journal_mode = wal')
            conn.execute(f'pragma synchronous = {self.synchronous}')
            page_bytes = conn.execute('pragma page_size').fetchone()[0]
            self.checkpoint_frames = self.checkpoint_bytes // page_bytes
            self.short_checkpoint_frames = self.short_checkpoint_bytes // page_bytes
            autocheckpoint = 0 if self.paces_checkpoints else self.checkpoint_frames
            conn.execute(f'pragma wal_autocheckpoint = {autocheckpoint}')
            conn.execute(f'pragma journal_size_limit = {self.wal_size_limit}')
            conn.execute(f'pragma cache_size = -{self.cache_kib}')

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        conn, self._local.conn = self._local.conn, None
        if conn is not None:
            conn.close()

    # -- retries ----------------------------------------------------------------------
    def retry(self, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying while the database is locked, up to ``busy_timeout``.

        For ``watch_seconds`` after the first refusal, retry the moment no other process
        holds the write lock, watching it while one does (see :mod:`hueyapp.storage.write_lock`;
        a commit holds it for about 20 µs). After that, sleep 1, 2, 4… ms between tries: up
        to 5 ms while another process is seen holding the lock or this process's sweep
        runs (:meth:`maintenance`), else up to 100 ms, as SQLite's own busy handler would.
        """
        started = time.monotonic()
        deadline = started + self.busy_timeout
        watch_until = started + self.watch_seconds
        pause = 0.001
        # Sleeps are 1 ms or more, and at-once retries end with the watch: a count bound that
        # the deadline always comes before.
        for attempt in range(1_000 + int(self.busy_timeout * 1_000)):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    self.raise_if_full(exc)
                    raise
                # Kept with its traceback, it would sit in a reference cycle with this frame:
                # one for the garbage collector per refused write.
                busy = exc.with_traceback(None)
            if self._retry_at_once(watch_until, attempt):
                continue
            if time.monotonic() + pause >= deadline:
                raise StorageBusyError(
                    f'{self.target} stayed locked by another process for more than '
                    f'{self.busy_timeout:g}s ({busy}); raise HUEYAPP_BUSY_TIMEOUT or find '
                    f'the long writer') from busy
            time.sleep(pause)
            pause = min(pause * 2, self._longest_pause())
        raise AssertionError('unreachable: the deadline ends the loop')

    def _longest_pause(self) -> float:
        # While another process is seen holding the lock (a big group; the consumer's WAL
        # checkpoint, measured 150 ms on a large WAL), look again every 5 ms: with sleeps
        # doubling to 100 ms, a write waiting out a 130 ms hold would go on after 227 ms.
        # The same while this process's sweep writes (F_GETLK cannot see a thread's lock).
        # Not for every sibling: four thread workers that find each other's lock taken
        # drained 20% slower when they all looked again every 5 ms.
        if self.maintaining or (self.write_lock is not None and self.write_lock.held_elsewhere()):
            return 0.005
        return 0.1

    def _retry_at_once(self, watch_until: float, attempt: int) -> bool:
        if self.write_lock is None or time.monotonic() >= watch_until:
            return False
        let_go = self.write_lock.let_go_by(watch_until)
        if let_go is not None:
            return let_go
        # No other process holds it: it has been let go already, or a thread of this process
        # holds it. Hammering a sibling's lock would take the GIL it needs (measured: four
        # thread workers 6% slower), so with other threads about, retry at once only once.
        return attempt == 0 or threading.active_count() == 1

    # -- statements and transactions --------------------------------------------------
    def execute(self, query: str, params: Any = ()) -> list[tuple]:
        """One statement; a write joins the thread's open transaction, if any."""
        if self._local.in_transaction:
            return self.connection.execute(query, params).fetchall()
        return self.retry(lambda: self.connection.execute(query, params).fetchall())

    def write(self, query: str, params: Any = ()) -> tuple[list[tuple], int]:
        """One write statement; returns its rows (``RETURNING``) and its row count.

        Inside a transaction or unit of work it joins it. Otherwise the statement commits on
        its own, atomic as any SQLite statement, without the ``BEGIN``/``COMMIT`` round trips
        of :meth:`transaction` (a third of the cost of a one-row enqueue).
        """
        def run() -> tuple[list[tuple], int]:
            cursor = self.connection.execute(query, params)
            return cursor.fetchall(), cursor.rowcount

        if self._enter_open_work():
            return run()
        outcome = self.retry(run)
        self._checkpoint_if_due()
        return outcome

    def write_many(self, query: str, rows: list[Any]) -> None:
        """One write statement for each of ``rows``, all or none (one transaction, or the
        open one)."""
        if self._enter_open_work():
            self.connection.executemany(query, rows)
            return
        with self.transaction() as cursor:
            cursor.executemany(query, rows)

    def _joins_open_work(self) -> bool:
        state = self._local
        return state.in_transaction or bool(state.unit_depth and not state.suspended)

    def _enter_open_work(self) -> bool:
        """Whether this thread's next write joins open work: its transaction, or its unit of
        work's, begun here if the unit has not written yet (the unit commits it)."""
        if not self._joins_open_work():
            return False
        if not self._local.in_transaction:
            self._begin()
        return True

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction (``BEGIN IMMEDIATE``); inside a unit of work it joins the unit's."""
        if self._enter_open_work():
            yield self.connection.cursor()  # committed by whoever opened it
            return
        self._begin()
        try:
            yield self.connection.cursor()
        except BaseException as exc:
            self._end('rollback')
            self.raise_if_full(exc)
            raise
        self._end('commit')

    def _begin(self) -> None:
        self.retry(lambda: self.connection.execute('begin immediate'))
        self._local.in_transaction = True

    def _end(self, verb: str) -> None:
        state = self._local
        state.in_transaction = False
        callbacks, state.after_commit = state.after_commit, []
        if verb == 'rollback':
            self._rollback()
            return
        try:
            self.connection.execute('commit')
        except BaseException as exc:
            self._rollback()  # a COMMIT that failed may leave its transaction open
            self.raise_if_full(exc)
            raise
        for callback in callbacks:
            callback()
        self._checkpoint_if_due()

    def _rollback(self) -> None:
        # After some errors (a full disk, an I/O error) SQLite has rolled the transaction back
        # by itself; a ROLLBACK would then fail with "cannot rollback - no transaction is
        # active" and hide the error that mattered.
        conn = self.connection
        if conn.in_transaction:
            conn.execute('rollback')

    # -- a full disk ------------------------------------------------------------------
    def raise_if_full(self, exc: BaseException) -> None:
        """Raise :class:`StorageFullError` from ``exc`` if it is SQLite failing for lack of
        space (see :meth:`disk_full`); else return. Only ever called on an error path."""
        if isinstance(exc, sqlite3.OperationalError) and _is_disk_full(exc, self.target):
            raise self.disk_full(exc) from exc

    def disk_full(self, exc: sqlite3.OperationalError) -> StorageFullError:
        """Note a write that failed for lack of space, and return the error to raise.

        Logs SQLite's error once per episode (at most every ``full_log_interval``), not once
        per retry. From now on this process is *short of space*: it checkpoints small WALs
        often and truncates them (see ``short_checkpoint_bytes``) until the disk has room
        again, and a consumer asks for a checkpoint at once, to give the WAL's space back.
        """
        error = StorageFullError(self.target, str(exc))
        now = time.monotonic()
        if self.full_since is None and now >= self._next_full_log:
            self.full_since = now
            self._next_full_log = now + self.full_log_interval
            logger.error('%s. Writes are retried, and workers resume by themselves once there '
                         'is space (logged once per %gs at most)', error, self.full_log_interval)
        self.short_of_space = True
        if self.background_checkpoints and now >= self._next_checkpoint:
            # Even a WAL of few committed frames may hold many blocks that a rolled-back
            # write took: TRUNCATE gives them back.
            self._next_checkpoint = now + self.short_checkpoint_pause
            self._background_checkpointer().request()
        return error

    def free_bytes(self) -> int:
        """Free bytes on the file's disk now."""
        return _free_bytes(self.target)

    def space_again(self) -> None:
        """A write succeeded after a full disk: say so, once for the logged episode."""
        since, self.full_since = self.full_since, None
        if since is not None:
            logger.warning('%s: writes succeed again, %.1fs after the disk was found full',
                           self.target, time.monotonic() - since)

    def _checkpoint_if_due(self) -> None:
        """After a commit: fold the WAL into the file if it holds ``checkpoint_bytes`` or
        more, at most once per ``checkpoint_pause`` in this process (SQLite's autocheckpoint,
        paced; see ``checkpoint_pause``). PASSIVE copies most of it without blocking anyone,
        then RESTART lets the WAL start over (see ``restart_wait_ms``)."""
        if not self.paces_checkpoints:
            return
        now = time.monotonic()
        if now < self._next_checkpoint:
            return
        short = self.short_of_space
        self._next_checkpoint = now + (self.short_checkpoint_pause if short else self.checkpoint_pause)
        due_frames = self.short_checkpoint_frames if short else self.checkpoint_frames
        if self.write_lock.wal_frames() < due_frames:
            return
        if self.background_checkpoints:
            self._background_checkpointer().request()
        else:
            self.checkpoint()

    def _background_checkpointer(self) -> Checkpointer:
        with self._checkpointer_lock:
            if self._checkpointer is None:
                self._checkpointer = Checkpointer(self.checkpoint)
            return self._checkpointer

    def checkpoint(self) -> None:
        """PASSIVE, then RESTART (see ``restart_wait_ms``), or TRUNCATE while short of space;
        skipped if another process is at it."""
        conn = self.connection
        try:
            conn.execute(sql.CHECKPOINT_PASSIVE).fetchall()
            self._restart_wal(conn)
        except sqlite3.OperationalError:
            # Another process is checkpointing, or the file cannot grow by what the WAL holds
            # (a full disk): the next commit past the pause tries again.
            return
        if self.short_of_space and _free_bytes(self.target) >= self.room_to_pace:
            self.short_of_space = False

    def _restart_wal(self, conn: sqlite3.Connection) -> None:
        # RESTART waits in SQLite's busy handler, which this database leaves off elsewhere.
        # TRUNCATE does the same, then gives the WAL's blocks back to the disk.
        restart = sql.CHECKPOINT if self.short_of_space else sql.CHECKPOINT_RESTART
        conn.execute(f'pragma busy_timeout = {self.restart_wait_ms}')
        try:
            conn.execute(restart).fetchall()
        finally:
            conn.execute(f'pragma busy_timeout = {int(self.lock_wait * 1000)}')

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once what this thread wrote is committed (now, if it is)."""
        if self._joins_open_work():
            self._local.after_commit.append(callback)
        else:
            callback()

    def give_back_free_pages(self) -> None:
        """Move the file's free pages to its end and cut them off (``incremental_vacuum``),
        unless this thread has work open: ``executescript`` would commit it."""
        if self._joins_open_work():
            return
        # executescript steps the pragma to the end; a plain execute frees one page.
        self.retry(lambda: self.connection.executescript(sql.INCREMENTAL_VACUUM))

    @contextmanager
    def maintenance(self) -> Iterator[None]:
        """Mark the long writes of the consumer's sweep, so that this process's other
        threads, refused meanwhile, look again every few ms (see ``_longest_pause``)."""
        self.maintaining = True
        try:
            yield
        finally:
            self.maintaining = False

    def unit_of_work(self) -> 'UnitOfWork':
        """Group every write of this thread until exit into one transaction, begun lazily."""
        return UnitOfWork(self)

    def suspended(self) -> 'Suspension':
        """Let user code run outside the unit: commit what it holds, so no lock is kept."""
        return Suspension(self)


# Classes rather than @contextmanager generators: every task run enters both, and a
# generator-based context manager costs about 1.5 µs more each time.
class UnitOfWork:
    """See :meth:`SqliteDatabase.unit_of_work`; units nest, the outermost one commits."""

    __slots__ = ('database', 'state')

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self.state = database._local

    def __enter__(self) -> None:
        self.state.unit_depth += 1

    def __exit__(self, exc_type, exc, traceback) -> None:
        state = self.state
        try:
            if state.unit_depth == 1 and state.in_transaction:
                self.database._end('commit' if exc_type is None else 'rollback')
        finally:
            state.unit_depth -= 1
            if not state.unit_depth:
                state.after_commit = []
        if exc is not None:  # a write of the unit failed for lack of space: say so plainly
            self.database.raise_if_full(exc)


class Suspension:
    """See :meth:`SqliteDatabase.suspended`."""

    __slots__ = ('database', 'state', 'suspends')

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self.state = database._local
        self.suspends = False

    def __enter__(self) -> None:
        state = self.state
        if not state.unit_depth:
            return
        if state.in_transaction:
            self.database._end('commit')
        state.suspended = self.suspends = True

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self.suspends:
            self.state.suspended = False

"""Writers that find the file locked by another process retry the moment it is let go,
instead of sleeping in SQLite's busy handler; a lock nobody frees still ends in a clear error."""
import gc
import os
import sqlite3
import subprocess
import sys
import threading
import time
import types

import pytest

from hueyapp.errors import StorageBusyError
from hueyapp.storage import sqlite_db
from hueyapp.storage.sqlite_db import database_for
from hueyapp.storage.write_lock import WriteLockProbe
from tests.waiting import wait_until

# Another program writing to the file: holds SQLite's write lock until told to commit.
HOLDER = '''
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("begin immediate")
conn.execute("insert into t values ('theirs')")
print("holding", flush=True)
sys.stdin.readline()
conn.execute("commit")
print("committed", flush=True)
sys.stdin.readline()
'''


class Holder:
    """A separate process holding the write lock of ``path`` until :meth:`commit`."""

    def __init__(self, path: str) -> None:
        self.process = subprocess.Popen([sys.executable, '-c', HOLDER, path], text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == 'holding'

    def commit(self) -> None:
        self.process.stdin.write('\n')
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == 'committed'

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / 'locked.db')
    database = database_for(path, False, busy_timeout=30)
    database.execute('create table t (x)')
    return database


def test_the_probe_sees_another_process_holding_the_write_lock_and_letting_go(database):
    probe = WriteLockProbe(database.target)
    assert probe.let_go_by(time.monotonic() + 0.01) is None     # nobody writes
    holder = Holder(database.target)
    try:
        assert probe.held_elsewhere()
        assert probe.let_go_by(time.monotonic() + 0.01) is False  # still held when the watch ends
        holder.commit()
        assert not probe.held_elsewhere()
        assert probe.let_go_by(time.monotonic() + 0.01) is None
    finally:
        holder.close()


def test_the_probe_cannot_see_a_lock_of_its_own_process(database):
    other = sqlite3.connect(database.target, isolation_level=None)
    other.execute('begin immediate')
    try:
        assert WriteLockProbe(database.target).let_go_by(time.monotonic() + 0.01) is None
    finally:
        other.execute('rollback')


def write_while_another_process_holds_the_lock(database, waiting, what: str) -> None:
    """Write from a thread while a holder keeps the lock; let go once ``waiting()`` is true."""
    holder = Holder(database.target)
    try:
        writer = threading.Thread(target=database.write, args=("insert into t values ('ours')",))
        writer.start()
        wait_until(lambda: not writer.is_alive() or waiting(), 10, what)
        holder.commit()
        writer.join(10)
        assert not writer.is_alive()
    finally:
        holder.close()
    assert sorted(database.execute('select x from t')) == [('ours',), ('theirs',)]


def test_a_write_waiting_on_another_process_goes_through_as_it_lets_go_without_sleeping(
        database, monkeypatch):
    sleeps = []
    monkeypatch.setattr(sqlite_db, 'time', types.SimpleNamespace(monotonic=time.monotonic, sleep=sleeps.append))
    monkeypatch.setattr(database, 'watch_seconds', 30.0)       # watch for as long as the test runs
    watching = []
    watch = database.write_lock.let_go_by
    monkeypatch.setattr(database.write_lock, 'let_go_by', lambda until: watching.append(1) or watch(until))
    write_while_another_process_holds_the_lock(
        database, lambda: watching, 'the writer to be refused and watch the lock')
    assert watching and sleeps == []                           # retried as the lock was let go


def test_a_write_waiting_on_a_long_holder_looks_again_every_few_milliseconds(database, monkeypatch):
    # SQLite-style sleeps doubling to 100 ms would go on well after a long checkpoint ends.
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(min(seconds, 0.002))                        # real, but short: a quick test

    monkeypatch.setattr(sqlite_db, 'time', types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    write_while_another_process_holds_the_lock(
        database, lambda: len(sleeps) >= 8, 'the writer to sleep 8 times')
    assert len(sleeps) >= 8 and max(sleeps) <= 0.005


def test_a_write_waiting_on_the_sweep_of_its_own_process_looks_again_every_few_milliseconds(
        database, monkeypatch):
    # F_GETLK cannot see a sibling thread's lock: while the sweep (maintenance) writes, a
    # worker thread must not fall back to sleeps doubling to 100 ms either.
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(min(seconds, 0.002))

    monkeypatch.setattr(sqlite_db, 'time', types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    sweep = sqlite3.connect(database.target, isolation_level=None, check_same_thread=False)
    writer = threading.Thread(target=database.write, args=("insert into t values ('ours')",))
    with database.maintenance():
        sweep.execute('begin immediate')
        writer.start()
        try:
            wait_until(lambda: len(sleeps) >= 8, 10, 'the writer to sleep 8 times')
        finally:
            sweep.execute('commit')
            sweep.close()
            writer.join(10)
    assert not writer.is_alive() and max(sleeps) <= 0.005
    assert database.execute('select x from t') == [('ours',)]


def test_a_lock_held_past_the_busy_timeout_ends_in_a_clear_error(database, monkeypatch):
    monkeypatch.setattr(database, 'busy_timeout', 0.3)
    holder = Holder(database.target)
    try:
        with pytest.raises(StorageBusyError, match='stayed locked by another process'):
            database.write("insert into t values ('ours')")
    finally:
        holder.close()
    database.write("insert into t values ('ours')")            # the holder died: its lock went
    assert database.execute('select x from t') == [('ours',)]


def test_the_probe_follows_the_wal_index_file_when_sqlite_replaces_it(tmp_path):
    path = str(tmp_path / 'replaced.db')
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute('pragma journal_mode = wal')
    conn.execute('create table t (x)')
    probe = WriteLockProbe(path)
    assert probe.let_go_by(time.monotonic()) is None           # opens the -shm file
    first = os.fstat(probe._fd).st_ino
    conn.close()                                               # the last connection deletes -shm
    assert not os.path.exists(f'{path}-shm')
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute('insert into t values (1)')                   # a new -shm file
    holder = Holder(path)
    try:
        assert probe.let_go_by(time.monotonic() + 0.01) is False
        assert os.fstat(probe._fd).st_ino == os.stat(f'{path}-shm').st_ino != first
    finally:
        holder.close()
        conn.close()


def test_a_refused_write_leaves_no_reference_cycle_behind(database):
    # Four producers are refused about once every two enqueues: each refusal kept in a cycle
    # with retry()'s frame made the garbage collector run that much more often.
    attempts = []

    def refused_once() -> str:
        attempts.append(True)
        if len(attempts) == 1:
            raise sqlite3.OperationalError('database is locked')
        return 'written'

    gc.collect()
    gc.disable()
    try:
        assert database.retry(refused_once) == 'written'
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert len(attempts) == 2

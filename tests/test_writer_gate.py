"""The writer gate: consumers' writes queue in the kernel, across processes, and a dead or
failing holder never keeps it."""
import fcntl
import multiprocessing
import os
import signal
import sqlite3
import stat
import threading

import pytest

from hueyapp.errors import StorageBusyError
from hueyapp.storage.sqlite_db import database_for
from hueyapp.storage.writer_gate import WriterGate
from hueyapp.tasks import huey
from tests.waiting import wait_until

FORK = multiprocessing.get_context('fork')


def is_locked(path) -> bool:
    """Whether some process holds the gate's file lock (tried on a file of our own)."""
    with open(path, 'ab') as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)
        return False


def hold_gate(path: str, conn) -> None:
    """A child process: take the gate, say so, keep it until told (or killed)."""
    gate = WriterGate(path)
    assert gate.acquire()
    conn.send('held')
    conn.poll(30)
    gate.release()


def acquire_in_thread(gate: WriterGate) -> threading.Event:
    acquired = threading.Event()

    def take() -> None:
        if gate.acquire():
            acquired.set()
            gate.release()

    threading.Thread(target=take, daemon=True).start()
    return acquired


@pytest.fixture
def holder(tmp_path):
    """A child process holding the gate of ``tmp_path / 'gate'``."""
    path = str(tmp_path / 'gate')
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=hold_gate, args=(path, theirs), daemon=True)
    child.start()
    assert ours.poll(10) and ours.recv() == 'held', 'the child never took the gate'
    yield path, child, lambda: ours.send('release')
    child.kill()
    child.join(10)


def test_a_process_waits_for_the_gate_until_its_holder_releases_it(holder):
    path, _, release = holder
    acquired = acquire_in_thread(WriterGate(path))
    assert is_locked(path)                              # the child holds it, so the thread waits
    assert not acquired.is_set()
    release()
    wait_until(acquired.is_set, 10, 'the gate, once its holder released it')


def test_a_holder_killed_by_sigkill_lets_the_gate_go(holder):
    path, child, _ = holder
    acquired = acquire_in_thread(WriterGate(path))
    assert not acquired.is_set()
    os.kill(child.pid, signal.SIGKILL)
    wait_until(acquired.is_set, 10, 'the gate, once its holder was killed')


def test_threads_of_one_process_fall_back_to_sqlites_wait_instead_of_queueing(tmp_path):
    gate = WriterGate(str(tmp_path / 'gate'))
    assert gate.acquire()
    other = []
    thread = threading.Thread(target=lambda: other.append(gate.acquire()))
    thread.start()
    thread.join(10)
    assert other == [False]                             # at once, holding nothing
    gate.release()
    assert gate.acquire()
    gate.release()


def test_a_forked_child_does_not_share_its_parents_hold(db):
    database = huey.storage.database
    database.queue_writers()
    database._enter_gate()                              # as a worker's parent mid-write at fork
    try:
        ours, theirs = FORK.Pipe()

        def probe() -> None:
            fd = database.gate._open().fileno()         # the child's own file, after the fork
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                theirs.send('taken')                    # it would be, through the parent's file
            except BlockingIOError:
                theirs.send('waits')

        child = FORK.Process(target=probe, daemon=True)
        child.start()
        assert ours.poll(10)
        assert ours.recv() == 'waits'
        child.join(10)
    finally:
        database._leave_gate()


def test_a_write_giving_up_on_a_locked_file_leaves_the_gate_free(tmp_path):
    path = str(tmp_path / 'busy.db')
    database = database_for(path, False, busy_timeout=0.2)
    database.lock_wait = 0.05
    database.queue_writers()
    database.execute('create table t (x)')
    other = sqlite3.connect(path, isolation_level=None)
    other.execute('begin immediate')                    # another program holds SQLite's lock
    try:
        with pytest.raises(StorageBusyError):
            database.write('insert into t values (1)')
        assert not is_locked(database.gate.path)
        with pytest.raises(StorageBusyError):
            with database.transaction() as cursor:
                cursor.execute('insert into t values (2)')
        assert not is_locked(database.gate.path)
    finally:
        other.execute('rollback')
    database.write('insert into t values (3)')          # and the next write goes through
    assert database.execute('select x from t') == [(3,)]


def test_process_workers_queue_their_writes_on_a_private_gate_file(db):
    database = huey.storage.database
    huey.create_consumer(workers=2)
    assert database.gate is None                        # threads and producers: SQLite's wait
    huey.create_consumer(workers=2, worker_type='process')
    assert database.gate is not None
    database.write('delete from task')
    assert stat.S_IMODE(os.stat(database.gate.path).st_mode) == 0o600

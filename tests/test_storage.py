"""hueyapp's SQLite storage: expiring keys, shared key space, locks, bulk enqueue, dequeue."""
import datetime
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import types

import pytest
from freezegun import freeze_time
from huey.constants import EmptyData
from huey.exceptions import TaskLockedException

from hueyapp.storage import SqliteStorage
from hueyapp.storage.sqlite_db import SqliteDatabase
from hueyapp.tasks import add, hipri, huey

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0)


@pytest.fixture
def storage(db):
    return huey.storage


def test_app_uses_hueyapp_sqlite_storage(db):
    assert isinstance(huey.storage, SqliteStorage)
    assert isinstance(hipri.storage, SqliteStorage)
    assert huey.storage.filename == str(db)


def test_put_if_empty_with_ttl_then_taken(storage):
    with freeze_time(T0):
        assert storage.put_if_empty('k', b'one', ttl=5) is True
        assert storage.put_if_empty('k', b'two', ttl=5) is False
        assert storage.peek_data('k') == b'one'


def test_put_if_empty_succeeds_again_after_the_ttl(storage):
    with freeze_time(T0) as frozen:
        assert storage.put_if_empty('k', b'one', ttl=5) is True
        frozen.tick(4)
        assert storage.put_if_empty('k', b'two', ttl=5) is False
        frozen.tick(2)
        assert storage.put_if_empty('k', b'two', ttl=5) is True
        assert storage.peek_data('k') == b'two'


def test_put_if_empty_without_ttl_never_expires(storage):
    with freeze_time(T0) as frozen:
        assert storage.put_if_empty('k', b'one') is True
        frozen.tick(10 ** 7)
        assert storage.put_if_empty('k', b'two', ttl=5) is False
        assert storage.peek_data('k') == b'one'


def test_has_data_for_key_respects_expiry(storage):
    with freeze_time(T0) as frozen:
        storage.put_if_empty('k', b'v', ttl=5)
        assert storage.has_data_for_key('k') is True
        frozen.tick(6)
        assert storage.has_data_for_key('k') is False
        assert storage.peek_data('k') is EmptyData
        assert storage.pop_data('k') is EmptyData


def test_results_expire_after_result_expires(storage):
    with freeze_time(T0) as frozen:
        storage.put_data('r', b'v', is_result=True)
        storage.put_data('plain', b'v')
        frozen.tick(storage.result_expires + 1)
        assert storage.has_data_for_key('r') is False
        assert storage.has_data_for_key('plain') is True
        assert storage.result_store_size() == 1


def test_pop_data_is_destructive_peek_is_not(storage):
    storage.put_data('k', b'v')
    assert storage.peek_data('k') == b'v'
    assert storage.peek_data('k') == b'v'
    assert storage.pop_data('k') == b'v'
    assert storage.pop_data('k') is EmptyData


def test_delete_if_value_deletes_only_the_matching_value(storage):
    storage.put_data('k', b'mine')
    assert storage.delete_if_value('k', b'theirs') is False
    assert storage.peek_data('k') == b'mine'
    assert storage.delete_if_value('k', b'mine') is True
    assert storage.has_data_for_key('k') is False
    assert storage.delete_if_value('k', b'mine') is False


def test_keys_are_shared_across_queues(db):
    huey.storage.put_data('shared', b'v')
    assert hipri.storage.peek_data('shared') == b'v'
    huey.put('obj', {'a': 1})
    assert hipri.get('obj', peek=True) == {'a': 1}


def test_counters_are_shared_across_queues(db):
    assert huey.storage.incr('c') == 1
    assert hipri.storage.incr('c') == 2
    assert huey.storage.incr('c', 5) == 7


def test_queues_are_separate(db):
    add.delay(1, 1)
    assert huey.pending_count() == 1
    assert hipri.pending_count() == 0


def test_db_file_is_private(db):
    huey.storage.put_data('k', b'v')
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_db_file_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / 'umask0.db'
        SqliteStorage('default', str(path)).put_data('k', b'v')
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_lock_task_as_context_manager(db):
    with huey.lock_task('x', ttl=5):
        assert huey.is_locked('x')
        with pytest.raises(TaskLockedException):
            with huey.lock_task('x', ttl=5):
                pass  # pragma: no cover
    assert not huey.is_locked('x')


def test_lock_task_as_decorator(db):
    calls = []

    @huey.lock_task('deco', ttl=5)
    def locked():
        calls.append(huey.is_locked('deco'))
        return 'ran'

    assert locked() == 'ran'
    assert calls == [True]
    assert not huey.is_locked('deco')
    with huey.lock_task('deco', ttl=5):
        with pytest.raises(TaskLockedException):
            locked()


def test_lock_task_can_be_taken_again_after_ttl(db):
    with freeze_time(T0) as frozen:
        huey.lock_task('x', ttl=5).acquire()
        with pytest.raises(TaskLockedException):
            huey.lock_task('x', ttl=5).acquire()
        frozen.tick(6)
        assert huey.lock_task('x', ttl=5).acquire() is True


def test_enqueue_many_is_all_or_nothing(storage):
    rows = [('default', b'a', 0), ('hipri', b'b', 0), ('default', None, 0)]
    with pytest.raises(Exception):
        storage.enqueue_many(rows)
    assert huey.pending_count() == 0
    assert hipri.pending_count() == 0


def test_enqueue_many_rolls_back_rows_already_inserted(storage):
    # The bad row comes last and fails inside the transaction (queue is NOT NULL).
    rows = [('default', b'a', 0), ('hipri', b'b', 0), (None, b'c', 0)]
    with pytest.raises(sqlite3.IntegrityError):
        storage.enqueue_many(rows)
    assert huey.pending_count() == 0
    assert hipri.pending_count() == 0
    storage.enqueue_many([('default', b'd', 0)])
    assert huey.pending_count() == 1


def test_enqueue_many_writes_each_row_to_its_queue(storage):
    storage.enqueue_many([('default', b'a', 0), ('hipri', b'b', 0), ('default', b'c', 5)])
    assert huey.storage.enqueued_items() == [b'c', b'a']
    assert hipri.storage.enqueued_items() == [b'b']


def test_dequeue_on_an_empty_queue_returns_none_within_read_timeout(storage):
    start = time.monotonic()
    assert storage.dequeue() is None
    elapsed = time.monotonic() - start
    assert elapsed < storage.read_timeout + 1


def test_dequeue_returns_a_waiting_task_at_once(storage):
    storage.enqueue(b'data', 0)
    start = time.monotonic()
    assert bytes(storage.dequeue()) == b'data'
    assert time.monotonic() - start < 0.5
    assert storage.queue_size() == 0


def test_dequeue_waits_for_a_task_enqueued_meanwhile(storage):
    timer = threading.Timer(0.2, storage.enqueue, (b'late', 0))
    timer.start()
    try:
        start = time.monotonic()
        assert bytes(storage.dequeue()) == b'late'
        assert time.monotonic() - start < storage.read_timeout
    finally:
        timer.join(5)


def test_dequeue_highest_priority_then_fifo(storage):
    storage.enqueue_many([('default', b'a', 0), ('default', b'b', 1), ('default', b'c', 0)])
    assert [bytes(storage.dequeue()) for _ in range(3)] == [b'b', b'a', b'c']


# -- the inbox: producers append to a table without an index; a lease moves it into task --
def rows(db, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_an_enqueue_lands_in_the_inbox_and_the_next_lease_moves_every_queue_in_order(db, storage):
    storage.enqueue_many([('default', b'a', 0), ('hipri', b'h', 0)])
    storage.enqueue(b'b', 0)
    assert rows(db, 'select count(*) from hueyapp_inbox') == [(3,)]
    assert rows(db, 'select count(*) from task') == [(0,)]
    assert rows(db, "select name from sqlite_master where tbl_name = 'hueyapp_inbox'") == [('hueyapp_inbox',)]

    assert storage.lease().data == b'a'
    assert rows(db, 'select count(*) from hueyapp_inbox') == [(0,)]
    assert rows(db, 'select queue, data, lease_owner is not null from task order by id') == [
        ('default', b'a', 1), ('hipri', b'h', 0), ('default', b'b', 0)]   # the enqueues' order


def test_a_queue_is_read_across_the_inbox_and_the_task_table_in_lease_order(db, storage):
    storage.enqueue_many([('default', b'a', 0), ('default', b'b', 1), ('default', b'x', 3)])
    assert storage.lease().data == b'x'                     # a and b now wait in task
    storage.enqueue_many([('default', b'c', 2), ('default', b'd', 0), ('hipri', b'h', 9)])
    assert storage.queue_size() == 4
    assert storage.enqueued_items() == [b'c', b'b', b'a', b'd']
    assert [storage.lease().data for _ in range(4)] == [b'c', b'b', b'a', b'd']


def test_flush_queue_empties_the_queue_in_both_tables_and_leaves_the_others(db, storage):
    storage.enqueue_many([('default', b'a', 0), ('hipri', b'h', 0)])
    storage.lease()                                          # a leased, h folded into task
    storage.enqueue_many([('default', b'b', 0), ('hipri', b'i', 0)])
    storage.flush_queue()
    assert rows(db, "select count(*) from task where queue = 'default'") == [(0,)]
    assert storage.queue_size() == 0
    assert hipri.storage.enqueued_items() == [b'h', b'i']


def test_a_lease_moves_other_queues_rows_and_their_consumer_finds_them(db, storage, monkeypatch):
    hipri.storage.enqueue(b'h', 0)
    monkeypatch.setattr(storage, 'read_timeout', 0.05)
    assert storage.lease() is None                           # nothing for default...
    assert rows(db, 'select queue, data from task') == [('hipri', b'h')]   # ...but it moved h
    assert hipri.storage.lease().data == b'h'


def test_a_lease_that_empties_a_large_inbox_gives_its_pages_back(db, storage):
    storage.enqueue_many([('default', os.urandom(300), 0) for _ in range(3000)])
    storage.lease()
    assert rows(db, 'select count(*) from hueyapp_inbox') == [(0,)]
    assert rows(db, 'pragma freelist_count') == [(0,)]       # ~450 pages without the vacuum


def test_purge_expired_keeps_live_and_permanent_keys(db, storage):
    with freeze_time(T0) as frozen:
        storage.put_if_empty('lock', b'v', ttl=5)
        storage.put_if_empty('live', b'v', ttl=50)
        storage.put_data('forever', b'v')
        frozen.tick(10)
        assert storage.purge_expired() == 1
    with sqlite3.connect(db) as conn:
        keys = {k for k, in conn.execute('select key from hueyapp_kv')}
    assert keys == {'live', 'forever'}


def test_purge_expired_deletes_in_chunks(storage):
    with freeze_time(T0) as frozen:
        for i in range(5):
            storage.put_data(f'r{i}', b'v', is_result=True)
        frozen.tick(storage.result_expires + 1)
        assert storage.purge_expired(chunk=2) == 5
        assert storage.result_store_size() == 0


def test_purge_expired_lets_other_writers_in_between_chunks(storage, monkeypatch):
    from hueyapp.storage import sqlite as sqlite_storage
    other = sqlite3.connect(storage.filename, isolation_level=None, timeout=0)
    let_in = []

    def pause(seconds: float) -> None:  # a writer that finds the lock taken fails at once
        other.execute("insert into hueyapp_kv (key, value) values (?, x'00')", (f'w{len(let_in)}',))
        let_in.append(seconds)

    with freeze_time(T0) as frozen:
        for i in range(6):
            storage.put_data(f'r{i}', b'v', is_result=True)
        frozen.tick(storage.result_expires + 1)
        monkeypatch.setattr(sqlite_storage, 'time', types.SimpleNamespace(time=time.time, sleep=pause))
        assert storage.purge_expired(chunk=2) == 6
    assert let_in == [sqlite_storage.PURGE_PAUSE] * 2
    other.close()


def test_compact_copies_the_wal_before_it_blocks_writers_to_empty_it(storage):
    for i in range(50):
        add.delay(i, i)
    statements = []
    storage.database.connection.set_trace_callback(statements.append)
    try:
        storage.compact()
    finally:
        storage.database.connection.set_trace_callback(None)
    checkpoints = [s for s in statements if 'wal_checkpoint' in s]
    assert checkpoints == ['pragma wal_checkpoint(passive)', 'pragma wal_checkpoint(truncate)']
    assert os.path.getsize(f'{storage.filename}-wal') == 0


def test_flush_results_and_counters(storage):
    storage.put_data('k', b'v')
    storage.incr('c')
    storage.flush_results()
    storage.flush_counters()
    assert storage.result_store_size() == 0
    assert storage.incr('c') == 1


@pytest.mark.parametrize('setting, pragma', [(None, 1), ('normal', 1), ('full', 2)])
def test_commits_fsync_only_with_synchronous_full(tmp_path, setting, pragma):
    # WAL + NORMAL survives a killed process; FULL also survives power loss, one fsync a commit.
    options = {} if setting is None else {'synchronous': setting}
    storage = SqliteStorage('q', filename=str(tmp_path / f'{setting}.db'), **options)
    assert storage.database.execute('pragma synchronous') == [(pragma,)]
    assert storage.database.execute('pragma journal_mode') == [('wal',)]


def test_a_new_file_gets_small_pages_and_a_plain_huey_file_keeps_its_own(tmp_path):
    # Smaller pages: fewer WAL bytes per commit. The checkpoint interval stays 16 MB either way,
    # and hueyapp runs the checkpoints (see the next test), not SQLite after every commit.
    ours = SqliteStorage('q', filename=str(tmp_path / 'new.db'))
    ours.enqueue(b'task')
    assert ours.database.execute('pragma page_size') == [(2048,)]
    assert ours.database.checkpoint_frames == 8192
    assert ours.database.execute('pragma wal_autocheckpoint') == [(0,)]

    from huey.storage import SqliteStorage as PlainHueyStorage
    plain = PlainHueyStorage('q', filename=str(tmp_path / 'plain.db'))
    plain.enqueue(b'from plain huey')
    plain.close()
    adopted = SqliteStorage('q', filename=str(tmp_path / 'plain.db'))
    adopted.enqueue(b'from hueyapp')
    assert adopted.database.execute('pragma page_size') == [(4096,)]
    assert adopted.database.checkpoint_frames == 4096
    assert adopted.enqueued_items() == [b'from plain huey', b'from hueyapp']


def test_the_wal_is_checkpointed_once_past_its_limit_at_most_once_per_pause(tmp_path, monkeypatch):
    monkeypatch.setattr(SqliteDatabase, 'checkpoint_bytes', 64 * 1024)  # 32 pages of 2 KiB
    storage = SqliteStorage('q', filename=str(tmp_path / 'paced.db'))
    database = storage.database
    assert database.checkpoint_frames == 32
    with freeze_time('2026-01-01 00:00:00') as clock:
        storage.enqueue(b'first')  # a commit: the pause starts
        for _ in range(100):
            storage.enqueue(b'x' * 500)
        # SQLite alone would have checkpointed at 32 frames; within the pause, nothing did.
        assert database.write_lock.wal_frames() > 3 * database.checkpoint_frames
        clock.tick(database.checkpoint_pause)
        storage.enqueue(b'past the pause')  # checkpoints the whole WAL after committing
        storage.enqueue(b'next')  # so this commit starts the WAL over
        assert database.write_lock.wal_frames() < database.checkpoint_frames
    assert len(storage.enqueued_items()) == 103


def test_a_consumer_checkpoints_in_a_thread_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(SqliteDatabase, 'checkpoint_bytes', 64 * 1024)  # 32 pages of 2 KiB
    monkeypatch.setattr(SqliteDatabase, 'checkpoint_pause', 0.0)
    storage = SqliteStorage('q', filename=str(tmp_path / 'background.db'))
    database = storage.database
    ran_in = []
    checkpoint = database.checkpoint
    monkeypatch.setattr(database, 'checkpoint', lambda: (ran_in.append(threading.current_thread().name),
                                                         checkpoint()))
    storage.enqueue(b'first')
    database.checkpoint_in_background()
    for _ in range(100):
        storage.enqueue(b'x' * 500)
    deadline = time.monotonic() + 10
    for _ in range(1000):  # bounded by the deadline too
        if ran_in and database.write_lock.wal_frames() < database.checkpoint_frames:
            break
        if time.monotonic() > deadline:
            break
        storage.enqueue(b'y')  # a commit after the checkpoint starts the WAL over
        time.sleep(0.01)
    assert ran_in and set(ran_in) == {'hueyapp-checkpointer'}
    assert database.write_lock.wal_frames() < database.checkpoint_frames


def leased_rows(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute('select count(*) from task where lease_owner is not null').fetchone()[0]


def test_lease_takes_prefetch_tasks_in_one_statement_and_hands_them_out_in_order(db, storage, monkeypatch):
    monkeypatch.setattr(storage, 'prefetch', 3)
    storage.enqueue_many([('default', b'a', 0), ('default', b'b', 1), ('default', b'c', 0),
                          ('default', b'd', 0)])
    first = storage.lease()
    assert leased_rows(db) == 3
    batch = [first, storage.lease(), storage.lease()]
    assert [d.data for d in batch] == [b'b', b'a', b'c']   # priority first, then FIFO
    assert leased_rows(db) == 3                             # the reserve, not the database
    assert storage.lease().data == b'd'
    assert len(storage.leases.held()) == 4                  # all renewed until acknowledged


def test_reserved_tasks_released_go_back_and_are_not_handed_out_from_the_reserve(db, storage, monkeypatch):
    monkeypatch.setattr(storage, 'prefetch', 3)
    storage.enqueue_many([('default', b'a', 0), ('default', b'b', 0), ('default', b'c', 0)])
    first = storage.lease()
    assert storage.leases.release_reserved() == 2
    assert leased_rows(db) == 1
    again = storage.lease()                                 # from the database, leased anew
    assert (again.data, again.deliveries) == (b'b', 1)
    assert storage.leases.release_all() == 3                # first, again, and c from its batch
    assert leased_rows(db) == 0 and first.data == b'a'


@pytest.mark.parametrize('options, prefetch', [({'workers': 3}, 12),
                                               ({'workers': 3, 'worker_type': 'process'}, 4)])
def test_a_consumer_prefetches_the_multiplier_per_worker_thread(db, options, prefetch):
    huey.create_consumer(**options)
    assert huey.storage.prefetch == prefetch
    assert huey.storage.database.background_checkpoints


WAL_WRITER = r'''
import sys
from hueyapp.storage import SqliteStorage
from hueyapp.storage import sqlite as sqlite_storage
from hueyapp.storage.sqlite_db import SqliteDatabase

SqliteDatabase.checkpoint_bytes = 256 * 1024  # 128 pages of 2 KiB
SqliteDatabase.checkpoint_pause = 0.01
storage = SqliteStorage('q', filename=sys.argv[1])
for _ in range(int(sys.argv[2])):
    storage.enqueue(b'x' * 100)
'''


def test_the_wal_starts_over_while_other_processes_keep_writing(tmp_path):
    # With several writers, a passive checkpoint alone seldom lets the WAL start over, and
    # each commit appends two pages to it: 17 MB here without RESTART.
    path = str(tmp_path / 'busy.db')
    watcher = SqliteStorage('q', filename=path)
    watcher.enqueue(b'first')  # this connection stays open, so the WAL file stays for a look
    writers = [subprocess.Popen([sys.executable, '-c', WAL_WRITER, path, '3000'],
                                cwd=CHECKOUT, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err[-2000:]
    assert len(watcher.enqueued_items()) == 9001
    wal_bytes = os.path.getsize(f'{path}-wal')
    watcher.close()
    assert wal_bytes < 8 * 1024 * 1024, wal_bytes

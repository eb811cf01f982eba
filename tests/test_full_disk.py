"""A full disk: a clear error for producers, the real error once in the worker's log, and
service that resumes by itself once space is freed, nothing committed lost.

The database lives on a small tmpfs that each test mounts (root only; else skipped, with the
reason), filled to the last block by a filler file. The consumer is real (``huey_consumer``,
one thread, one task per lease) and logs outside the small disk.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hueyapp import StorageFullError
from hueyapp.canvas import group
from hueyapp.result import AsyncResult
from hueyapp.tasks import app, xsum
from hueyapp.testing import ConsumerProcess
from tests.waiting import wait_until
from tests.worker_tasks import echo, waits_for_file

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISK_SIZE = '4m'
IN_TASK = 100   # tasks moved into ``task`` before the disk fills
IN_INBOX = 1000  # tasks left in the inbox: moving them all in one transaction would not fit
GROUP = 250
PAYLOAD = 'x' * 2000
CONSUMER_ENV = {'PYTHONPATH': CHECKOUT, 'HUEYAPP_PREFETCH_MULTIPLIER': '1',
                # A task whose outcome the full disk refused runs again once its lease lapses.
                'HUEYAPP_LEASE_SECONDS': '2'}
FULL = 'database or disk is full'


# -- helpers -------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted for this test, unmounted after it."""
    mount_point = tmp_path / 'disk'
    mount_point.mkdir()
    command = ['mount', '-t', 'tmpfs', '-o', f'size={DISK_SIZE}', 'tmpfs', str(mount_point)]
    try:
        mounted = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f'cannot run mount: {exc}')
    if mounted.returncode:
        pytest.skip(f'cannot mount a tmpfs (root only): {mounted.stderr.strip() or mounted.returncode}')
    try:
        yield mount_point
    finally:
        subprocess.run(['umount', '--lazy', str(mount_point)], capture_output=True, timeout=30)


@pytest.fixture
def disk_db(small_disk) -> Iterator[Path]:
    """The app's database on the small disk, for this process and the test's consumer."""
    path = small_disk / 'hueyapp.db'
    before = app.settings
    app.configure(db=str(path), immediate=False)
    yield path
    app.configure(db=before.db, immediate=before.immediate)


@pytest.fixture
def consumer(disk_db, tmp_path) -> Iterator[ConsumerProcess]:
    """A real one-thread consumer on ``disk_db`` (not yet started), stopped after the test."""
    process = ConsumerProcess('tests.worker_tasks.huey', db=disk_db, options=['-w', '1'],
                              env=CONSUMER_ENV, log_path=tmp_path / 'consumer.log')
    yield process
    process.stop()


def fill(disk: Path) -> Path:
    """Write a filler file until the disk refuses: every block is taken."""
    filler = disk / 'filler'
    block = b'\1' * 4096
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for _ in range(1 << 20):  # a 4 MiB disk holds 1,024 blocks
            os.write(fd, block)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return filler
    finally:
        os.close(fd)
    pytest.fail(f'{disk} never filled')


def numbers(i: int) -> list[int]:
    """The argument of the i-th task: a message of about 2 KiB (one 2 KiB page or more)."""
    return [i] + [1] * 999


def rows(db: Path, query: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(str(db), timeout=30)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def stored_anywhere(db: Path, marker: str) -> int:
    """Rows of the queue, the inbox or the results whose bytes contain ``marker``."""
    return rows(db, 'select (select count(*) from task where instr(data, :m)) '
                    '+ (select count(*) from hueyapp_inbox where instr(data, :m)) '
                    '+ (select count(*) from hueyapp_kv where instr(value, :m))',
                {'m': marker.encode()})[0][0]


# -- the tests -----------------------------------------------------------------------------
def test_full_disk_refuses_clearly_logs_once_and_resumes_losing_nothing(
        small_disk, disk_db, consumer, tmp_path):
    gate = tmp_path / 'gate'  # on the big disk: opening it is not a write to the small one
    blocker = waits_for_file.delay(str(gate), 60)
    queued = [xsum.delay(numbers(i)) for i in range(IN_TASK)]
    consumer.start().wait_started()
    # Its first lease moved everything into ``task`` and holds the blocker: the worker waits.
    wait_until(lambda: rows(disk_db, 'select count(*) from hueyapp_inbox') == [(0,)]
               and rows(disk_db, 'select count(*) from task where lease_owner is not null') == [(1,)],
               10, 'the consumer to move the inbox and start the blocker', consumer)
    # Groups (one transaction each) between checkpoints, as the consumer's sweep makes every
    # minute: the small disk must hold the file and the WAL of one group at once.
    for first in range(IN_TASK, IN_TASK + IN_INBOX, GROUP):
        queued += group(xsum.s(numbers(i)) for i in range(first, first + GROUP))().results
        wait_until(lambda: rows(disk_db, 'pragma wal_checkpoint(truncate)') == [(0, 0, 0)],
                   10, 'a checkpoint of the whole WAL', consumer)
    assert rows(disk_db, 'select count(*) from hueyapp_inbox') == [(IN_INBOX,)]

    filler = fill(small_disk)
    # A producer: the WAL's last block may still take a row or two, then a clear refusal.
    refused = None
    for i in range(IN_TASK + IN_INBOX, IN_TASK + IN_INBOX + 1000):
        try:
            queued.append(xsum.apply_async((numbers(i),), task_id=f'refused-{i}'))
        except StorageFullError as exc:
            refused = (f'refused-{i}', exc)
            break
    assert refused is not None, 'a full disk took 1,000 more tasks'
    refused_id, error = refused
    assert error.path == str(disk_db) and str(disk_db) in str(error)
    assert 'disk is full' in str(error) and FULL in str(error)
    with pytest.raises(StorageFullError):  # a group is one transaction: none of it is stored
        group(echo.s('refused-group', i) for i in range(20))()

    # The blocker ends; its outcome, and the leases after it, meet the full disk.
    gate.touch()
    wait_until(lambda: FULL in consumer.log(), 10, 'the consumer to meet the full disk', consumer)
    time.sleep(1.5)  # not a wait for anything: the disk stays full while the worker retries
    assert consumer.alive()
    log = consumer.log()
    assert 'cannot rollback' not in log
    assert log.count(FULL) <= 2, log[-4000:]  # once per episode, not once per retry

    # Freeing the filler gives less room than the inbox's messages take: moving them all in
    # one transaction, as every lease used to first, cannot fit.
    inbox_bytes = rows(disk_db, 'select sum(length(data)) from hueyapp_inbox')[0][0]
    filler.unlink()
    assert shutil.disk_usage(small_disk).free < inbox_bytes
    wait_until(lambda: all(result.ready() for result in [blocker, *queued]), 30,
               'every task enqueued before the refusal to complete', consumer)
    assert blocker.get() is True
    assert [result.get() for result in queued] == [sum(numbers(i)) for i in range(len(queued))]
    assert AsyncResult(refused_id).state == 'PENDING'
    assert stored_anywhere(disk_db, refused_id) == 0
    assert stored_anywhere(disk_db, 'refused-group') == 0
    assert rows(disk_db, 'select count(*) from task') == [(0,)]
    assert rows(disk_db, 'select count(*) from hueyapp_inbox') == [(0,)]
    assert 'writes succeed again' in consumer.log()
    # The WAL gave back what it took while space was short: it does not hold on to its
    # largest size, eating the space that was freed.
    wal_bytes = (small_disk / 'hueyapp.db-wal').stat().st_size
    assert wal_bytes <= 1024 * 1024, f'WAL of {wal_bytes} bytes on a 4 MiB disk'


def test_a_process_that_opens_the_file_on_a_full_disk_gets_storage_full_error(
        small_disk, disk_db):
    echo.delay('before')  # the file and its tables exist; then this process lets go of it
    app.configure(db=str(small_disk / 'other.db'))
    assert not (small_disk / 'hueyapp.db-shm').exists()  # SQLite removed it with its last connection
    fill(small_disk)
    # Opening the file needs its -shm index, which the full disk refuses: SQLite says
    # "disk I/O error" (SQLITE_IOERR_SHMSIZE), for reads too.
    producer = subprocess.run(
        [sys.executable, '-c', 'from tests.worker_tasks import echo; echo.delay("after")'],
        cwd=CHECKOUT, env={**os.environ, 'HUEYAPP_DB': str(disk_db), 'HUEYAPP_IMMEDIATE': '0'},
        capture_output=True, text=True, timeout=60)
    assert producer.returncode != 0
    last_line = producer.stderr.strip().splitlines()[-1]
    assert last_line.startswith('hueyapp.errors.StorageFullError: cannot write to '
                                f'{disk_db}: its disk is full'), producer.stderr


def test_a_full_database_rolls_back_without_noise_and_stores_nothing(db):
    """Runs without root: SQLite's ``max_page_count`` makes the file full as a disk would."""
    echo.delay('first')
    database = app.default.storage.database
    pages = database.execute('pragma page_count')[0][0]
    database.connection.execute(f'pragma max_page_count = {pages}')
    with pytest.raises(StorageFullError) as refused:
        group(echo.s('refused-group', i, PAYLOAD) for i in range(20))()
    assert str(db) in str(refused.value)
    assert 'cannot rollback' not in repr(refused.value.__cause__)
    with pytest.raises(StorageFullError):
        echo.delay('refused-one', PAYLOAD * 10)
    with pytest.raises(StorageFullError):  # a consumer's unit of work: its outcome, all or none
        with database.unit_of_work():
            app.default.storage.put_data('refused-result', b'x')
            echo.delay('refused-in-unit', PAYLOAD * 10)
    assert rows(db, "select count(*) from hueyapp_kv where key = 'refused-result'") == [(0,)]
    assert not database.connection.in_transaction
    assert stored_anywhere(db, 'refused-') == 0
    database.connection.execute(f'pragma max_page_count = {1 << 30}')
    echo.delay('after')  # the connection is usable again: nothing was left open
    assert rows(db, 'select count(*) from hueyapp_inbox') == [(2,)]

"""Storage hygiene: a locked file is waited for, results expire alone, the file shrinks back,
and outcomes that cannot be stored as they are still end as clean FAILUREs.
"""
from __future__ import annotations

import datetime
import os
import threading
import time

import pytest
from freezegun import freeze_time

from hueyapp import PayloadTooLarge, StorageBusyError, TaskError, chain, group
from hueyapp.errors import SerializationError
from tests.poison_tasks import (WORKER, WORKER_ENV, LockedError, add, app, connect, dead_letter_rows,
                                grow, huey, query, raise_unpicklable, return_unserializable, size,
                                started_then_sleep, wait_until)

HOLD = 7.0  # seconds another process keeps the write lock (plain Huey gives up after 5)


def hold_write_lock(db, seconds: float):
    """Take the write lock from another connection now; a timer thread releases it."""
    conn = connect(db)
    conn.execute('begin immediate')
    released = threading.Event()

    def release():
        conn.execute('commit')
        conn.close()
        released.set()

    timer = threading.Timer(seconds, release)
    timer.daemon = True
    timer.start()
    return released


def file_size(db) -> int:
    return sum(os.path.getsize(path) for path in (str(db), f'{db}-wal') if os.path.exists(path))


@pytest.fixture
def settings_restored(db):
    before = app.settings
    yield
    app.configure(busy_timeout=before.busy_timeout, max_payload=before.max_payload,
                  result_expires=before.result_expires)


# -- a locked database --------------------------------------------------------------------------
def test_result_and_producer_wait_out_a_long_write_lock(db, consumers, tmp_path):
    consumer = consumers(WORKER, env=WORKER_ENV)
    marker = tmp_path / 'started'
    slow = started_then_sleep.delay(str(marker), 0.5, 'done')
    wait_until(marker.exists, 10, 'the task to start')

    locked_at = time.monotonic()
    released = hold_write_lock(db, HOLD)
    # The task finishes while the lock is held; its outcome cannot be written yet.
    wait_until(lambda: 'executed in' in consumer.log(), HOLD - 2, 'the task function to return')
    assert not slow.ready()

    produced = add.delay(2, 2)            # this process's producer waits for the lock as well
    waited = time.monotonic() - locked_at
    assert released.is_set() and waited >= HOLD - 0.5

    assert slow.get(timeout=10) == 'done'
    assert produced.get(timeout=10) == 4
    log = consumer.log()
    assert 'database is locked' not in log and 'Traceback' not in log, log
    assert query(db, 'select count(*) from task') == [(0,)]
    assert dead_letter_rows(db) == []


def test_busy_timeout_gives_a_clear_storage_busy_error(db, settings_restored):
    app.configure(busy_timeout=1)
    assert app.settings.busy_timeout == 1
    assert huey.storage.database.busy_timeout == 1        # the setting reached the storage
    released = hold_write_lock(db, 4)
    started = time.monotonic()
    with pytest.raises(StorageBusyError) as raised:
        add.delay(1, 2)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3, elapsed
    message = str(raised.value)
    assert str(db) in message and 'locked' in message and 'HUEYAPP_BUSY_TIMEOUT' in message
    assert 'database is locked' not in type(raised.value).__name__
    wait_until(released.is_set, 10, 'the lock to be released')
    assert query(db, 'select count(*) from task') == [(0,)]   # the failed call left nothing
    assert add.delay(1, 2).id                                    # and the next one goes through
    assert huey.pending_count() == 1


# -- expiry ------------------------------------------------------------------------------------
def test_result_expiry_deletes_results_and_expired_locks_only(db):
    t0 = datetime.datetime(2026, 3, 1, 12, 0, 0)
    with freeze_time(t0) as frozen:
        huey.put_result('a-result', 42)
        huey.storage.put_data('no-expiry', b'kept')
        assert huey.storage.put_if_empty('lock-forever', b'owner')
        assert huey.storage.put_if_empty('lock-long', b'owner', ttl=30 * 86400)
        assert huey.storage.put_if_empty('lock-short', b'owner', ttl=10)
        huey.storage.bury_data(b'junk', 'test: a dead letter')
        queued = add.delay(1, 1)
        frozen.tick(app.settings.result_expires + 1)
        assert huey.storage.purge_expired() == 2
    keys = {key for key, in query(db, 'select key from hueyapp_kv')}
    assert keys == {'no-expiry', 'lock-forever', 'lock-long'}
    assert len(dead_letter_rows(db)) == 1
    assert [task.id for task in huey.pending()] == [queued.id]


def test_consumer_sweep_deletes_expired_results_only(db, consumers):
    assert huey.storage.put_if_empty('hygiene-lock', b'owner')          # a lock without expiry
    huey.storage.bury_data(b'junk', 'test: a dead letter')
    waiting = add.apply_async((5, 5), queue='hipri')                  # no hipri consumer here
    consumer = consumers(WORKER, env={**WORKER_ENV, 'HUEYAPP_RESULT_EXPIRES': '1'})
    done = add.delay(1, 1)
    wait_until(lambda: query(db, 'select 1 from hueyapp_kv where key = ?', (done.id,)), 10,
               'the result to be stored')
    wait_until(lambda: not query(db, 'select 1 from hueyapp_kv where key = ?', (done.id,)), 10,
               'the consumer to sweep the expired result')
    # Logged once the sweep's compaction is done too, a moment after the row went.
    wait_until(lambda: 'Swept' in consumer.log(), 10, 'the consumer to log its sweep')
    assert query(db, "select value from hueyapp_kv where key = 'hygiene-lock'") == [(b'owner',)]
    assert len(dead_letter_rows(db)) == 1
    assert [task.id for task in app.queue('hipri').pending()] == [waiting.id]


# -- the file shrinks back ---------------------------------------------------------------------
def test_file_shrinks_back_after_large_payloads_are_consumed(db, consumers):
    megabyte = b'x' * 1_000_000
    results = [size.delay(megabyte) for _ in range(40)]
    assert file_size(db) > 40_000_000
    consumers(WORKER, env=WORKER_ENV)
    assert [r.get(timeout=60) for r in results] == [1_000_000] * 40
    wait_until(lambda: query(db, 'select count(*) from task') == [(0,)], 10, 'the queue to drain')

    huey.storage.purge_expired()
    huey.storage.compact()
    size_after = file_size(db)
    assert size_after < 4_000_000, (
        f'{size_after:,} bytes after compaction; auto_vacuum={query(db, "pragma auto_vacuum")}, '
        f'freelist={query(db, "pragma freelist_count")}')


# -- outcomes that cannot be stored as they are ------------------------------------------------
def test_an_exception_that_cannot_be_pickled_is_a_failure_with_type_message_and_traceback(db, consumers):
    consumer = consumers(WORKER, env=WORKER_ENV)
    failed = raise_unpicklable.delay('boom: the lock is mine')
    wait_until(failed.ready, 10, 'the failure to be stored')
    assert failed.state == 'FAILURE'
    error = failed.get(propagate=False)
    assert isinstance(error, (LockedError, TaskError)), error
    type_name = error.exc_type if isinstance(error, TaskError) else type(error).__qualname__
    assert type_name.endswith('LockedError')
    assert 'boom: the lock is mine' in str(error)
    assert 'Traceback' in failed.traceback and 'raise LockedError' in failed.traceback
    with pytest.raises((LockedError, TaskError)):
        failed.get(timeout=1)
    assert 'Could not record the outcome' not in consumer.log()


def test_a_return_value_that_cannot_be_serialized_is_a_failure(db, consumers):
    consumers(WORKER, env=WORKER_ENV)
    failed = return_unserializable.delay()
    with pytest.raises(SerializationError, match='cannot be serialized'):
        failed.get(timeout=10)
    assert failed.state == 'FAILURE'
    assert 'return_unserializable' in str(failed.result)


def test_a_payload_over_max_payload_raises_and_enqueues_nothing(db, settings_restored):
    app.configure(max_payload=1000)
    assert size.delay(b'x' * 100).id                              # small calls still go
    with pytest.raises(PayloadTooLarge) as raised:
        size.delay(b'x' * 5000)
    message = str(raised.value)
    assert 'size' in message and '1,000-byte limit' in message and 'HUEYAPP_MAX_PAYLOAD' in message
    with pytest.raises(PayloadTooLarge):
        size.apply_async((b'x' * 5000,), countdown=60)
    with pytest.raises(PayloadTooLarge):
        group(size.s(b'small'), size.s(b'x' * 5000)).apply_async()
    with pytest.raises(PayloadTooLarge):
        chain(size.s(b'small'), add.s(b'x' * 5000)).apply_async()
    assert query(db, 'select count(*) from hueyapp_inbox') == [(1,)]   # only the small call
    assert query(db, 'select count(*) from schedule') == [(0,)]


def test_a_chain_whose_next_step_is_too_large_fails_instead_of_hanging(db, consumers):
    # The first step returns 50 kB; the next step's message carries it, over the consumer's limit.
    consumer = consumers(WORKER, env={**WORKER_ENV, 'HUEYAPP_MAX_PAYLOAD': '20000'})
    last = chain(grow.s(50_000), size.s()).apply_async()
    wait_until(last.parent.ready, 10, 'the first step to end')
    try:
        outcome = last.get(timeout=5, propagate=False)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f'the last step never ended ({exc!r}); first step: {last.parent.state} '
                    f'{last.parent.result!r}\n{consumer.log()[-3000:]}')
    assert isinstance(outcome, PayloadTooLarge), outcome


def test_an_outcome_blocked_past_the_consumers_busy_timeout_is_not_lost(db, consumers, tmp_path):
    # The consumer gives up waiting for the lock after 1 s. README: "A result or acknowledgement
    # is never dropped because the file was busy": the task must still end (its delivery
    # retried or handed out again once its lease lapses), not stay leased forever.
    env = {**WORKER_ENV, 'HUEYAPP_BUSY_TIMEOUT': '1', 'HUEYAPP_LEASE_SECONDS': '2'}
    consumer = consumers(WORKER, env=env)
    marker = tmp_path / 'started'
    slow = started_then_sleep.delay(str(marker), 0.3, 'done')
    wait_until(marker.exists, 10, 'the task to start')
    released = hold_write_lock(db, 4)
    wait_until(released.is_set, 10, 'the lock to be released')
    try:
        assert slow.get(timeout=10) == 'done'
    except Exception as exc:  # noqa: BLE001
        rows = query(db, 'select deliveries, lease_owner is not null, lease_expires - unixepoch() from task')
        pytest.fail(f'no outcome 10 s after the lock was released ({exc!r}); task rows '
                    f'(deliveries, leased, lease left s): {rows}\n{consumer.log()[-2500:]}')

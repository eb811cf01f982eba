"""Reading a leased batch ahead: one query for the outcomes and revocations of all its tasks,
which stands for a task only if it starts within ``READ_AHEAD_FRESH`` of the read."""
from __future__ import annotations

import re
import time

import pytest

from hueyapp import delivery
from hueyapp.result import AsyncResult
from hueyapp.tasks import add, huey
from tests.poison_tasks import WORKER_ENV
from tests.waiting import wait_until
from tests.worker_tasks import waits_for_file


@pytest.fixture
def batches_of_four(db):
    before = huey.storage.prefetch
    huey.storage.prefetch = 4
    yield
    huey.storage.prefetch = before


def count_reads(monkeypatch) -> list:
    reads = []
    peek_many = type(huey.storage).peek_many

    def counted(storage, keys):
        reads.append(list(keys))
        return peek_many(storage, keys)

    monkeypatch.setattr(type(huey.storage), 'peek_many', counted)
    return reads


def run_next():
    return huey.execute(huey.dequeue())


def test_a_batch_is_read_ahead_in_one_query(batches_of_four, monkeypatch):
    results = [add.delay(i, i) for i in range(4)]
    reads = count_reads(monkeypatch)
    for _ in results:
        run_next()
    assert [r.get(timeout=1) for r in results] == [0, 2, 4, 6]
    assert len(reads) == 1
    assert {r.id for r in results} <= set(reads[0])  # and each task's done mark, revoke keys


def test_a_revocation_after_the_read_is_seen_by_a_task_that_starts_later(batches_of_four, monkeypatch):
    first, second, third = add.delay(1, 1), add.delay(2, 2), add.delay(3, 3)
    reads = count_reads(monkeypatch)
    run_next()                                   # leases and reads all three, runs the first
    read_at = time.monotonic()
    third.revoke()
    wait_until(lambda: time.monotonic() > read_at + delivery.READ_AHEAD_FRESH, 5,
               'the read ahead to go stale')
    run_next()
    run_next()
    assert first.get(timeout=1) == 2 and second.get(timeout=1) == 4
    assert third.state == 'REVOKED'
    assert len(reads) == 3                       # the batch's, then one each once stale


def test_an_unreadable_message_in_a_batch_is_still_dead_lettered(batches_of_four):
    good = add.delay(1, 1)
    huey.storage.enqueue(b'not a message')
    later = add.delay(2, 2)
    for _ in range(2):
        run_next()
    assert good.get(timeout=1) == 2 and later.get(timeout=1) == 4
    letters = huey.storage.dead_letters()
    assert len(letters) == 1 and 'cannot be read' in letters[0].reason


def test_consumer_honours_a_revocation_of_a_reserved_task(consumers, tmp_path):
    # One worker leases the slow task and the two behind it in one batch; the last is
    # revoked while the slow one runs, long after the batch's read.
    gate = tmp_path / 'open'
    slow = waits_for_file.delay(str(gate), 20)
    behind, revoked = add.delay(1, 1), add.delay(2, 2)
    consumer = consumers('tests.worker_tasks.huey', '-w', '1', env=WORKER_ENV)
    wait_until(lambda: re.search(rf'Executing \S+: {slow.id}', consumer.log()), 10,
               'the slow task to start', consumer)
    assert huey.storage.queue_size() == 0        # all three were leased in one batch
    revoked.revoke()
    # The batch was read before the slow task started: once that read is stale, let it end.
    started_seen = time.monotonic()
    wait_until(lambda: time.monotonic() > started_seen + delivery.READ_AHEAD_FRESH, 5,
               'the read ahead to go stale')
    gate.touch()
    assert slow.get(timeout=20) is True
    assert behind.get(timeout=10) == 2
    wait_until(lambda: AsyncResult(revoked.id).state == 'REVOKED', 10, 'the revocation', consumer)
    assert not re.search(rf'Executing \S+: {revoked.id}', consumer.log())
    assert re.search(rf'Executing \S+: {behind.id}', consumer.log())


def test_a_lone_delivery_reads_its_keys_when_it_runs(db, monkeypatch):
    # With nothing to share the read with, dequeue() does not read ahead: a revocation that
    # comes between dequeue() and execute() is seen, however quickly it comes.
    result = add.delay(1, 1)
    reads = count_reads(monkeypatch)
    task = huey.dequeue()
    assert reads == []
    result.revoke()
    huey.execute(task)
    assert len(reads) == 1
    assert result.state == 'REVOKED'

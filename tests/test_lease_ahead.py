"""Leasing ahead: on a backlog, the task that empties the reserve leases the next batch in the
commit of its own outcome, so a draining worker commits once per task, not once more per batch."""
from __future__ import annotations

import sqlite3

import pytest

from hueyapp.storage import SqliteStorage, sqlite_sql
from hueyapp.tasks import add, huey


@pytest.fixture
def batches_of_four(db):
    before = huey.storage.prefetch
    huey.storage.prefetch = 4
    yield db
    huey.storage.prefetch = before
    huey.storage.leases.release_all()


@pytest.fixture
def plain_leases(monkeypatch) -> list:
    """Counts the leases taken outside a task's outcome (``lease()``'s own statement)."""
    calls = []
    lease_batch = SqliteStorage._lease_batch

    def counted(storage, *args):
        calls.append(args)
        return lease_batch(storage, *args)

    monkeypatch.setattr(SqliteStorage, '_lease_batch', counted)
    return calls


def run_next():
    task = huey.dequeue()
    assert task is not None, 'the queue ran dry'
    huey.execute(task)
    return task


def leased_ids(db) -> set[int]:
    with sqlite3.connect(db) as conn:
        return {row_id for row_id, in conn.execute(
            'select id from task where lease_owner is not null')}


def test_the_task_that_empties_the_reserve_leases_the_next_batch(batches_of_four, plain_leases):
    results = [add.delay(i, i) for i in range(10)]
    for _ in range(4):
        run_next()
    assert len(plain_leases) == 1                          # the first batch only
    assert len(leased_ids(batches_of_four)) == 4           # tasks 5-8, leased with task 4's outcome
    assert huey.storage.leases.has_reserved()
    ran = [run_next() for _ in range(6)]
    assert len(plain_leases) == 1                          # 9-10 came with task 8's outcome too
    assert [task.id for task in ran] == [r.id for r in results[4:]]  # still FIFO
    assert [r.get(timeout=1) for r in results] == [2 * i for i in range(10)]
    assert huey.dequeue() is None                          # a short batch: no lease ahead after it
    assert leased_ids(batches_of_four) == set()


def test_no_lease_ahead_while_the_inbox_has_rows_so_a_higher_priority_runs_next(batches_of_four,
                                                                                 plain_leases):
    backlog = [add.delay(i, i) for i in range(8)]
    for _ in range(3):
        run_next()
    urgent = add.apply_async((100, 100), priority=9)      # waits in the inbox
    run_next()                                             # empties the reserve: leases nothing
    assert leased_ids(batches_of_four) == set()
    assert not huey.storage.leases.has_reserved()
    assert run_next().id == urgent.id                      # the next lease moved the inbox first
    assert len(plain_leases) == 2
    assert [run_next().id for _ in range(4)] == [r.id for r in backlog[4:]]
    assert urgent.get(timeout=1) == 200


def test_a_task_whose_lease_was_lost_leases_nothing_ahead(batches_of_four):
    results = [add.delay(i, i) for i in range(8)]
    for _ in range(3):
        run_next()
    fourth = huey.dequeue()
    with sqlite3.connect(batches_of_four) as conn:         # another worker took it over
        conn.execute("update task set lease_owner = 'another' where lease_owner is not null")
    assert huey.execute(fourth) is None                    # its outcome is rolled back
    assert not huey.storage.leases.has_reserved()
    assert not results[3].ready()
    assert leased_ids(batches_of_four) == {fourth.delivery.row_id}  # the taker's, no new batch


def test_a_failing_lease_ahead_does_not_fail_the_task(batches_of_four, monkeypatch):
    results = [add.delay(i, i) for i in range(8)]
    for _ in range(3):
        run_next()
    monkeypatch.setattr(sqlite_sql, 'LEASE_UNLESS_INBOX', 'select no_such_function()')
    run_next()
    assert results[3].get(timeout=1) == 6                  # recorded as it would be otherwise
    assert not huey.storage.leases.has_reserved()
    monkeypatch.undo()
    assert [run_next().id for _ in range(4)] == [r.id for r in results[4:]]

"""The Celery user guide's examples, run by real ``huey_consumer`` processes on a temp SQLite file.

Each test gets a fresh database (fixture ``db``) and starts its own consumers on it (fixture
``consumers``). Every wait has a deadline: ``get(timeout=...)`` or a bounded poll.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from hueyapp import AsyncResult, GroupResult
from hueyapp.canvas import chain, chord, group
from hueyapp.tasks import add, app, mul, xsum

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_in_other_process(db, *task_ids: str) -> list[str]:
    """Each id's ``AsyncResult(id).get(timeout=10)``, printed by a separate Python process."""
    script = textwrap.dedent(f"""
        from hueyapp import AsyncResult
        import hueyapp.tasks
        for task_id in {list(task_ids)!r}:
            print(repr(AsyncResult(task_id).get(timeout=10)))
    """)
    env = {**os.environ, 'HUEYAPP_DB': str(db), 'PYTHONPATH': CHECKOUT}
    env.pop('HUEYAPP_IMMEDIATE', None)
    done = subprocess.run([sys.executable, '-c', script], env=env, cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f'reader process failed:\n{done.stdout}\n{done.stderr}'
    return done.stdout.splitlines()


def stored_result_keys(db) -> set[str]:
    """The keys of hueyapp's key/value table, read straight from the SQLite file."""
    with sqlite3.connect(db, timeout=30) as conn:
        return {key for (key,) in conn.execute('select key from hueyapp_kv')}


def test_add_delay_ready_and_get(consumers):
    consumers()
    result = add.delay(1, 1)
    assert result.ready() in (False, True)  # either is right this early
    assert result.get(timeout=1) == 2
    assert result.ready() is True
    assert result.successful()
    assert result.state == 'SUCCESS'
    assert result.result == 2


def test_failed_task_raises_its_own_exception_with_worker_traceback(consumers):
    consumers()
    result = add.delay(1, '1')
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \+: 'int' and 'str'"):
        result.get(timeout=10)

    error = result.get(propagate=False)
    assert isinstance(error, TypeError)
    assert "'int' and 'str'" in str(error)
    assert result.failed()
    assert result.state == 'FAILURE'
    assert isinstance(result.result, TypeError)

    traceback = result.traceback
    assert traceback is not None
    assert 'return x + y' in traceback            # the worker's source line of `add`
    assert os.path.join('hueyapp', 'tasks.py') in traceback
    assert traceback.rstrip().splitlines()[-1].startswith('TypeError:')


def test_group_of_adds(consumers):
    consumers()
    result = group(add.s(i, i) for i in range(10))()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=15) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert result.ready()
    assert result.successful()
    assert result.completed_count() == 10


def test_chain_add_then_mul_and_its_parent_links(consumers):
    consumers()
    result = chain(add.s(4, 4) | mul.s(8))()
    assert result.get(timeout=10) == 64

    parent = result.parent
    assert isinstance(parent, AsyncResult)
    assert parent.id != result.id
    assert parent.get(timeout=10) == 8
    assert parent.parent is None

    longer = chain(add.s(1, 1), add.s(2), mul.s(3))()
    assert longer.get(timeout=10) == 12
    assert longer.parent.get(timeout=10) == 4
    assert longer.parent.parent.get(timeout=10) == 2
    assert longer.parent.parent.parent is None
    assert len({longer.id, longer.parent.id, longer.parent.parent.id}) == 3


def test_chord_sums_the_group(consumers):
    consumers()
    result = chord((add.s(i, i) for i in range(10)), xsum.s())()
    assert result.get(timeout=15) == 90
    header = result.parent
    assert isinstance(header, GroupResult)
    assert header.get(timeout=10) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_apply_async_to_hipri_runs_on_the_hipri_consumer(consumers):
    consumers()
    hipri = consumers('hueyapp.tasks.hipri')
    result = add.apply_async((2, 2), queue='hipri')
    assert result.get(timeout=10) == 4
    assert result.id in hipri.log()


def test_results_are_read_from_another_process_without_consuming_them(consumers, db):
    consumers()
    consumers('hueyapp.tasks.hipri')
    on_default = add.delay(20, 1)
    on_hipri = add.apply_async((40, 2), queue='hipri')
    assert on_default.get(timeout=10) == 21
    assert on_hipri.get(timeout=10) == 42

    assert read_in_other_process(db, on_default.id, on_hipri.id) == ['21', '42']

    # The other process's reads consumed nothing: fresh handles here (no cached outcome)
    # still read both results, and so does another process again.
    assert AsyncResult(on_default.id).get(timeout=1) == 21
    assert AsyncResult(on_hipri.id).get(timeout=1) == 42
    assert {on_default.id, on_hipri.id} <= stored_result_keys(db)
    assert read_in_other_process(db, on_default.id, on_hipri.id) == ['21', '42']


def test_idle_consumer_still_picks_up_a_task_at_once(consumers):
    consumers()
    # Deliberate idle period, not a wait for a condition: plain Huey's polling worker backs off
    # to sleeping up to 10 s between empty reads after this long, so the 1 s get below would
    # time out; hueyapp's blocking dequeue must keep pickup immediate.
    time.sleep(15)
    assert add.delay(1, 1).get(timeout=1) == 2


def test_consumer_sweeps_expired_results(consumers, db):
    before = app.settings.result_expires
    app.configure(result_expires=1)
    try:
        consumers(env={'HUEYAPP_RESULT_EXPIRES': '1'})
        result = add.delay(5, 5)
        assert result.get(timeout=10) == 10

        deadline = time.monotonic() + 15
        while result.id in stored_result_keys(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert result.id not in stored_result_keys(db), 'the expired result row was never swept'
        assert AsyncResult(result.id).state == 'PENDING'
    finally:
        app.configure(result_expires=before)

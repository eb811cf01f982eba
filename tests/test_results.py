"""AsyncResult as in Celery: states, failures, non-destructive reads, revoke, expiry."""
import builtins
import datetime
import sqlite3
import threading
import time

import pytest
from freezegun import freeze_time

import hueyapp
from hueyapp import AsyncResult, ChordError, TaskError, TaskRevokedError
from hueyapp.canvas import chain, chord
from hueyapp.delivery import current_task
from hueyapp.tasks import add, app, hipri, huey, mul, xsum

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0)


class Custom(Exception):
    pass


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f'{a} and {b}')


@app.task()
def raises_local_exception():
    class LocalError(Exception):
        pass
    raise LocalError('made inside the task')


@app.task()
def raises_two_arg_exception():
    raise NeedsTwoArgs('x', 'y')


@app.task()
def raises_custom():
    raise Custom('mine', 7)


@app.task(queue='hipri')
def urgent(x):
    return x


@app.task()
def raises_key_error():
    raise KeyError('missing')


def run_one():
    """What a consumer would do with the next task of the default queue, in this process."""
    return huey.execute(huey.dequeue())


def kv_rows(db):
    with sqlite3.connect(db) as conn:
        return conn.execute('select count(*) from hueyapp_kv').fetchone()[0]


# -- failures -------------------------------------------------------------------------

def test_failure_get_raises_the_task_exception(immediate):
    with pytest.raises(TypeError, match='unsupported operand'):
        add.delay(1, '1').get()


def test_failure_get_without_propagate_returns_the_exception(immediate):
    error = add.delay(1, '1').get(propagate=False)
    assert isinstance(error, TypeError)
    assert 'unsupported operand' in str(error)


def test_failure_state_result_and_traceback(immediate):
    result = add.delay(1, '1')
    assert result.state == 'FAILURE'
    assert result.failed() is True
    assert result.successful() is False
    assert result.ready() is True
    assert isinstance(result.result, TypeError)
    assert 'TypeError' in result.traceback
    assert 'line' in result.traceback
    assert 'return x + y' in result.traceback


def test_key_error_is_rebuilt_with_its_args(immediate):
    error = raises_key_error.delay().get(propagate=False)
    assert isinstance(error, KeyError)
    assert error.args == ('missing',)


def test_importable_custom_exception_is_rebuilt_as_itself(immediate):
    with pytest.raises(Custom) as info:
        raises_custom.delay().get()
    assert info.value.args == ('mine', 7)


def test_success_has_no_traceback(immediate):
    result = add.delay(1, 1)
    assert result.get() == 2
    assert result.traceback is None
    assert result.result == 2


def test_exception_class_defined_inside_the_task_becomes_task_error(immediate):
    with pytest.raises(TaskError) as info:
        raises_local_exception.delay().get()
    assert 'LocalError' in info.value.exc_type
    assert 'made inside the task' in str(info.value)
    assert 'LocalError' in str(info.value)


def test_exception_that_cannot_be_rebuilt_from_its_args_becomes_task_error(immediate):
    with pytest.raises(TaskError) as info:
        raises_two_arg_exception.delay().get()
    assert 'NeedsTwoArgs' in str(info.value)
    assert info.value.message == 'x and y'


# -- reads do not consume ------------------------------------------------------------------

def test_many_reads_and_handles_see_the_same_value(immediate):
    result = add.delay(20, 22)
    other = AsyncResult(result.id)
    assert [result.get() for _ in range(3)] == [42, 42, 42]
    assert [other.get() for _ in range(3)] == [42, 42, 42]
    assert AsyncResult(result.id).get() == 42
    assert AsyncResult(result.id).state == 'SUCCESS'


def test_app_async_result(immediate):
    result = add.delay(1, 2)
    assert app.AsyncResult(result.id).get() == 3
    assert result.task_id == result.id
    assert AsyncResult(result.id) == result


def test_forget_makes_the_result_pending(immediate):
    result = add.delay(1, 2)
    assert result.get() == 3
    result.forget()
    assert result.state == 'PENDING'
    assert AsyncResult(result.id).state == 'PENDING'
    assert AsyncResult(result.id).ready() is False


# -- waiting ------------------------------------------------------------------------------

def test_pending_while_queued(db):
    result = add.delay(1, 2)
    assert result.state == 'PENDING'
    assert result.ready() is False
    assert result.result is None


def test_get_with_timeout_raises_timeout_error(db):
    result = add.delay(1, 2)
    start = time.monotonic()
    with pytest.raises(hueyapp.TimeoutError) as info:
        result.get(timeout=0.2)
    assert isinstance(info.value, builtins.TimeoutError)
    assert 0.15 <= time.monotonic() - start < 2


def test_group_get_timeout_bounds_the_whole_wait(db):
    from hueyapp.canvas import group
    result = group(add.s(i, i) for i in range(5))()
    start = time.monotonic()
    with pytest.raises(builtins.TimeoutError):
        result.get(timeout=0.3)
    assert time.monotonic() - start < 1.0


def test_result_seen_once_the_task_ran(db):
    result = add.delay(1, 2)
    run_one()
    assert result.get(timeout=1) == 3
    assert result.state == 'SUCCESS'


# -- revoke and expires ---------------------------------------------------------------------

def test_revoke_before_it_runs(db):
    result = add.delay(1, 2)
    result.revoke()
    assert result.state == 'REVOKED'
    assert run_one() is None          # the function did not run
    assert result.state == 'REVOKED'
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    with pytest.raises(TaskRevokedError):
        AsyncResult(result.id).get(timeout=1)
    assert huey.pending_count() == 0


def test_revoke_reaches_a_task_on_another_queue(db):
    result = urgent.delay(1)
    result.revoke()
    assert hipri.execute(hipri.dequeue()) is None
    assert AsyncResult(result.id).state == 'REVOKED'


@app.task(retries=1)
def revokes_itself_then_fails():
    AsyncResult(current_task.get().id).revoke()  # as a revoke arriving while it runs
    raise ValueError('retry me')


def test_revoked_while_running_its_retry_does_not_run(db):
    # Celery keeps a revoked id revoked: the run in progress ends, a retry of it does not run.
    result = revokes_itself_then_fails.delay()
    run_one()
    assert huey.pending_count() == 1                   # the retry is queued
    assert run_one() is None
    assert result.state == 'REVOKED'
    assert huey.pending_count() == 0


def test_revoked_task_is_ready_and_get_raises_at_once(db):
    # Celery: ready() is `state in READY_STATES`; a REVOKED result raises from get().
    result = add.delay(1, 2)
    result.revoke()
    assert result.state == 'REVOKED'
    assert result.ready() is True
    with pytest.raises(TaskRevokedError):
        result.get(timeout=0.2)


def test_revoking_a_chain_step_revokes_the_rest(db):
    result = chain(add.s(1, 1), mul.s(2))()
    result.parent.revoke()
    run_one()
    assert huey.pending_count() == 0
    assert result.parent.state == 'REVOKED'
    assert result.state == 'REVOKED'
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_revoked_chord_member_fails_the_chord(db):
    result = chord([add.s(1, 1), add.s(2, 2)], xsum.s())()
    revoked = result.parent.results[0]
    revoked.revoke()
    run_one()
    run_one()
    assert huey.pending_count() == 0
    with pytest.raises(ChordError) as info:
        result.get(timeout=1)
    assert revoked.id in str(info.value)


def test_expires_in_the_past_is_not_run_and_reads_revoked(immediate):
    result = add.apply_async((1, 2), expires=datetime.datetime(2000, 1, 1))
    assert result.state == 'REVOKED'
    with pytest.raises(TaskRevokedError):
        result.get()


def test_expires_seconds_passed_before_a_worker_took_it(db):
    # Huey's clock (huey.utils.utcnow) is not freezegun's: give the worker's timestamp instead.
    result = add.apply_async((1, 2), expires=5)
    task = huey.dequeue()
    assert huey.execute(task, timestamp=task.expires_resolved + datetime.timedelta(seconds=1)) is None
    assert result.state == 'REVOKED'
    with pytest.raises(TaskRevokedError, match='expired'):
        result.get(timeout=1)


def test_expires_not_yet_passed_runs(db):
    result = add.apply_async((1, 2), expires=5)
    task = huey.dequeue()
    huey.execute(task, timestamp=task.expires_resolved - datetime.timedelta(seconds=1))
    assert result.get(timeout=1) == 3


def test_naive_expires_datetime_is_utc_like_eta(immediate, monkeypatch):
    # Celery reads naive datetimes as UTC (hueyapp does so for eta); a worker in UTC+9
    # must not treat an expiry one hour ahead (UTC) as eight hours ago.
    monkeypatch.setenv('TZ', 'JST-9')
    time.tzset()
    try:
        soon = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        result = add.apply_async((1, 2), expires=soon + datetime.timedelta(hours=1))
        assert result.state == 'SUCCESS'
        assert result.get() == 3
    finally:
        monkeypatch.undo()
        time.tzset()


def test_bad_expires_value_rejected_at_call_time(db):
    with pytest.raises((ValueError, TypeError)):
        add.apply_async((1, 2), expires='tomorrow')
    assert huey.pending_count() == 0


# -- result expiry ---------------------------------------------------------------------------

def test_result_expires_after_result_expires_seconds(db):
    with freeze_time(T0) as frozen:
        result = add.delay(1, 2)
        other = add.delay(3, 4)
        other.revoke()
        run_one()
        assert AsyncResult(result.id).get(timeout=0) == 3
        rows = kv_rows(db)                     # the result, its done mark, the revoke key
        assert rows == 3
        frozen.tick(app.settings.result_expires - 1)
        assert AsyncResult(result.id).state == 'SUCCESS'
        assert AsyncResult(other.id).state == 'REVOKED'
        frozen.tick(2)
        assert AsyncResult(result.id).state == 'PENDING'
        # Revocations live as long as results (Celery's workers forget them after 3 hours).
        assert AsyncResult(other.id).state == 'PENDING'
        assert app.default.storage.purge_expired() == 3
        assert kv_rows(db) == 0


def test_failure_results_expire_too(db):
    with freeze_time(T0) as frozen:
        result = add.delay(1, '1')
        run_one()
        assert AsyncResult(result.id).state == 'FAILURE'
        frozen.tick(app.settings.result_expires + 1)
        assert AsyncResult(result.id).state == 'PENDING'


@app.task()
def returns_unpicklable():
    return threading.Lock()


def test_unserializable_return_value_is_a_failure_not_pending_forever(db):
    # Celery marks such a task FAILURE (EncodeError); it must not stay PENDING forever.
    result = returns_unpicklable.delay()
    try:
        run_one()
    except Exception:
        pass  # a consumer's worker logs an error escaping execute() and carries on
    assert AsyncResult(result.id).state == 'FAILURE'
    error = AsyncResult(result.id).get(timeout=1, propagate=False)
    assert 'cannot be serialized' in str(error)

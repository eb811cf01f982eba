"""Calling tasks as in Celery: delay, apply_async options, local calls, routing, serialization."""
import datetime
import os
import threading
import time
import uuid

import pytest

from hueyapp import AsyncResult, SerializationError
from hueyapp.canvas import chain, chord, group
from hueyapp.tasks import add, app, hipri, huey, mul, xsum

RETRY_CALLS = []
RAN = []


@app.task()
def echo(*args, **kwargs):
    return args, kwargs


@app.task()
def record(x):
    RAN.append(x)
    return x


@app.task()
def returns_none():
    return None


@app.task(queue='hipri')
def urgent(x):
    return x


@app.task()
def flaky(key, failures):
    RETRY_CALLS.append(key)
    if RETRY_CALLS.count(key) <= failures:
        raise RuntimeError(f'attempt {RETRY_CALLS.count(key)}')
    return RETRY_CALLS.count(key)


def pending():
    return huey.pending_count() + hipri.pending_count()


def test_delay_then_get(immediate):
    assert add.delay(2, 3).get() == 5


def test_apply_async_args_and_kwargs(immediate):
    assert add.apply_async((2,), {'y': 40}).get() == 42


def test_calling_the_task_runs_it_locally_without_enqueueing(db):
    assert add(2, 3) == 5
    assert pending() == 0
    assert huey.scheduled_count() == 0


def test_delay_enqueues_on_the_default_queue(db):
    result = add.delay(2, 3)
    assert isinstance(result, AsyncResult)
    assert huey.pending_count() == 1
    assert hipri.pending_count() == 0
    assert [task.id for task in huey.pending()] == [result.id]


def test_user_kwargs_named_like_options_reach_the_function(immediate):
    kwargs = dict(delay=1, eta=2, priority=3, timeout=4, retries=5, id=6, countdown=7,
                  queue=8, expires=9, task_id=10)
    assert echo.delay('a', **kwargs).get() == (('a',), kwargs)


def test_user_kwargs_named_like_options_reach_the_function_via_apply_async(immediate):
    kwargs = dict(delay=1, eta=2, priority=3, timeout=4, retries=5, id=6, countdown=7, queue=8)
    assert echo.apply_async(('a',), kwargs).get() == (('a',), kwargs)


def test_unknown_queue_raises_value_error_listing_declared_queues(immediate):
    with pytest.raises(ValueError) as info:
        add.apply_async((1, 2), queue='nope')
    assert 'nope' in str(info.value)
    assert 'default' in str(info.value) and 'hipri' in str(info.value)


def test_unknown_option_raises_type_error(immediate):
    with pytest.raises(TypeError, match='countdwn'):
        add.apply_async((1, 2), countdwn=5)


def test_unpicklable_argument_raises_serialization_error_and_enqueues_nothing(db):
    with pytest.raises(SerializationError) as info:
        add.delay(threading.Lock(), 1)
    assert 'add' in str(info.value)
    assert isinstance(info.value, TypeError)
    assert pending() == 0
    assert huey.scheduled_count() == 0


def test_unpicklable_argument_with_countdown_enqueues_nothing(db):
    with pytest.raises(SerializationError):
        add.apply_async((threading.Lock(), 1), countdown=60)
    assert pending() == 0
    assert huey.scheduled_count() == 0


def test_group_with_one_unpicklable_member_enqueues_none_of_them(db):
    members = [add.s(i, i) for i in range(4)] + [add.s(threading.Lock(), 1)]
    with pytest.raises(SerializationError, match='add'):
        group(members).apply_async()
    assert pending() == 0


def test_serialization_error_names_the_chain_step_that_cannot_be_serialized(db):
    with pytest.raises(SerializationError) as info:
        chain(add.s(1, 1), mul.s(threading.Lock())).apply_async()
    assert "'mul'" in str(info.value)
    assert pending() == 0


def test_chord_with_one_unpicklable_member_enqueues_none_of_them(db):
    members = [add.s(i, i) for i in range(4)] + [add.s(threading.Lock(), 1)]
    with pytest.raises(SerializationError):
        chord(members, xsum.s()).apply_async()
    assert pending() == 0


def test_unpicklable_argument_raises_serialization_error_in_immediate_mode(immediate):
    with pytest.raises(SerializationError, match='add'):
        add.delay(threading.Lock(), 1)


def test_group_with_one_unpicklable_member_runs_none_of_them_in_immediate_mode(immediate):
    # Immediate mode must show what a consumer would do: the group is refused as a whole.
    RAN.clear()
    members = [record.s(i) for i in range(4)] + [record.s(threading.Lock())]
    with pytest.raises(SerializationError):
        group(members).apply_async()
    assert RAN == []


def test_countdown_runs_at_once_in_immediate_mode(immediate):
    assert add.apply_async((1, 2), countdown=3600).get(timeout=1) == 3


def test_eta_runs_at_once_in_immediate_mode(immediate):
    eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    assert add.apply_async((1, 2), eta=eta).get(timeout=1) == 3


def test_countdown_sets_the_eta_of_the_enqueued_task(db):
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    add.apply_async((1, 2), countdown=3600)
    [task] = huey.pending()
    delta = (task.eta - before).total_seconds()
    assert 3590 < delta < 3610


def test_naive_eta_is_read_as_utc(db):
    eta = datetime.datetime(2030, 1, 1, 12, 0)
    add.apply_async((1, 2), eta=eta)
    [task] = huey.pending()
    assert task.eta == eta


def test_task_returning_none_is_a_success(immediate):
    result = returns_none.delay()
    assert result.get() is None
    assert result.ready() is True
    assert result.state == 'SUCCESS'
    assert result.successful()


def test_apply_async_task_id_is_used(immediate):
    result = add.apply_async((1, 2), task_id='x-1')
    assert result.id == 'x-1'
    assert AsyncResult('x-1').get() == 3


def test_task_declared_for_hipri_goes_to_hipri(db):
    urgent.delay(1)
    assert hipri.pending_count() == 1
    assert huey.pending_count() == 0


def test_apply_async_queue_overrides_the_declared_queue(db):
    urgent.apply_async((1,), queue='default')
    assert hipri.pending_count() == 0
    assert huey.pending_count() == 1


def test_apply_async_queue_hipri_for_a_default_task(db):
    add.apply_async((1, 2), queue='hipri')
    assert hipri.pending_count() == 1
    assert huey.pending_count() == 0


def test_task_declared_for_hipri_runs_in_immediate_mode(immediate):
    assert urgent.delay(7).get() == 7


def test_higher_priority_is_dequeued_first(db):
    low = add.apply_async((1, 1), priority=1)
    high = add.apply_async((2, 2), priority=9)
    assert [task.id for task in huey.pending()] == [high.id, low.id]


def test_retries_rerun_a_failing_task(immediate):
    assert flaky.apply_async(('retry-ok', 2), retries=2).get() == 3


def test_without_retries_a_failing_task_fails(immediate):
    with pytest.raises(RuntimeError, match='attempt 1'):
        flaky.delay('no-retry', 1).get()


def test_aware_eta_is_converted_to_utc(db):
    plus_one = datetime.timezone(datetime.timedelta(hours=1))
    add.apply_async((1, 2), eta=datetime.datetime(2030, 1, 1, 13, 0, tzinfo=plus_one))
    [task] = huey.pending()
    assert task.eta == datetime.datetime(2030, 1, 1, 12, 0)


def test_the_documented_pytest_fixture_runs_tasks_in_process(hueyapp_immediate):
    assert hueyapp_immediate.settings.immediate
    assert add.delay(2, 2).get(timeout=0) == 4
    assert huey.pending_count() == 0


def test_task_ids_are_time_ordered_version_7_uuids(db):
    before = time.time()
    ids = [add.delay(1, 1).id for _ in range(500)]
    after = time.time()
    assert len(set(ids)) == len(ids)
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == task_id  # the canonical lowercase 8-4-4-4-12 form
        milliseconds = parsed.int >> 80
        assert int(before * 1000) <= milliseconds <= int(after * 1000) + 1
    # In creation order to the 12-bit sub-millisecond fraction; the random tail only
    # orders ids made within the same 1/4096 ms.
    assert [i[:18] for i in ids] == sorted(i[:18] for i in ids)


def test_a_forked_child_draws_other_task_ids_than_its_parent(db):
    add.s(1, 1).to_task()  # the parent has random bits in store when it forks
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without pytest's teardown
        os.write(writer, add.s(1, 1).to_task().id.encode())
        os._exit(0)
    os.close(writer)
    try:
        assert os.waitpid(pid, 0)[1] == 0
        child_id = os.read(reader, 100).decode()
    finally:
        os.close(reader)
    parent_id = add.s(1, 1).to_task().id
    # The same bits in store at the fork: unless the child drops them, both tails are equal.
    assert uuid.UUID(child_id).version == 7 and child_id[19:] != parent_id[19:]

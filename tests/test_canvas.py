"""Celery's canvas: group, chain, chord, signatures and how results flow between tasks."""
import gc
import threading

import pytest

from hueyapp import ChordError, GroupResult, SerializationError
from hueyapp.canvas import chain, chord, group, signature
from hueyapp.tasks import add, app, hipri, huey, mul, xsum

BODY_RUNS = []


@app.task()
def echo(*args, **kwargs):
    return args, kwargs


@app.task()
def pair(a, b):
    return a, b


@app.task()
def as_dict(a):
    return {'a': a}


@app.task()
def boom(x):
    raise ValueError(f'boom {x}')


@app.task()
def record_body(values):
    BODY_RUNS.append(values)
    return values


@app.task(queue='hipri')
def urgent(x):
    return x


def run_pending(queue):
    """Run every task waiting on `queue` in this process, last enqueued first."""
    tasks = []
    while queue.pending_count():
        tasks.append(queue.dequeue())
    for task in reversed(tasks):
        queue.execute(task)
    return len(tasks)


# -- the Celery user guide's examples ------------------------------------------------

def test_group_results_in_order(immediate):
    assert group(add.s(i, i) for i in range(10))().get() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_chain_result_and_parent(immediate):
    result = chain(add.s(4, 4) | mul.s(8))()
    assert result.get() == 64
    assert result.parent.get() == 8
    assert result.parent.parent is None


def test_chord_sums_the_header(immediate):
    assert chord((add.s(i, i) for i in range(10)), xsum.s())().get() == 90


def test_group_piped_into_a_task_is_a_chord(immediate):
    canvas = group(add.s(i, i) for i in range(10)) | xsum.s()
    assert isinstance(canvas, chord)
    assert canvas().get() == 90


def test_chord_header_called_with_body(immediate):
    assert chord(add.s(i, i) for i in range(10))(xsum.s()).get() == 90


def test_chord_body_can_be_a_chain(immediate):
    assert chord([add.s(1, 1), add.s(2, 2)], xsum.s() | mul.s(10))().get() == 60


def test_chord_piped_into_a_task_extends_the_body(immediate):
    assert (chord([add.s(1, 1), add.s(2, 2)], xsum.s()) | mul.s(10))().get() == 60


def test_chain_of_three_has_a_parent_chain(immediate):
    result = (add.s(1, 1) | mul.s(3) | add.s(4))()
    assert (result.get(), result.parent.get(), result.parent.parent.get()) == (10, 6, 2)


def test_sig_call_runs_locally():
    assert add.s(2)(3) == 5


def test_signature_function(immediate):
    assert signature(add, (1, 2)).delay().get() == 3


# -- how a parent's result reaches the next task ---------------------------------------

def test_chain_passes_a_tuple_as_one_argument(immediate):
    assert chain(pair.s(1, 2), echo.s()).apply_async().get() == (((1, 2),), {})


def test_chain_passes_a_dict_as_one_argument_not_as_kwargs(immediate):
    assert chain(as_dict.s(1), echo.s()).apply_async().get() == (({'a': 1},), {})


def test_parent_result_is_the_first_argument(immediate):
    assert chain(add.s(1, 1), echo.s('b')).apply_async().get() == ((2, 'b'), {})


def test_partial_signature_arguments_come_after_the_parent_result(immediate):
    assert (add.s(1, 1) | echo.s('b', k=1))().get() == ((2, 'b'), {'k': 1})


def test_immutable_signature_receives_nothing(immediate):
    assert chain(add.s(1, 1), echo.si('b')).apply_async().get() == (('b',), {})


def test_immutable_chord_body_receives_nothing(immediate):
    assert chord([add.s(1, 1)], echo.si())().get() == ((), {})


def test_chain_starting_with_a_group_is_a_chord(immediate):
    result = chain(group(add.s(1, 1), add.s(2, 2)), echo.s('x'))()
    assert result.get() == (([2, 4], 'x'), {})
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get() == [2, 4]


def test_empty_chord_header_runs_the_body_with_an_empty_list(immediate):
    assert chord([], echo.s())().get() == (([],), {})


def test_group_of_chains(immediate):
    assert group(add.s(i, i) | mul.s(10) for i in range(3))().get() == [0, 20, 40]


def test_chord_of_chains(immediate):
    assert chord((add.s(i, i) | mul.s(10) for i in range(3)), xsum.s())().get() == 60


# -- failures --------------------------------------------------------------------------

def test_chord_with_failing_header_does_not_run_body_and_raises_chord_error(immediate):
    BODY_RUNS.clear()
    result = chord([add.s(1, 1), boom.s(3), add.s(2, 2)], record_body.s())()
    failed_id = result.parent.results[1].id
    with pytest.raises(ChordError) as info:
        result.get()
    assert failed_id in str(info.value)
    assert BODY_RUNS == []
    assert result.state == 'FAILURE'


def test_chord_with_successful_header_runs_body_once(immediate):
    BODY_RUNS.clear()
    assert chord([add.s(1, 1), add.s(2, 2)], record_body.s())().get() == [2, 4]
    assert BODY_RUNS == [[2, 4]]


def test_chain_failure_fails_the_last_result_with_the_original_error(immediate):
    result = chain(boom.s(1), add.s(1), mul.s(2))()
    with pytest.raises(ValueError, match='boom 1'):
        result.get()
    with pytest.raises(ValueError, match='boom 1'):
        result.parent.get()


def test_group_member_failure_returned_with_propagate_false(immediate):
    result = group(add.s(1, 1), boom.s(2), add.s(3, 3))()
    values = result.get(propagate=False)
    assert values[0] == 2 and values[2] == 6
    assert isinstance(values[1], ValueError) and 'boom 2' in str(values[1])
    with pytest.raises(ValueError):
        result.get()
    assert result.failed()
    assert not result.successful()


# -- group results -----------------------------------------------------------------------

def test_group_result_len_iteration_and_completion(db):
    result = group(add.s(i, 1) for i in range(3))()
    assert len(result) == 3
    assert [r.id for r in result] == [r.id for r in result.results]
    assert not result.ready()
    assert result.completed_count() == 0
    huey.execute(huey.dequeue())
    assert result.completed_count() == 1
    assert not result.ready()
    run_pending(huey)
    assert result.ready()
    assert result.completed_count() == 3
    assert result.get() == [1, 2, 3]


def test_group_results_keep_given_order_whatever_order_they_finish(db):
    result = group(add.s(i, 0) for i in range(5))()
    assert run_pending(huey) == 5
    assert result.get() == [0, 1, 2, 3, 4]
    assert [r.get() for r in result] == [0, 1, 2, 3, 4]


def test_chord_body_gets_header_results_in_order_whatever_order_they_finish(db):
    result = chord((add.s(i, 0) for i in range(5)), echo.s())()
    assert run_pending(huey) == 5
    assert huey.pending_count() == 1
    run_pending(huey)
    assert result.get() == (([0, 1, 2, 3, 4],), {})


def test_group_task_id_names_the_group_result(immediate):
    assert group(add.s(1, 1)).apply_async(task_id='g-1').id == 'g-1'


# -- routing a whole canvas ----------------------------------------------------------------

def test_group_apply_async_queue_puts_every_member_on_that_queue(db):
    group(add.s(i, i) for i in range(4)).apply_async(queue='hipri')
    assert hipri.pending_count() == 4
    assert huey.pending_count() == 0


def test_chain_apply_async_queue_routes_first_and_later_steps(db):
    chain(add.s(1, 1), mul.s(2)).apply_async(queue='hipri')
    assert hipri.pending_count() == 1
    assert huey.pending_count() == 0
    [first] = hipri.pending()
    assert first.on_complete.queue == 'hipri'


def test_chain_next_step_runs_on_the_canvas_queue(db):
    result = chain(add.s(1, 1), mul.s(2)).apply_async(queue='hipri')
    hipri.execute(hipri.dequeue())
    assert hipri.pending_count() == 1
    assert huey.pending_count() == 0
    hipri.execute(hipri.dequeue())
    assert result.get(timeout=1) == 4


def test_chord_apply_async_queue_puts_the_header_on_that_queue(db):
    chord((add.s(i, i) for i in range(3)), xsum.s()).apply_async(queue='hipri')
    assert hipri.pending_count() == 3
    assert huey.pending_count() == 0
    assert all(task.chord_config.callback.queue == 'hipri' for task in hipri.pending())


def test_member_set_queue_wins_over_the_canvas_queue(db):
    group(add.s(1, 1).set(queue='default'), add.s(2, 2)).apply_async(queue='hipri')
    assert huey.pending_count() == 1
    assert hipri.pending_count() == 1


def test_canvas_unknown_queue_raises_value_error_and_enqueues_nothing(db):
    with pytest.raises(ValueError, match='hipri'):
        group(add.s(1, 1), add.s(2, 2)).apply_async(queue='nope')
    assert huey.pending_count() == 0


# -- what hueyapp does not support ---------------------------------------------------------

def test_group_after_a_signature_raises_type_error(db):
    with pytest.raises(TypeError, match='group'):
        (add.s(1, 1) | group(add.s(1, 1), add.s(2, 2)))()
    assert huey.pending_count() == 0


def test_group_after_the_first_step_of_a_chain_raises_type_error(db):
    with pytest.raises(TypeError, match='group'):
        chain(add.s(1, 1), mul.s(2), group(add.s(1, 1)))()
    assert huey.pending_count() == 0


def test_chord_without_body_raises_type_error(immediate):
    with pytest.raises(TypeError, match='body'):
        chord([add.s(1, 1)]).apply_async()


# -- more of Celery's calling API on canvases ---------------------------------------------

def test_map_calls_the_task_once_per_item(immediate):
    assert add.map([(1, 2), (3, 4)]).get() == [3, 7]
    assert xsum.map([[1, 2], [3]]).get() == [3, 3]


def test_empty_group_returns_an_empty_result(immediate):
    assert group([])().get() == []


def test_chain_task_id_names_the_last_task(immediate):
    result = (add.s(1, 1) | mul.s(2)).apply_async(task_id='chain-last')
    assert result.id == 'chain-last'
    assert result.get() == 4
    assert result.parent.id != 'chain-last'


def test_chord_task_id_names_the_body(immediate):
    result = chord([add.s(1, 1)], xsum.s()).apply_async(task_id='chord-body')
    assert result.id == 'chord-body'
    assert result.get() == 2


def test_signature_options_route_the_call(db):
    signature(add, (1, 2), queue='hipri').delay()
    assert hipri.pending_count() == 1
    assert huey.pending_count() == 0


def test_chain_step_declared_for_hipri_is_enqueued_there_by_the_parent(db):
    result = chain(add.s(1, 1), urgent.s())()
    huey.execute(huey.dequeue())
    assert hipri.pending_count() == 1
    assert huey.pending_count() == 0
    hipri.execute(hipri.dequeue())
    assert result.get(timeout=1) == 2


def test_chord_body_declared_for_hipri_is_enqueued_there(db):
    result = chord([add.s(1, 1), add.s(2, 2)], urgent.s())()
    run_pending(huey)
    assert hipri.pending_count() == 1
    hipri.execute(hipri.dequeue())
    assert result.get(timeout=1) == [2, 4]


def test_group_revoke_revokes_every_member(db):
    result = group(add.s(i, i) for i in range(3))()
    result.revoke()
    run_pending(huey)
    assert [r.state for r in result] == ['REVOKED'] * 3
    assert result.ready()
    assert result.completed_count() == 0


# -- the garbage collector is paused while a group or chord is built, and only then ----------

def collector_state_inside_enqueue(monkeypatch) -> list:
    seen = []
    enqueue_many = type(huey).enqueue_many

    def spy(self, tasks):
        seen.append(gc.isenabled())
        return enqueue_many(self, tasks)

    monkeypatch.setattr(type(huey), 'enqueue_many', spy)
    return seen


def test_the_collector_is_paused_during_a_group_or_chord_and_runs_again_after(db, monkeypatch):
    seen = collector_state_inside_enqueue(monkeypatch)
    group(add.s(i, i) for i in range(3)).apply_async()
    chord([add.s(1, 1), add.s(2, 2)], xsum.s()).apply_async()
    add.map([(1, 1), (2, 2)])
    assert seen == [False, False, False]
    assert gc.isenabled()
    assert huey.pending_count() == 3 + 2 + 2


def test_the_collector_runs_again_after_a_group_that_fails_to_enqueue(db):
    with pytest.raises(SerializationError):
        group([add.s(1, 1), add.s(threading.Lock(), 1)]).apply_async()
    assert gc.isenabled()
    assert huey.pending_count() == 0


def test_a_collector_paused_by_the_caller_stays_paused(db, monkeypatch):
    seen = collector_state_inside_enqueue(monkeypatch)
    gc.disable()
    try:
        group([add.s(1, 1)]).apply_async()
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert seen == [False]

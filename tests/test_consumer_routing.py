"""Queue routing, task kwargs and countdowns, through real ``huey_consumer`` processes.

Each test has a fresh SQLite file (``db``) and starts the consumers it needs on it.
"""
from __future__ import annotations

import os
import re
import time

from hueyapp.canvas import chain
from hueyapp.tasks import add, hipri, mul
from tests.worker_tasks import echo, hipri_echo

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Consumers of tests.worker_tasks must import the `tests` package from the checkout.
WORKER_ENV = {'PYTHONPATH': CHECKOUT}


def ran(consumer, task_id: str) -> bool:
    """Whether the consumer's log says it executed ``task_id`` (not just named it in a chain)."""
    return re.search(rf'Executing \S+: {re.escape(task_id)}', consumer.log()) is not None

# Keyword arguments named like Celery's and Huey's call options: a task receives them as data.
OPTION_NAMED_KWARGS = dict(delay=30, eta='tomorrow', priority=9, timeout=0.001, retries=3,
                           id='not-a-task-id', countdown=30, queue='no-such-queue',
                           expires=-1, task_id='nor-this')


def test_hipri_task_waits_for_a_hipri_consumer(consumers):
    default = consumers()
    on_hipri = add.apply_async((2, 2), queue='hipri')
    later = add.delay(3, 3)

    # The default consumer ran the later task; the hipri one is untouched and still queued.
    assert later.get(timeout=10) == 6
    assert not on_hipri.ready()
    assert on_hipri.state == 'PENDING'
    assert hipri.pending_count() == 1

    hipri_consumer = consumers('hueyapp.tasks.hipri')
    assert on_hipri.get(timeout=10) == 4
    assert hipri.pending_count() == 0

    assert ran(hipri_consumer, on_hipri.id)
    assert on_hipri.id not in default.log()
    assert ran(default, later.id)
    assert later.id not in hipri_consumer.log()


def test_task_declared_with_its_own_queue_runs_on_that_queue(consumers):
    assert hipri_echo.queue == 'hipri'
    assert echo.queue == 'default'
    default = consumers('tests.worker_tasks.huey', env=WORKER_ENV)
    hipri_consumer = consumers('tests.worker_tasks.hipri', env=WORKER_ENV)

    declared = hipri_echo.delay(1, word='hi')
    assert declared.get(timeout=10) == ((1,), {'word': 'hi'})
    assert ran(hipri_consumer, declared.id)
    assert declared.id not in default.log()

    # A call's queue option still wins over the declared one.
    overridden = hipri_echo.apply_async((2,), queue='default')
    assert overridden.get(timeout=10) == ((2,), {})
    assert ran(default, overridden.id)
    assert overridden.id not in hipri_consumer.log()


def test_option_named_kwargs_reach_the_function_untouched(consumers):
    consumers('tests.worker_tasks.huey', env=WORKER_ENV)
    consumers('tests.worker_tasks.hipri', env=WORKER_ENV)
    expected = ((1, 2), OPTION_NAMED_KWARGS)

    assert echo.delay(1, 2, **OPTION_NAMED_KWARGS).get(timeout=10) == expected
    assert echo.apply_async((1, 2), OPTION_NAMED_KWARGS).get(timeout=10) == expected
    assert echo.s(1, 2, **OPTION_NAMED_KWARGS).delay().get(timeout=10) == expected
    # Celery's partials: arguments given at call time come before the signature's own.
    assert echo.s(1).delay(2, **OPTION_NAMED_KWARGS).get(timeout=10) == ((2, 1), OPTION_NAMED_KWARGS)
    assert hipri_echo.delay(1, 2, **OPTION_NAMED_KWARGS).get(timeout=10) == expected


def test_chain_across_queues_completes_with_both_consumers(consumers):
    default = consumers()
    hipri_consumer = consumers('hueyapp.tasks.hipri')

    result = chain(add.s(1, 1), add.s(3).set(queue='hipri'))()
    assert result.get(timeout=10) == 5
    assert result.parent.get(timeout=10) == 2
    assert ran(default, result.parent.id) and not ran(hipri_consumer, result.parent.id)
    assert ran(hipri_consumer, result.id) and not ran(default, result.id)

    there_and_back = chain(add.s(1, 1), add.s(3).set(queue='hipri'), mul.s(10))()
    assert there_and_back.get(timeout=10) == 50
    assert there_and_back.parent.get(timeout=10) == 5
    assert ran(hipri_consumer, there_and_back.parent.id)
    assert ran(default, there_and_back.id) and not ran(hipri_consumer, there_and_back.id)


def test_countdown_runs_the_task_after_the_countdown(consumers):
    consumers()
    countdown = 2
    started = time.monotonic()
    result = add.apply_async((2, 2), countdown=countdown)

    deadline = started + countdown + 3
    while not result.ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    finished_after = time.monotonic() - started

    assert result.ready(), f'not done {countdown + 3}s after a {countdown}s countdown'
    assert finished_after >= countdown - 0.1, f'ran after {finished_after:.2f}s, before its countdown'
    assert result.get(timeout=1) == 4

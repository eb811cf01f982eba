"""Periodic tasks fire once per minute tick, however many consumers (apps, processes) run on the file.

In-process: two ``hueyapp.consumer.Scheduler`` objects, each on its own ``App`` pointing at
the same SQLite file (as two consumer processes would be), run from two threads over five
frozen minutes. Real: two ``huey_consumer`` processes with the periodic scheduler on; each
checks periodic tasks as soon as it starts, so one tick is observed without waiting a minute.
"""
from __future__ import annotations

import datetime
import re
import threading

from freezegun import freeze_time

from hueyapp.app import App
from hueyapp.config import Settings
from hueyapp.consumer import Scheduler
from tests.poison_tasks import (TICK_LOG_ENV, TICK_NAME, WORKER, WORKER_ENV, app, declare_tick, huey,
                                query, tick, wait_until)

T0 = datetime.datetime(2030, 6, 1, 12, 1, 0)   # tick_due: every minute of 2030 (not :00, refresh_feeds')
MINUTES = 5


def pending_ticks(any_huey) -> int:
    return sum(1 for task in any_huey.pending() if task.name == TICK_NAME)


def test_two_apps_on_one_file_enqueue_each_tick_once(db):
    second = App(Settings(db=str(db)))
    second_tick = declare_tick(second)
    assert second_tick.name == tick.name == TICK_NAME  # name= is exact, as in Celery
    stop = threading.Event()
    schedulers = [Scheduler(huey, stop, interval=1, periodic=True),
                  Scheduler(second.default, stop, interval=1, periodic=True)]
    assert schedulers[0].huey.storage.filename == schedulers[1].huey.storage.filename == str(db)

    barrier = threading.Barrier(3, timeout=30)
    errors: list[BaseException] = []
    now = {'value': T0}

    def run(scheduler: Scheduler) -> None:
        try:
            for _ in range(MINUTES):
                barrier.wait()                        # the minute has been set
                scheduler.enqueue_periodic_tasks(now['value'])
                barrier.wait()                        # both are done with this minute
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            errors.append(exc)
            barrier.abort()

    with freeze_time(T0) as frozen:
        threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in schedulers]
        for thread in threads:
            thread.start()
        for minute in range(MINUTES):
            now['value'] = T0 + datetime.timedelta(minutes=minute)
            frozen.move_to(now['value'])
            barrier.wait()
            barrier.wait()
        for thread in threads:
            thread.join(30)
    assert errors == []

    assert pending_ticks(huey) == MINUTES
    assert pending_ticks(second.default) == MINUTES       # the same rows, seen from the other app
    assert query(db, 'select count(*) from hueyapp_inbox') == [(MINUTES,)]   # no lease yet
    claims = [key for key, in query(db, "select key from hueyapp_kv where key like 'hueyapp.periodic:%'")]
    minutes = sorted(re.search(r'\d{4}-\d\d-\d\dT\d\d:\d\d$', key).group() for key in claims)
    assert minutes == [f'2030-06-01T12:0{m + 1}' for m in range(MINUTES)]     # one claim per minute


def test_periodic_tasks_with_the_same_function_name_in_two_modules_both_fire(db):
    # Task names are unique per module (`reports.cleanup`, `billing.cleanup`); each periodic
    # task must fire on its own tick, whatever its function is called.
    other = App(Settings(db=str(db)))

    def make(module: str):
        def cleanup() -> str:
            return module
        cleanup.__module__ = module
        return other.periodic_task(tick_due_always)(cleanup)

    reports, billing = make('reports'), make('billing')
    assert {reports.name, billing.name} == {'reports.cleanup', 'billing.cleanup'}
    scheduler = Scheduler(other.default, threading.Event(), interval=1, periodic=True)
    with freeze_time(T0):
        scheduler.enqueue_periodic_tasks(T0)
    fired = sorted(other.default._registry.task_to_string(type(task)) for task in other.default.pending())
    assert fired == ['billing.cleanup', 'reports.cleanup']


def tick_due_always(dt: datetime.datetime) -> bool:
    return True


def test_the_same_minute_asked_again_does_not_fire_again(db):
    stop = threading.Event()
    scheduler = Scheduler(huey, stop, interval=1, periodic=True)
    with freeze_time(T0):
        for second in (0, 20, 59):
            scheduler.enqueue_periodic_tasks(T0 + datetime.timedelta(seconds=second))
    assert pending_ticks(huey) == 1


def test_two_real_consumers_fire_the_first_tick_once(db, consumers, tmp_path):
    log = tmp_path / 'ticks.log'
    env = {**WORKER_ENV, TICK_LOG_ENV: str(log)}
    # -v: each consumer logs "Checking periodic tasks" when its scheduler asks (at start).
    first = consumers(WORKER, '-v', env=env, wait=False)
    second = consumers(WORKER, '-v', env=env, wait=False)
    first.wait_started()
    second.wait_started()
    for consumer in (first, second):
        wait_until(lambda c=consumer: 'Checking periodic tasks' in c.log(), 10,
                   f'consumer {consumer.pid} to check periodic tasks')

    # Both asked; the minutes they claimed (normally one, two if they straddled a minute).
    claims = wait_until(lambda: query(db, "select key from hueyapp_kv where key like 'hueyapp.periodic:%'"),
                        10, 'a claimed tick')
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= len(claims), 10,
               'the tick to run')
    wait_until(lambda: query(db, 'select count(*) from task') == [(0,)], 10, 'the queue to drain')
    runs = log.read_text().splitlines()
    enqueued = sum(len(re.findall(rf'Enqueueing periodic task \S*{TICK_NAME}', c.log())) for c in (first, second))
    assert 1 <= len(claims) <= 2
    assert len(runs) == len(claims) == enqueued, (runs, claims, first.log(), second.log())
    assert app.settings.db == str(db)

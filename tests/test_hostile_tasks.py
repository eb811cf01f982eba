"""Task code that raises what is not an ``Exception``, or stops its own worker, through real
``huey_consumer`` processes (thread and process workers).

What a task's code raises is that task's FAILURE, whatever it is, and the worker goes on.
Only a stop of the consumer (or of its worker process) puts a task back on the queue, and
each run put back counts: a task whose runs keep ending that way, or whose worker thread
keeps dying under it, is dead-lettered after ``HUEYAPP_MAX_DELIVERIES`` runs. (A task that
SIGKILLs its worker process is tests/test_poison.py's.)
"""
from __future__ import annotations

import re
import signal

import pytest

from hueyapp.errors import TaskError

from tests.hostile_tasks import (add, killed_by_its_hook, raise_base_exception, runs,
                                 signal_own_process)
from tests.poison_tasks import WORKER_ENV, dead_letter_rows, query
from tests.waiting import wait_until

WORKER = 'tests.hostile_tasks.huey'
WORKER_KINDS = pytest.mark.parametrize('workers', [('-w', '2'), ('-k', 'process', '-w', '2')],
                                       ids=['thread', 'process'])
# The type each kind of raise_base_exception raises, as the failure names it.
RAISED_TYPES = {
    'keyboard-interrupt': 'builtins.KeyboardInterrupt',
    'system-exit': 'builtins.SystemExit',
    'generator-exit': 'builtins.GeneratorExit',
    'hostile': 'tests.hostile_tasks.Hostile',
}


def runs_dir(tmp_path, name: str):
    path = tmp_path / name
    path.mkdir()
    return path


@WORKER_KINDS
def test_a_base_exception_raised_by_task_code_is_its_failure_and_the_worker_goes_on(
        db, consumers, tmp_path, workers):
    consumer = consumers(WORKER, *workers, '-n', env=WORKER_ENV)
    dirs = {kind: runs_dir(tmp_path, kind) for kind in RAISED_TYPES}
    results = {kind: raise_base_exception.delay(str(dirs[kind]), kind) for kind in RAISED_TYPES}

    for kind, result in results.items():
        with pytest.raises(TaskError) as caught:   # never re-raised as itself in the reader
            result.get(timeout=10)
        type_name = RAISED_TYPES[kind]
        assert caught.value.exc_type == type_name
        assert result.state == 'FAILURE'
        assert type_name.rpartition('.')[2] in result.traceback
        assert 'raise RAISED[kind]()' in result.traceback, result.traceback  # the task's own frame
    assert results['system-exit'].result.message == '3'
    assert results['hostile'].result.message == 'not an Exception'

    # The same workers serve the next task, and each hostile task ran exactly once.
    assert add.delay(1, 1).get(timeout=10) == 2
    assert {kind: runs(path) for kind, path in dirs.items()} == {kind: 1 for kind in RAISED_TYPES}
    assert query(db, 'select count(*) from task') == [(0,)]
    assert dead_letter_rows(db) == []
    assert consumer.alive()
    assert 'died' not in consumer.log()


def test_a_task_that_interrupts_its_process_worker_every_run_is_dead_lettered(db, consumers, tmp_path):
    # SIGTERM in a process worker is the consumer's way to interrupt a running task: the task
    # goes back on the queue. Sent by the task itself every time, each run still counts.
    env = {**WORKER_ENV, 'HUEYAPP_MAX_DELIVERIES': '2'}
    consumer = consumers(WORKER, '-k', 'process', '-w', '1', '-n', env=env)
    ran = runs_dir(tmp_path, 'interrupts')
    interrupter = signal_own_process.delay(str(ran), signal.SIGTERM)

    letters = wait_until(lambda: dead_letter_rows(db), 15, 'the interrupting task in the dead letters',
                         consumer)
    assert len(letters) == 1
    assert re.search(r'handed out 3 times \(limit 2\)', letters[0][2]), letters[0][2]
    assert runs(ran) == 2
    assert not interrupter.ready()
    assert add.delay(1, 1).get(timeout=10) == 2
    assert consumer.alive()


def test_a_task_whose_runs_keep_stopping_its_consumer_is_dead_lettered_across_restarts(
        db, consumers, tmp_path):
    # Each run sends SIGTERM to its own (thread-worker) consumer, which puts it back on the
    # queue and exits, as a supervisor's restarts would go on for ever. The tasks reserved
    # behind it never started: they are given their hand-out back each time, and run at last.
    env = {**WORKER_ENV, 'HUEYAPP_MAX_DELIVERIES': '2'}
    ran = runs_dir(tmp_path, 'stops')
    stopper = signal_own_process.delay(str(ran), signal.SIGTERM)
    behind = [add.delay(i, i) for i in range(3)]

    for _ in range(4):  # two counted runs, then the third start buries it
        consumer = consumers(WORKER, '-w', '1', '-n', env=env)
        stopped = wait_until(lambda: dead_letter_rows(db) or not consumer.alive(), 15,
                             'the consumer to stop, or the task to be dead-lettered', consumer)
        if stopped is not True:
            break
        assert 'unfinished task(s) back on the queue' in consumer.log()
    letters = dead_letter_rows(db)
    assert len(letters) == 1, 'the stopping task was never dead-lettered'
    assert re.search(r'handed out 3 times \(limit 2\)', letters[0][2]), letters[0][2]
    assert runs(ran) == 2
    assert [result.get(timeout=10) for result in behind] == [0, 2, 4]
    assert not stopper.ready()


def test_a_delivery_whose_worker_thread_died_is_not_held_for_ever(db, consumers, tmp_path):
    # A pre-execute hook raises SystemExit, outside the task's code: Huey lets it end the
    # worker thread ("Worker-1 died!") while the thread holds the task's delivery. The lease
    # keeper must not renew that lease for ever: the task runs again, counted, until it is
    # dead-lettered, and the restarted workers (health check every second) serve on.
    env = {**WORKER_ENV, 'HUEYAPP_MAX_DELIVERIES': '2', 'HUEYAPP_LEASE_SECONDS': '1'}
    consumer = consumers(WORKER, '-w', '2', '-c', '1', '-n', env=env)
    ran = runs_dir(tmp_path, 'hook')
    doomed = killed_by_its_hook.delay(str(ran))

    letters = wait_until(lambda: dead_letter_rows(db), 15, 'the task of the dead thread in the dead letters',
                         consumer)
    assert len(letters) == 1
    assert re.search(r'handed out 3 times \(limit 2\)', letters[0][2]), letters[0][2]
    assert runs(ran) == 2
    assert not doomed.ready()
    assert add.delay(1, 1).get(timeout=10) == 2
    assert 'died' in consumer.log()   # the hook did end its threads

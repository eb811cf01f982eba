"""Expiring, owner-checked locks and single_run, in one process and across processes."""
import datetime
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest
from freezegun import freeze_time

from hueyapp.lock import Lock, lock, single_run
from hueyapp.tasks import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = datetime.datetime(2026, 1, 1, 10, 0, 0)

CALLS = []


@single_run(key=lambda x, inner=None: x)
def reentrant(x, inner=None):
    CALLS.append(x)
    if inner is not None:
        return 'outer', reentrant(inner)
    return 'ran'


@app.task()
@single_run(key=lambda key, inner=None: key)
def single_task(key, inner=None):
    if inner is not None:
        return 'outer', single_task.delay(inner).get()
    return 'ran'


def test_lock_yields_true_when_free(db):
    with lock('n', expire=10) as acquired:
        assert acquired is True
        assert Lock('n').locked()
    assert not Lock('n').locked()


def test_nested_lock_is_refused_and_does_not_release_the_outer(db):
    with lock('n', expire=10) as outer:
        with lock('n') as inner:
            assert inner is False
        assert outer is True
        assert Lock('n').locked() is True
        assert Lock('n').acquire() is False
    assert Lock('n').locked() is False
    assert Lock('n').acquire() is True


def test_lock_released_when_the_body_raises(db):
    with pytest.raises(RuntimeError):
        with lock('n', expire=10):
            raise RuntimeError('x')
    assert not Lock('n').locked()


def test_lock_names_are_independent(db):
    with lock('a') as a, lock('b') as b:
        assert (a, b) == (True, True)


def test_expired_lock_does_not_release_the_next_holder(db):
    with freeze_time(T0) as frozen:
        first = Lock('e', expire=5)
        assert first.acquire() is True
        frozen.tick(6)
        assert not first.locked()
        second = Lock('e', expire=5)
        assert second.acquire() is True
        assert first.release() is False
        assert Lock('e').locked() is True
        assert second.release() is True
        assert Lock('e').locked() is False


def test_lock_block_that_outlives_its_expiry_leaves_the_next_holder_alone(db):
    with freeze_time(T0) as frozen:
        second = Lock('slow', expire=5)
        with lock('slow', expire=5) as acquired:
            assert acquired
            frozen.tick(6)
            assert second.acquire() is True
        assert Lock('slow').locked() is True
        assert second.release() is True


def test_release_of_a_lock_not_owned_returns_false(db):
    holder = Lock('o', expire=10)
    assert holder.acquire()
    stranger = Lock('o', expire=10)
    assert stranger.acquire() is False
    assert stranger.release() is False
    assert Lock('o').release() is False
    assert holder.locked() is True
    assert holder.release() is True


def test_release_twice_returns_false_the_second_time(db):
    held = Lock('t', expire=10)
    held.acquire()
    assert held.release() is True
    assert held.release() is False


def test_lock_expire_must_be_positive(db):
    with pytest.raises(ValueError):
        Lock('bad', expire=0)


def test_single_run_skips_a_reentrant_call_with_the_same_key(db):
    CALLS.clear()
    assert reentrant('a', inner='a') == ('outer', None)
    assert CALLS == ['a']


def test_single_run_runs_a_call_with_another_key(db):
    CALLS.clear()
    assert reentrant('a', inner='b') == ('outer', 'ran')
    assert CALLS == ['a', 'b']


def test_single_run_frees_the_key_afterwards(db):
    assert reentrant('a') == 'ran'
    assert reentrant('a') == 'ran'


def test_single_run_through_a_task_in_immediate_mode(immediate):
    assert single_task.delay('k', inner='k').get() == ('outer', None)
    assert single_task.delay('k', inner='other').get() == ('outer', 'ran')
    assert single_task.delay('k').get() == 'ran'


CHILD = '''
import sys, time
import hueyapp.tasks
from hueyapp.lock import Lock
held = Lock('killed', expire=2, app=hueyapp.tasks.app)
if not held.acquire():
    sys.exit(3)
print('held', flush=True)
time.sleep(60)
'''


def read_line(proc, timeout):
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            return None
        return proc.stdout.readline()
    finally:
        selector.close()


def test_lock_of_a_killed_process_is_free_after_its_expiry(db):
    env = {**os.environ, 'HUEYAPP_DB': str(db)}
    env.pop('HUEYAPP_IMMEDIATE', None)
    child = subprocess.Popen([sys.executable, '-c', CHILD], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(child, timeout=15)
        held_at = time.monotonic()
        assert line == 'held\n', (line, child.poll())
        assert Lock('killed', expire=2).acquire() is False
        child.send_signal(signal.SIGKILL)
        child.wait(10)

        acquired = False
        deadline = held_at + 10
        while time.monotonic() < deadline:
            if Lock('killed', expire=2).acquire():
                acquired = True
                break
            time.sleep(0.05)
        acquired_after = time.monotonic() - held_at
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()
        child.stderr.close()
    assert acquired
    assert acquired_after >= 1.5

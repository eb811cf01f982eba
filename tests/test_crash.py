"""At-least-once delivery under real crashes: real ``huey_consumer`` processes, real signals.

Every task here records each start and each finish of its body in a separate SQLite file
(``tests.crash_tasks``), so a duplicated *execution* shows even where the result store
would hide it. The consumers get ``HUEYAPP_LEASE_SECONDS=1``: a killed worker's task is
handed out again about a second after its keeper stopped renewing the lease.

How consumers are killed:

* thread workers: ``SIGKILL`` to the consumer process, which is the whole worker pool;
* process workers (``-k process``): the consumer is first frozen with ``SIGSTOP`` (it can
  neither fork a replacement worker nor react), its children (scheduler and workers, found
  in ``/proc`` by parent pid) get ``SIGKILL``, then the parent does. Killing only the parent
  would leave the forked workers running as orphans (they finish their task and go on
  leasing), which is not a crash. The process group cannot be used: ``ConsumerProcess``
  starts the consumer in pytest's own process group.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from hueyapp.canvas import chord
from hueyapp.tasks import huey
from tests.waiting import wait_until as wait_for
from tests.crash_tasks import (LOG_ENV, crash_single, crash_slow, crash_total, init_events,
                               read_events)

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSUMER = 'tests.crash_tasks.huey'


# -- helpers -------------------------------------------------------------------------------
@pytest.fixture
def events(tmp_path) -> Path:
    path = tmp_path / 'events.db'
    init_events(path)
    return path


def crash_env(events: Path, lease: float = 1) -> dict:
    return {'PYTHONPATH': CHECKOUT, LOG_ENV: str(events), 'HUEYAPP_LEASE_SECONDS': str(lease)}




def query(db: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(str(db), timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def counts(events: Path, event: str, pids: set[int] | None = None) -> Counter:
    return Counter(token for token, kind, pid, _ in read_events(events)
                   if kind == event and (pids is None or pid in pids))


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from ``/proc/*/stat``."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        fields = stat.rsplit(')', 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def is_dead(pid: int) -> bool:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return True
    return stat.rsplit(')', 1)[1].split()[0] in ('Z', 'X')


def kill_consumer_and_workers(consumer) -> list[int]:
    """SIGKILL a process-worker consumer and every process it forked; returns their pids."""
    os.kill(consumer.pid, signal.SIGSTOP)
    children = children_of(consumer.pid)
    for child in children:
        os.kill(child, signal.SIGKILL)
    consumer.kill()
    wait_for(lambda: all(is_dead(child) for child in children), 10, 'the killed workers to be gone')
    return children


def assert_each_ran_once(db: Path, events: Path, results, tokens, killed_pids: set[int]) -> None:
    """Every task finished exactly once, has exactly one result row, and nothing is left over.

    A task whose body started in a killed process without finishing there was redelivered and
    started exactly once more; any other task started exactly once.
    """
    finishes = counts(events, 'finish')
    starts = counts(events, 'start')
    killed_starts = counts(events, 'start', killed_pids)
    killed_finishes = counts(events, 'finish', killed_pids)
    interrupted = {t for t in tokens if killed_starts[t] > killed_finishes[t]}
    assert interrupted, 'the kill interrupted no running task: the test proved nothing'
    assert {t: finishes[t] for t in tokens} == {t: 1 for t in tokens}, 'finished more or less than once'
    assert {t: starts[t] for t in tokens} == {t: 1 + (t in interrupted) for t in tokens}, \
        'a task started more often than its crashes explain'

    ids = [r.id for r in results]
    rows = query(db, f'select key, count(*) from hueyapp_kv where key in ({",".join("?" * len(ids))}) '
                     'group by key', ids)
    assert dict(rows) == {i: 1 for i in ids}, 'a result is missing or stored twice'
    assert query(db, 'select id, queue, lease_owner, deliveries from task') == [], 'rows left on the queue'
    assert query(db, 'select count(*) from hueyapp_dead_letter') == [(0,)], 'a task was dead-lettered'


# -- 1. SIGKILL mid-task -------------------------------------------------------------------
def test_sigkill_of_a_thread_consumer_mid_task_loses_and_duplicates_nothing(db, consumers, events):
    env = crash_env(events)
    first = consumers(CONSUMER, '-w', '4', '-n', env=env)
    tokens = [f'thread-{i}' for i in range(8)]
    results = [crash_slow.delay(token, 2.0) for token in tokens]

    wait_for(lambda: sum(counts(events, 'start').values()) >= 2, 15, 'two tasks to start', first)
    killed_pid = first.pid
    first.kill()
    killed_running = set(counts(events, 'start'))

    consumers(CONSUMER, '-w', '4', '-n', env=env)
    assert [r.get(timeout=30) for r in results] == tokens
    assert len(killed_running) >= 2
    assert_each_ran_once(db, events, results, tokens, {killed_pid})


def test_sigkill_of_a_process_worker_consumer_mid_task_loses_and_duplicates_nothing(db, consumers, events):
    env = crash_env(events)
    first = consumers(CONSUMER, '-k', 'process', '-w', '2', '-n', env=env)
    tokens = [f'process-{i}' for i in range(8)]
    results = [crash_slow.delay(token, 2.0) for token in tokens]

    wait_for(lambda: sum(counts(events, 'start').values()) >= 2, 15, 'two tasks to start', first)
    killed = set(kill_consumer_and_workers(first)) | {first.pid}

    second = consumers(CONSUMER, '-k', 'process', '-w', '2', '-n', env=env)
    deadline = time.monotonic() + 40
    values = []
    for result in results:
        try:
            values.append(result.get(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            pytest.fail(f'{result.id} never finished after the restart\n{second.log()[-4000:]}')
    assert values == tokens
    assert_each_ran_once(db, events, results, tokens, killed)


# -- 2. a chord member's worker is killed --------------------------------------------------
def test_chord_whose_member_is_killed_completes_once_with_the_right_values(db, consumers, events):
    env = crash_env(events)
    first = consumers(CONSUMER, '-w', '2', '-n', env=env)
    members = ['chord-m0', 'chord-m1', 'chord-m2', 'chord-slow']
    header = [crash_slow.s(token, 0.2) for token in members[:3]] + [crash_slow.s('chord-slow', 3.0)]
    result = chord(header, crash_total.s('chord-body')).apply_async()

    # Kill when the three quick members are counted and the slow one runs: the chord is at
    # 3 of 4, and the last count must come from the redelivery, once.
    # (Their results, not their `finish` rows: a result commits with the acknowledgement, so a
    # member whose result is stored cannot be run again by the kill.)
    quick = result.parent.results[:3]
    wait_for(lambda: all(r.ready() for r in quick) and counts(events, 'start')['chord-slow'],
             15, 'the quick members to finish', first)
    killed_pid = first.pid
    first.kill()
    assert counts(events, 'finish')['chord-slow'] == 0, 'the slow member finished before the kill'
    assert query(db, 'select count(*) from task') == [(1,)], 'only the slow member should be queued'

    consumers(CONSUMER, '-w', '2', '-n', env=env)
    assert result.get(timeout=30) == members
    assert counts(events, 'start')['chord-body'] == 1
    assert counts(events, 'finish')['chord-body'] == 1
    assert {t: counts(events, 'finish')[t] for t in members} == {t: 1 for t in members}
    assert counts(events, 'start', {killed_pid})['chord-slow'] == 1
    assert counts(events, 'start')['chord-slow'] == 2
    assert query(db, "select key from hueyapp_kv where key like 'chord:%'") == []
    assert query(db, 'select key, value from hueyapp_counter') == []
    assert query(db, 'select count(*) from task') == [(0,)]


# -- 3. a single_run task's worker is killed -----------------------------------------------
def test_killed_single_run_task_takes_back_its_own_lock_and_others_are_skipped(db, consumers, events):
    began = time.monotonic()
    env = crash_env(events)
    first = consumers(CONSUMER, '-w', '2', '-n', env=env)
    held = crash_single.delay('lock-A', 'feed-x', 4.0)
    wait_for(lambda: counts(events, 'start')['lock-A'], 15, 'lock-A to start', first)
    first.kill()
    locks = query(db, "select key, value from hueyapp_kv where key like 'hueyapp.lock:%'")
    assert len(locks) == 1, f'the dead run should have left its lock: {locks}'

    # Enqueued while only the dead run holds the lock (expire=600): skipped.
    stale = crash_single.delay('lock-B', 'feed-x', 0.1)
    second = consumers(CONSUMER, '-w', '2', '-n', env=env)
    assert stale.get(timeout=20) is None

    # The redelivery of lock-A takes back its own lock at once, not after 600 s.
    wait_for(lambda: counts(events, 'start')['lock-A'] >= 2, 15, 'lock-A to be redelivered', second)
    # Enqueued while the redelivered run holds the lock: skipped too.
    during = crash_single.delay('lock-C', 'feed-x', 0.1)
    assert during.get(timeout=20) is None
    assert counts(events, 'finish')['lock-A'] == 0, 'lock-C was not tried while lock-A held the lock'

    assert held.get(timeout=20) == 'lock-A'
    assert counts(events, 'start')['lock-A'] == 2
    assert counts(events, 'finish')['lock-A'] == 1
    assert not counts(events, 'start')['lock-B'] and not counts(events, 'start')['lock-C']
    assert query(db, "select key from hueyapp_kv where key like 'hueyapp.lock:%'") == [], \
        'the redelivered run did not release the lock'
    assert time.monotonic() - began < 30


# -- 4. graceful shutdown puts the running task back at once --------------------------------
def test_sigterm_puts_the_running_task_back_on_the_queue_at_once(db, consumers, events):
    env = crash_env(events, lease=30)
    first = consumers(CONSUMER, '-w', '1', '-n', env=env)
    result = crash_slow.delay('long', 10.0)
    wait_for(lambda: counts(events, 'start')['long'], 15, 'the long task to start', first)
    assert query(db, 'select lease_owner is not null, deliveries from task') == [(1, 1)]

    signalled = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    wait_for(lambda: query(db, 'select 1 from task where lease_owner is null'), 5,
             'the task to be released', first)
    released_after = time.monotonic() - signalled
    assert first.process.wait(10) is not None
    assert released_after < 5, f'released after {released_after:.1f}s (lease is 30 s)'
    # Back with its hand-out counted: a task put back by every stop is dead-lettered in the end.
    assert query(db, 'select lease_owner, lease_expires, deliveries from task') == [(None, None, 1)]
    assert huey.pending_count() == 1
    assert 'Put 1 unfinished task(s) back on the queue' in first.log()

    consumers(CONSUMER, '-w', '1', '-n', env=env)
    assert result.get(timeout=25) == 'long'
    assert counts(events, 'start')['long'] == 2
    assert counts(events, 'finish')['long'] == 1
    assert query(db, 'select count(*) from task') == [(0,)]


@pytest.mark.parametrize('workers', [('-w', '1'), ('-k', 'process', '-w', '1')], ids=['thread', 'process'])
def test_shutdown_puts_reserved_tasks_back_at_once(db, consumers, events, workers):
    # With HUEYAPP_PREFETCH_MULTIPLIER=4 one worker leases four tasks in one statement and
    # starts one; at shutdown the three it never started go back with their running mate,
    # given their hand-out back (the running one's counts).
    env = crash_env(events, lease=30)
    for i in range(4):
        crash_slow.delay(f'r{i}', 10.0)
    consumer = consumers(CONSUMER, *workers, '-n', env=env)
    wait_for(lambda: sum(counts(events, 'start').values()), 15, 'a task to start', consumer)
    assert query(db, 'select count(*) from task where lease_owner is not null') == [(4,)]

    consumer.process.send_signal(signal.SIGTERM)
    assert consumer.process.wait(10) is not None
    assert query(db, 'select lease_owner, deliveries from task order by id') == [(None, 1)] + [(None, 0)] * 3
    assert sum(counts(events, 'start').values()) == 1


def test_single_run_task_interrupted_by_sigterm_runs_again_after_restart(db, consumers, events):
    # The shutdown release puts the task back (its run counted, 1 of 5), and a thread
    # worker's interrupted run never leaves its `with lock` block: its lock stays behind.
    env = crash_env(events, lease=30)
    first = consumers(CONSUMER, '-w', '1', '-n', env=env)
    result = crash_single.delay('term-lock', 'feed-term', 3.0)
    wait_for(lambda: counts(events, 'start')['term-lock'], 15, 'the task to start', first)
    first.process.send_signal(signal.SIGTERM)
    wait_for(lambda: query(db, 'select 1 from task where lease_owner is null'), 5,
             'the task to be released', first)
    first.process.wait(10)
    left = query(db, "select value from hueyapp_kv where key like 'hueyapp.lock:%'")

    second = consumers(CONSUMER, '-w', '1', '-n', env=env)
    assert result.get(timeout=20) == 'term-lock', (
        f'the redelivered run was skipped as "already running"; lock left by the interrupted '
        f'run: {left}\n{second.log()[-3000:]}')
    assert counts(events, 'finish')['term-lock'] == 1


# -- 5. a worker that stalls past its lease -----------------------------------------------
def test_stalled_worker_whose_lease_was_taken_over_does_not_commit_its_outcome(db, consumers, events):
    """SIGSTOP a consumer mid-member until another consumer has taken its leases over, then
    SIGCONT it. Its body runs to the end (a lease cannot stop a paused process; at-least-once
    allows that), but its outcome must not commit: its acknowledgement fails (the row is no
    longer its own), so its chord count must roll back with it."""
    env = crash_env(events)
    first = consumers(CONSUMER, '-w', '3', '-n', env=env)
    members = ['stall-m0', 'stall-m1', 'stall-m2']
    header = [crash_slow.s('stall-m0', 0.1), crash_slow.s('stall-m1', 2.0),
              crash_slow.s('stall-m2', 6.0)]
    result = chord(header, crash_total.s('stall-body')).apply_async()
    m0 = result.parent.results[0]
    wait_for(lambda: m0.ready() and counts(events, 'start')['stall-m2']
             and counts(events, 'start')['stall-m1'], 15, 'the members to start', first)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = consumers(CONSUMER, '-w', '3', '-n', env=env)
        # The second consumer took m1 over (lease lapsed) and finished it; m2 still runs there.
        wait_for(lambda: counts(events, 'finish')['stall-m1'], 15, 'm1 to finish elsewhere', second)
        assert counts(events, 'finish')['stall-m2'] == 0
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert result.get(timeout=30) == members
    wait_for(lambda: counts(events, 'finish')['stall-m2'] >= 2, 15, 'both runs of m2 to end', first)
    time.sleep(0.5)  # let the stale m2 run try to commit
    assert counts(events, 'start')['stall-body'] == 1
    assert query(db, "select key from hueyapp_kv where key like 'chord:%'") == []
    assert query(db, 'select key, value from hueyapp_counter') == []

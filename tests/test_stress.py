"""Stress: 4 producer processes enqueue 4,000 tasks as fast as they can while 2 consumers drain.

Every run of ``stress_add`` records a row in a separate SQLite file, so a duplicated
execution shows even if the result store kept one value. Run with ``pytest -s`` to see the
throughput line (it is also in the failure report, and in the test's captured stdout).
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from hueyapp.tasks import huey
from tests.crash_tasks import LOG_ENV, init_events, read_events

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSUMER = 'tests.crash_tasks.huey'
PRODUCERS = 4
PER_PRODUCER = 1_000
GROUP_SIZE = 20
GROUP_EVERY = 200  # one group of GROUP_SIZE tasks at the start of every 200 tasks
BUSY = re.compile(r'database is locked|StorageBusyError|database table is locked', re.I)

PRODUCER = r'''
import json, sys, time
from hueyapp.canvas import group
from tests.crash_tasks import stress_add

p = int(sys.argv[1]); n = int(sys.argv[2]); size = int(sys.argv[3]); every = int(sys.argv[4])
sent = []  # (task id, token, expected value)
began = time.monotonic()
i = 0
while i < n:
    if i % every == 0 and i + size <= n:
        calls = [(f'p{p}-{j}', p, j) for j in range(i, i + size)]
        results = group(stress_add.s(*call) for call in calls).apply_async()
        sent += [(r.id, call[0], call[1] + call[2]) for r, call in zip(results, calls)]
        i += size
    else:
        token = f'p{p}-{i}'
        sent.append((stress_add.delay(token, p, i).id, token, p + i))
        i += 1
print(json.dumps({'elapsed': time.monotonic() - began, 'sent': sent}))
'''


def query(db, sql, params=()):
    conn = sqlite3.connect(str(db), timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_four_producers_two_consumers_nothing_lost_nothing_twice_never_busy(db, consumers, tmp_path):
    events = tmp_path / 'events.db'
    init_events(events)
    env = {'PYTHONPATH': CHECKOUT, LOG_ENV: str(events)}
    workers = [consumers(CONSUMER, '-w', '2', '-n', env=env) for _ in range(2)]
    total = PRODUCERS * PER_PRODUCER

    producer_env = {**os.environ, 'HUEYAPP_DB': str(db), 'PYTHONPATH': CHECKOUT}
    producer_env.pop('HUEYAPP_IMMEDIATE', None)
    began = time.monotonic()
    producers = [subprocess.Popen([sys.executable, '-c', PRODUCER, str(p), str(PER_PRODUCER),
                                   str(GROUP_SIZE), str(GROUP_EVERY)],
                                  env=producer_env, cwd=CHECKOUT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for p in range(PRODUCERS)]
    outputs = [p.communicate(timeout=120) for p in producers]
    enqueued_after = time.monotonic() - began

    for p, (out, err) in zip(producers, outputs):
        assert p.returncode == 0, f'producer failed ({p.returncode}):\n{err[-4000:]}'
        assert not BUSY.search(err), f'producer saw a locked database:\n{err[-4000:]}'
    reports = [json.loads(out) for out, _ in outputs]
    sent = [item for report in reports for item in report['sent']]
    assert len(sent) == total and len({task_id for task_id, _, _ in sent}) == total

    deadline = time.monotonic() + 120
    while True:
        done = query(db, "select count(*) from hueyapp_kv where key not like '%:done'")[0][0]
        if done >= total or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    drained_after = time.monotonic() - began
    loops = ', '.join(f"{r['elapsed']:.1f}" for r in reports)
    summary = (f'STRESS: {total} tasks from {PRODUCERS} producers, 2 consumers x 2 threads: '
               f'enqueued in {enqueued_after:.1f}s ({total / enqueued_after:.0f} tasks/s; producers\' '
               f'own loops {loops}s), all results after '
               f'{drained_after:.1f}s ({done / drained_after:.0f} tasks/s end to end), {done} results')
    print('\n' + summary)

    # Zero lost: every task id has its right value.
    stored = dict(query(db, "select key, value from hueyapp_kv where key not like '%:done'"))
    missing = [task_id for task_id, _, _ in sent if task_id not in stored]
    left = query(db, 'select count(*), sum(lease_owner is not null) from task')[0]
    assert not missing, f'{len(missing)} results missing; task rows left (all, leased): {left}\n{summary}'
    wrong = [(task_id, expected) for task_id, _, expected in sent
             if huey.read_result(task_id, stored[task_id]) != expected]
    assert not wrong, f'wrong values: {wrong[:5]}'
    assert len(stored) == total, 'results stored for ids nobody sent'

    # Zero duplicated executions: one run row per token, and nothing else ran.
    runs = Counter(token for token, kind, _, _ in read_events(events) if kind == 'run')
    twice = {token: n for token, n in runs.items() if n != 1}
    assert not twice, f'{len(twice)} tasks ran more than once: {list(twice.items())[:10]}\n{summary}'
    assert set(runs) == {token for _, token, _ in sent}

    assert query(db, 'select count(*) from task') == [(0,)]
    assert query(db, 'select count(*) from hueyapp_dead_letter') == [(0,)]
    for consumer in workers:
        log = consumer.log()
        assert not BUSY.search(log), f'consumer {consumer.pid} saw a locked database'
        assert 'Traceback' not in log, f'consumer {consumer.pid} logged an error:\n{log[-4000:]}'

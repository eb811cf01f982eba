"""The operator's side of dead letters: the real ``hueyapp`` console script, and ``hueyapp.deadletters``.

Dead letters come from real consumers (a message whose run killed its worker too often) or
are buried directly with ``storage.bury_data``; the CLI runs as a subprocess on ``--db``.
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from freezegun import freeze_time

from hueyapp import deadletters
from tests.poison_tasks import (CHECKOUT, WORKER, WORKER_ENV, add, app, connect, dead_letter_rows,
                                die_once, huey, query, touch, wait_until)

CLI = str(Path(sys.executable).with_name('hueyapp'))
SECRET = 'cli-secret'


def cli(db, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, '--db', str(db), *args], capture_output=True, text=True, timeout=60,
                          cwd=CHECKOUT, env={**os.environ, **(env or {})})


def bury(signature, reason: str = 'test: buried by hand') -> str:
    """Bury a readable message of ``signature``; returns its task id."""
    task = signature.to_task()
    huey.storage.bury_data(huey.serialize_task(task), reason)
    return task.id


def letter_ids(db) -> list[int]:
    return [row[0] for row in dead_letter_rows(db)]


@pytest.fixture
def signed(db):
    before = app.settings.secret_key
    app.configure(secret_key=SECRET)
    yield SECRET
    app.configure(secret_key=before)


# -- the console script -------------------------------------------------------------------------
def test_queues_list_and_show(db):
    add.delay(1, 1)
    add.delay(2, 2)
    scheduled = add.s(3, 3).to_task()
    scheduled.eta = datetime.datetime(2099, 1, 1)
    huey.add_schedule(scheduled)
    readable_task_id = bury(add.s(2, 3), 'test: readable one')
    huey.storage.bury_data(b'\x00garbage', 'test: corrupt one')
    readable, corrupt = letter_ids(db)

    result = cli(db, 'queues')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['default: 2 pending, 1 scheduled',
                                          'hipri: 0 pending, 0 scheduled',
                                          'dead letters: 2']

    result = cli(db, 'dead-letters', 'list')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert re.match(rf'{readable}\tdefault\t\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ\t0 deliveries\t\d+ bytes\t'
                    r'test: readable one$', lines[0]), lines[0]
    assert lines[1].startswith(f'{corrupt}\tdefault\t') and lines[1].endswith('\t8 bytes\ttest: corrupt one')

    result = cli(db, 'dead-letters', 'show', str(readable))
    assert result.returncode == 0, result.stderr
    shown = dict(line.split(': ', 1) for line in result.stdout.splitlines())
    assert shown['id'] == str(readable)
    assert shown['task'] in ('hueyapp.tasks.add', 'add')     # the short name is what Huey's task has
    assert shown['task_id'] == readable_task_id
    assert shown['args'] == '(2, 3)'
    assert shown['kwargs'] == '{}'
    assert shown['reason'] == 'test: readable one'

    result = cli(db, 'dead-letters', 'show', str(corrupt))
    assert result.returncode == 0, result.stderr
    assert re.search(r'^task: \(cannot be read: .+\)$', result.stdout, re.M), result.stdout
    assert 'task_id' not in result.stdout

    result = cli(db, 'dead-letters', 'show', '999')
    assert result.returncode == 1
    assert 'no dead letter 999' in result.stderr


def test_replay_of_a_letter_that_exceeded_max_deliveries_runs_on_a_consumer(db, consumers, tmp_path):
    env = {**WORKER_ENV, 'HUEYAPP_LEASE_SECONDS': '1', 'HUEYAPP_MAX_DELIVERIES': '1'}
    marker = tmp_path / 'died-once'
    first = consumers(WORKER, env=env)
    poison = die_once.delay(str(marker))
    wait_until(lambda: not first.alive(), 10, 'the first consumer to be killed by its task')

    second = consumers(WORKER, env=env)      # the lease lapses; delivery 2 > 1: buried unrun
    letters = wait_until(lambda: dead_letter_rows(db), 10, 'the task in the dead letters')
    (letter_id, _, reason, deliveries, _), = letters
    assert 'handed out 2 times (limit 1)' in reason and deliveries == 2

    listed = cli(db, 'dead-letters', 'list')
    assert listed.returncode == 0, listed.stderr
    assert '2 deliveries' in listed.stdout and 'handed out 2 times' in listed.stdout

    # The operator fixed the cause (the marker now exists) and replays.
    replayed = cli(db, 'dead-letters', 'replay', str(letter_id))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == 'replayed 1'
    assert poison.get(timeout=10) == 'survived'
    assert second.alive()
    assert cli(db, 'dead-letters', 'list').stdout.strip() == 'no dead letters'


def test_replay_all_of_readable_letters_runs_them_on_a_consumer(db, consumers):
    ids = [bury(add.s(n, n)) for n in range(3)]
    result = cli(db, 'dead-letters', 'replay', '--all')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'replayed 3'
    assert dead_letter_rows(db) == []
    consumers(WORKER, env=WORKER_ENV)
    assert [app.AsyncResult(i).get(timeout=10) for i in ids] == [0, 2, 4]


def test_purge_and_usage_errors(db):
    for n in range(3):
        bury(add.s(n, n))
    first, second, third = letter_ids(db)

    for args in (['dead-letters', 'purge'], ['dead-letters', 'replay'],
                 ['dead-letters', 'purge', str(first), '--all'],
                 ['dead-letters', 'replay', str(first), '--all']):
        result = cli(db, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert 'give dead-letter ids, or --all' in result.stderr
    assert cli(db, 'dead-letters', 'show').returncode == 2          # missing ID
    assert cli(db, 'dead-letters', 'show', 'x').returncode == 2     # not an int
    assert cli(db, 'no-such-command').returncode == 2
    assert len(dead_letter_rows(db)) == 3                           # usage errors touch nothing

    result = cli(db, 'dead-letters', 'purge', str(second))
    assert (result.returncode, result.stdout.strip()) == (0, 'purged 1')
    assert letter_ids(db) == [first, third]

    result = cli(db, 'dead-letters', 'purge', '--all')
    assert (result.returncode, result.stdout.strip()) == (0, 'purged 2')
    assert dead_letter_rows(db) == []
    assert cli(db, 'dead-letters', 'list').stdout.strip() == 'no dead letters'
    assert cli(db, 'queues').stdout.splitlines()[-1] == 'dead letters: 0'


def test_cli_reads_the_database_from_hueyapp_db_without_db_option(db):
    bury(add.s(1, 2))
    result = subprocess.run([CLI, 'queues'], capture_output=True, text=True, timeout=60, cwd=CHECKOUT,
                            env={**os.environ, 'HUEYAPP_DB': str(db)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == 'dead letters: 1'


def test_cli_decodes_the_tasks_named_in_hueyapp_imports(db):
    # The CLI "reads the same settings as the workers"; a worker learns the user's tasks from
    # HUEYAPP_IMPORTS, so `show` should decode a dead letter of a user's task as well.
    task_id = bury(touch.s('/nonexistent/marker'))
    letter, = letter_ids(db)
    env = {**WORKER_ENV, 'HUEYAPP_IMPORTS': 'tests.poison_tasks'}
    result = cli(db, 'dead-letters', 'show', str(letter), env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r'^task: (tests\.poison_tasks\.)?touch$', result.stdout, re.M), result.stdout
    assert f'task_id: {task_id}' in result.stdout


def test_cli_replay_re_signs_a_stale_signed_letter_of_a_user_task(db, signed, consumers, tmp_path):
    # README: "A queue backlog older than HUEYAPP_RESULT_EXPIRES is dead-lettered when signing
    # is on. Replay re-signs it." The operator replays from the shell, with the workers' settings.
    marker = tmp_path / 'stale-ran'
    with freeze_time('2020-01-01 00:00:00'):
        stale = touch.s(str(marker)).to_task()
        data = huey.serialize_task(stale)        # signed in 2020
    conn = connect(db)
    conn.execute('insert into task (queue, data, priority) values (?, ?, 0)', ('default', data))
    conn.close()
    env = {**WORKER_ENV, 'HUEYAPP_SECRET_KEY': signed, 'HUEYAPP_IMPORTS': 'tests.poison_tasks'}
    consumers(WORKER, env=env)
    (letter_id, _, reason, _, _), = wait_until(lambda: dead_letter_rows(db), 10, 'the stale row buried')
    assert 'signed longer ago' in reason
    assert not marker.exists()

    result = cli(db, 'dead-letters', 'replay', str(letter_id), env=env)
    assert (result.returncode, result.stdout.strip()) == (0, 'replayed 1'), result.stderr
    wait_until(lambda: app.AsyncResult(stale.id).ready() or dead_letter_rows(db), 10,
               'the replayed task to run, or to be buried again')
    assert [row[2] for row in dead_letter_rows(db)] == [], 'buried again after the replay'
    assert app.AsyncResult(stale.id).get(timeout=10) == str(marker)
    assert marker.exists()


# -- the Python API ----------------------------------------------------------------------------
def test_python_api_list_inspect_replay_purge(db):
    readable_id = bury(add.s(4, 5), 'test: readable')
    huey.storage.bury_data(b'corrupt!', 'test: corrupt')
    other_id = bury(add.s(6, 7), 'test: another')
    readable, corrupt, other = letter_ids(db)

    listed = deadletters.list_dead_letters()
    assert [letter.id for letter in listed] == [readable, corrupt, other]
    assert [letter.reason for letter in listed] == ['test: readable', 'test: corrupt', 'test: another']
    assert listed[1].size == len(b'corrupt!') and listed[1].data is None   # no bodies in the list
    assert [letter.id for letter in deadletters.list_dead_letters(limit=2)] == [readable, corrupt]
    assert [letter.id for letter in deadletters.list_dead_letters(app)] == [readable, corrupt, other]

    details = deadletters.inspect(readable)
    assert details['task'] in ('hueyapp.tasks.add', 'add') and details['task_id'] == readable_id
    assert (details['args'], details['kwargs']) == ('(4, 5)', '{}')
    assert details['queue'] == 'default' and details['deliveries'] == 0
    assert details['reason'] == 'test: readable'
    assert details['buried_at'].endswith('+00:00')
    bad = deadletters.inspect(corrupt, app)
    assert bad['task'].startswith('(cannot be read:') and 'task_id' not in bad
    assert deadletters.inspect(10_000) is None

    # Replay: the readable one is enqueued anew (same task id), the corrupt one goes back as it is.
    assert deadletters.replay([readable, 10_000]) == 1
    assert [task.id for task in huey.pending()] == [readable_id]
    assert letter_ids(db) == [corrupt, other]
    assert deadletters.replay([corrupt]) == 1
    assert bytes(query(db, 'select data from hueyapp_inbox order by rowid desc limit 1')[0][0]) == b'corrupt!'
    assert query(db, 'select count(*) from hueyapp_inbox') == [(2,)]   # new rows: no lease, no delivery yet
    assert letter_ids(db) == [other]

    # Purge by id, then all; then replay_all of what is buried next.
    assert deadletters.purge([10_000]) == 0
    assert deadletters.purge([other]) == 1
    assert deadletters.list_dead_letters() == []
    ids = [bury(add.s(n, 1)) for n in range(3)]
    assert deadletters.replay_all() == 3
    assert [task.id for task in huey.pending()][-3:] == ids
    bury(add.s(0, 0))
    bury(add.s(0, 0))
    assert deadletters.purge() == 2
    assert deadletters.list_dead_letters() == []


def test_python_api_replay_re_signs_a_stale_signed_letter(db, signed, consumers):
    with freeze_time('2020-01-01 00:00:00'):
        stale = add.s(20, 1).to_task()
        data = huey.serialize_task(stale)
    conn = connect(db)
    conn.execute('insert into task (queue, data, priority) values (?, ?, 0)', ('default', data))
    conn.close()
    consumers(WORKER, env={**WORKER_ENV, 'HUEYAPP_SECRET_KEY': signed})
    (letter_id, _, reason, _, _), = wait_until(lambda: dead_letter_rows(db), 10, 'the stale row buried')
    assert 'signed longer ago' in reason
    assert deadletters.inspect(letter_id)['task'] in ('hueyapp.tasks.add', 'add')
    assert deadletters.replay([letter_id]) == 1
    assert app.AsyncResult(stale.id).get(timeout=10) == 21

"""Whoever can write the database file must not be able to run code or forge outcomes.

The intruder writes rows with plain ``sqlite3``; a forged pickle is an ``Evil`` object whose
unpickling would create a marker file, so "never unpickled" is checked on the disk.
"""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from freezegun import freeze_time

from hueyapp import CorruptResultError
from tests.poison_tasks import (CHECKOUT, WORKER, WORKER_ENV, Evil, add, app, connect, dead_letter_rows,
                                huey, insert_task_row, query, record, touch, wait_until)

SECRET = 'security-secret'
SIGNED_ENV = {**WORKER_ENV, 'HUEYAPP_SECRET_KEY': SECRET}
JSON_ENV = {**WORKER_ENV, 'HUEYAPP_SERIALIZER': 'json'}


@pytest.fixture
def signed(db):
    before = app.settings.secret_key
    app.configure(secret_key=SECRET)
    assert huey.serializer.deserialize(huey.serializer.serialize(1)) == 1
    assert huey.serializer.serialize(1).startswith(b'hueyapp1:')
    yield SECRET
    app.configure(secret_key=before)


@pytest.fixture
def json_serializer(db):
    before = app.settings.serializer
    app.configure(serializer='json')
    assert huey.serializer.serialize((1,)) == b'{"__t":"tuple","v":[1]}'
    yield
    app.configure(serializer=before)


def put_raw_result(db, key: str, value: bytes) -> None:
    conn = connect(db)
    conn.execute('insert or replace into hueyapp_kv (key, value, expires_at) values (?, ?, null)',
                 (key, value))
    conn.close()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the file ----------------------------------------------------------------------------------
def test_database_files_are_private(db, consumers, tmp_path):
    add.delay(1, 1)                                   # a write: the -wal and -shm files exist
    for path in (db, Path(f'{db}-wal'), Path(f'{db}-shm')):
        assert mode(path) == 0o600, (path, oct(mode(path)))

    by_consumer = tmp_path / 'made-by-consumer.db'
    consumers(WORKER, env={**WORKER_ENV, 'HUEYAPP_DB': str(by_consumer)})
    assert mode(by_consumer) == 0o600

    by_cli = tmp_path / 'made-by-cli.db'
    old_umask = os.umask(0)   # even a permissive umask does not open it up
    try:
        result = subprocess.run([str(Path(sys.executable).with_name('hueyapp')), '--db', str(by_cli),
                                 'queues'], capture_output=True, text=True, timeout=60, cwd=CHECKOUT)
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stderr
    assert mode(by_cli) == 0o600


# -- JSON: no code in the database --------------------------------------------------------------
def test_json_consumer_dead_letters_a_forged_pickle_row_without_unpickling_it(
        db, json_serializer, consumers, tmp_path):
    marker = tmp_path / 'pickle-ran'
    insert_task_row(db, pickle.dumps(Evil(str(marker))))
    consumers(WORKER, env=JSON_ENV)

    assert add.delay(1, 1).get(timeout=10) == 2
    (letter_id, _, reason, _, data), = wait_until(lambda: dead_letter_rows(db), 5, 'the pickle buried')
    assert 'cannot be read' in reason and 'JSON' in reason, reason
    assert not marker.exists()

    # Nor does an operator unpickle it when looking at it.
    from hueyapp import deadletters
    assert deadletters.inspect(letter_id)['task'].startswith('(cannot be read')
    assert not marker.exists()


def test_json_reader_does_not_unpickle_a_forged_result(db, json_serializer, tmp_path):
    marker = tmp_path / 'result-pickle-ran'
    put_raw_result(db, 'forged-result', pickle.dumps(Evil(str(marker))))
    with pytest.raises(CorruptResultError):
        app.AsyncResult('forged-result').get(timeout=1)
    assert not marker.exists()


def test_json_reader_imports_no_module_named_by_a_forged_failure(db, json_serializer):
    # No class is looked up by a name read from the data: a failure's exception type path is
    # attacker-controlled once the file is writable (no key), and importing an arbitrary
    # installed module runs its top-level code. `this` stands for any such module (it prints).
    code = r'''
import sys
from hueyapp.tasks import app
try:
    app.AsyncResult('forged-failure').get(timeout=1)
except BaseException as exc:
    print('raised', type(exc).__name__)
print('imported this:', 'this' in sys.modules)
'''
    forged = {'__t': 'huey.Error', 'v': [{'error': 'x', 'exc_type': 'this.Exception', 'exc_message': 'x',
                                          'exc_args': None, 'traceback': '', 'task_id': 'forged-failure',
                                          'retries': 0}]}
    put_raw_result(db, 'forged-failure', json.dumps(forged).encode())
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                            cwd=CHECKOUT, env={**os.environ, 'HUEYAPP_DB': str(db),
                                               'HUEYAPP_SERIALIZER': 'json', 'PYTHONPATH': CHECKOUT})
    assert result.returncode == 0, result.stderr
    assert 'raised' in result.stdout
    assert 'imported this: False' in result.stdout, result.stdout


# -- signing --------------------------------------------------------------------------------
def test_signed_reader_rejects_a_forged_result_without_unpickling_it(db, signed, tmp_path):
    marker = tmp_path / 'result-pickle-ran'
    put_raw_result(db, 'forged-result', pickle.dumps(Evil(str(marker))))
    with pytest.raises(CorruptResultError, match='forged-result'):
        app.AsyncResult('forged-result').get(timeout=1)
    assert not marker.exists()

    from hueyapp.serializer import SignedSerializer
    from huey.serializer import Serializer
    other_key = SignedSerializer(Serializer(), 'not-the-key').serialize(Evil(str(marker)))
    put_raw_result(db, 'other-key-result', other_key)
    with pytest.raises(CorruptResultError):
        app.AsyncResult('other-key-result').get(timeout=1)
    assert not marker.exists()


def test_signed_reader_rejects_a_forged_result_in_a_fresh_process(db, tmp_path):
    # The same, in a process that only has the environment (HUEYAPP_SECRET_KEY), as users run it.
    marker = tmp_path / 'result-pickle-ran'
    put_raw_result(db, 'forged-result', pickle.dumps(Evil(str(marker))))
    code = r'''
from hueyapp import CorruptResultError
from hueyapp.tasks import app
try:
    app.AsyncResult('forged-result').get(timeout=1)
except CorruptResultError as exc:
    print('CorruptResultError')
'''
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                            cwd=CHECKOUT, env={**os.environ, 'HUEYAPP_DB': str(db),
                                               'HUEYAPP_SECRET_KEY': SECRET})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'CorruptResultError'
    assert not marker.exists()


def test_a_signed_result_copied_to_another_task_id_is_rejected(db, signed, consumers):
    # A signed value is valid only as the result it was written for: copying task A's signed
    # result over task B's must not make B's result whatever A returned.
    consumers(WORKER, env=SIGNED_ENV)
    a, b = add.delay(1, 1), add.delay(50, 50)
    assert (a.get(timeout=10), b.get(timeout=10)) == (2, 100)
    (value,), = query(db, 'select value from hueyapp_kv where key = ?', (a.id,))
    put_raw_result(db, b.id, bytes(value))
    with pytest.raises(CorruptResultError):
        app.AsyncResult(b.id).get(timeout=1)


def test_a_replayed_signed_row_does_not_run_twice(db, signed, consumers, tmp_path):
    executions = tmp_path / 'executions'
    first = record.delay(str(executions), 'run')
    (row,), = query(db, 'select data from hueyapp_inbox')  # the signed row, copied before it runs
    consumer = consumers(WORKER, env=SIGNED_ENV)
    assert first.get(timeout=10) == 1

    insert_task_row(db, bytes(row))                      # the replay
    wait_until(lambda: query(db, 'select count(*) from task') == [(0,)], 10, 'the replay to be handled')
    wait_until(lambda: 'already has an outcome' in consumer.log(), 5, 'the replay to be acknowledged')
    assert add.delay(1, 1).get(timeout=10) == 2          # the consumer went on
    assert executions.read_text().splitlines() == ['run']
    assert first.get(timeout=1) == 1


def test_a_replayed_signed_row_does_not_run_twice_after_its_result_was_forgotten(
        db, signed, consumers, tmp_path):
    # `forget()` deletes the outcome the replay check relies on; the row is still young.
    executions = tmp_path / 'executions'
    first = record.delay(str(executions), 'run')
    (row,), = query(db, 'select data from hueyapp_inbox')
    consumers(WORKER, env=SIGNED_ENV)
    assert first.get(timeout=10) == 1
    first.forget()

    insert_task_row(db, bytes(row))
    wait_until(lambda: query(db, 'select count(*) from task') == [(0,)], 10, 'the replay to be handled')
    assert add.delay(1, 1).get(timeout=10) == 2
    assert executions.read_text().splitlines() == ['run']


def test_a_signed_row_older_than_result_expiry_is_dead_lettered(db, signed, consumers, tmp_path):
    marker = tmp_path / 'stale-ran'
    with freeze_time('2020-01-01 00:00:00'):
        stale = touch.s(str(marker)).to_task()
        data = huey.serialize_task(stale)                  # correctly signed, six years ago
    assert huey.deserialize_task(data).id == stale.id
    insert_task_row(db, data)
    consumers(WORKER, env=SIGNED_ENV)

    assert add.delay(1, 1).get(timeout=10) == 2
    (_, _, reason, _, _), = wait_until(lambda: dead_letter_rows(db), 5, 'the stale row buried')
    assert 'signed longer ago' in reason
    assert not marker.exists()
    assert not app.AsyncResult(stale.id).ready()


def test_a_stale_signed_row_copied_into_the_schedule_is_not_run(db, signed, consumers, tmp_path):
    # The same old signed message, put in Huey's `schedule` table (due at once) instead of `task`:
    # the scheduler must not launder it into a freshly signed queue row.
    marker = tmp_path / 'stale-ran'
    with freeze_time('2020-01-01 00:00:00'):
        stale = touch.s(str(marker)).to_task()
        data = huey.serialize_task(stale)
    conn = connect(db)
    conn.execute('insert into schedule (queue, data, timestamp) values (?, ?, 0)', ('default', data))
    conn.close()
    consumers(WORKER, env=SIGNED_ENV)

    wait_until(lambda: query(db, 'select count(*) from schedule') == [(0,)], 10, 'the scheduler to read it')
    assert add.delay(1, 1).get(timeout=10) == 2
    wait_until(lambda: query(db, 'select count(*) from task') == [(0,)], 10, 'the queue to drain')
    assert not marker.exists()
    assert not app.AsyncResult(stale.id).ready()
    assert ['signed longer ago' in row[2] for row in dead_letter_rows(db)] == [True]


def test_an_unsigned_row_in_the_schedule_is_dead_lettered_not_run(db, signed, consumers, tmp_path):
    marker = tmp_path / 'unsigned-ran'
    from huey.serializer import Serializer
    data = Serializer().serialize(huey._registry.create_message(touch.s(str(marker)).to_task()))
    conn = connect(db)
    conn.execute('insert into schedule (queue, data, timestamp) values (?, ?, 0)', ('default', data))
    conn.close()
    consumers(WORKER, env=SIGNED_ENV)
    (_, _, reason, _, _), = wait_until(lambda: dead_letter_rows(db), 10, 'the unsigned row buried')
    assert 'not signed' in reason
    assert add.delay(1, 1).get(timeout=10) == 2
    assert not marker.exists()

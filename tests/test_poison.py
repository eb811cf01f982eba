"""Poison messages end in dead letters, through real ``huey_consumer`` processes.

Bad rows are written straight into the ``task`` table, as a buggy producer, a disk error or
an intruder would leave them. The consumer must bury each with its reason and go on serving.
"""
from __future__ import annotations

import re
import time

import pytest
from huey.serializer import Serializer

from hueyapp.registry import RoutedMessage

from tests.poison_tasks import (WORKER, WORKER_ENV, add, app, dead_letter_rows, huey,
                                insert_task_row, query, suicide, touch, wait_until)

SECRET = 'poison-secret'


def unknown_task_message() -> bytes:
    """A well-formed message (this app's serializer) naming a task no worker knows."""
    message = list(huey._registry.create_message(add.s(1, 2).to_task()))
    message[1] = 'nope.missing'  # the name, second of Huey's message fields
    return huey.serializer.serialize(tuple(message))


def plain_pickle(signature) -> bytes:
    """The message of a call, pickled as plain Huey does: no signature."""
    return Serializer().serialize(huey._registry.create_message(signature.to_task()))


@pytest.fixture
def signed(db):
    """This process signs with SECRET (configure rebuilds the serializer); restored after."""
    before = app.settings.secret_key
    app.configure(secret_key=SECRET)
    assert type(huey.serializer).__name__ == 'SignedSerializer', 'configure(secret_key=) did not sign'
    yield SECRET
    app.configure(secret_key=before)


def test_corrupt_and_unknown_task_rows_are_dead_lettered_and_the_consumer_goes_on(db, consumers):
    insert_task_row(db, b'not a pickle')
    insert_task_row(db, unknown_task_message())
    consumer = consumers(WORKER, env=WORKER_ENV)

    good = add.delay(1, 1)
    assert good.get(timeout=10) == 2

    letters = wait_until(lambda: len(dead_letter_rows(db)) == 2 and dead_letter_rows(db), 5,
                         'both bad rows in the dead letters')
    (_, queue1, corrupt_reason, deliveries1, data1), (_, queue2, unknown_reason, _, data2) = letters
    assert (queue1, queue2) == ('default', 'default')
    assert bytes(data1) == b'not a pickle'                     # kept as it was, for the operator
    assert 'cannot be read' in corrupt_reason and 'UnpicklingError' in corrupt_reason
    assert 'nope.missing' in unknown_reason and 'not found' in unknown_reason
    assert deliveries1 == 1
    assert RoutedMessage(*huey.serializer.deserialize(bytes(data2))).name == 'nope.missing'  # the message itself
    assert query(db, 'select count(*) from task') == [(0,)]  # nothing left on the queue
    assert consumer.alive()
    assert 'Traceback' not in consumer.log()                  # buried quietly, no worker crash


def test_twenty_bad_rows_in_front_do_not_delay_a_good_task(db, consumers):
    for i in range(20):
        insert_task_row(db, b'not a pickle %d' % i if i % 2 else unknown_task_message())
    good = add.delay(20, 22)      # queued behind all 20
    consumers(WORKER, env=WORKER_ENV)
    started = time.monotonic()

    assert good.get(timeout=2) == 42      # plain Huey backs off to ~10 s after the errors
    elapsed = time.monotonic() - started
    assert elapsed < 2
    assert len(dead_letter_rows(db)) == 20


def test_a_task_that_kills_its_worker_is_dead_lettered_after_max_deliveries(db, consumers):
    env = {**WORKER_ENV, 'HUEYAPP_LEASE_SECONDS': '1', 'HUEYAPP_MAX_DELIVERIES': '2'}
    consumer = consumers(WORKER, '-k', 'process', '-w', '1', '-c', '1', env=env)

    doomed = suicide.delay()
    letters = wait_until(lambda: dead_letter_rows(db), 20, 'the suicidal task in the dead letters')
    assert len(letters) == 1
    _, queue, reason, deliveries, data = letters[0]
    assert queue == 'default'
    assert re.search(r'handed out 3 times \(limit 2\)', reason), reason
    assert deliveries == 3
    assert huey.deserialize_task(bytes(data)).id == doomed.id
    assert not doomed.ready()      # it never ran to an outcome

    # The consumer restarted its worker and keeps serving.
    assert add.delay(2, 3).get(timeout=15) == 5
    assert consumer.alive()
    assert query(db, 'select count(*) from task') == [(0,)]


def test_an_unsigned_row_is_dead_lettered_and_never_executed_when_signing_is_on(
        db, signed, consumers, tmp_path):
    never = tmp_path / 'unsigned-ran'
    control = tmp_path / 'signed-ran'
    insert_task_row(db, plain_pickle(touch.s(str(never))))
    consumer = consumers(WORKER, env={**WORKER_ENV, 'HUEYAPP_SECRET_KEY': signed})

    # Signed calls from this process run (the marker mechanism works) ...
    assert touch.delay(str(control)).get(timeout=10) == str(control)
    assert control.exists()
    assert add.delay(1, 1).get(timeout=10) == 2

    # ... the unsigned one, queued before them, was buried and never ran.
    letters = dead_letter_rows(db)
    assert len(letters) == 1, letters
    assert 'not signed' in letters[0][2], letters[0][2]
    assert not never.exists()
    assert str(never) not in consumer.log()


def test_a_row_signed_with_another_key_or_tampered_is_dead_lettered(db, signed, consumers, tmp_path):
    never = tmp_path / 'forged-ran'
    redirected = tmp_path / 'forged-raX'
    valid = huey.serialize_task(touch.s(str(never)).to_task())
    tampered = valid.replace(str(never).encode(), str(redirected).encode())
    assert tampered != valid
    from hueyapp.serializer import SignedSerializer
    other_key = SignedSerializer(Serializer(), 'another-key').serialize(
        huey._registry.create_message(touch.s(str(never)).to_task()))
    insert_task_row(db, tampered)
    insert_task_row(db, other_key)
    consumers(WORKER, env={**WORKER_ENV, 'HUEYAPP_SECRET_KEY': signed})

    assert add.delay(1, 1).get(timeout=10) == 2
    reasons = [row[2] for row in wait_until(lambda: len(dead_letter_rows(db)) == 2 and dead_letter_rows(db),
                                            5, 'both forged rows dead-lettered')]
    assert all('signature mismatch' in reason for reason in reasons), reasons
    assert not never.exists() and not redirected.exists()


def test_a_corrupt_row_in_the_schedule_is_dead_lettered(db, consumers):
    # A scheduled (countdown) task lives in Huey's `schedule` table until it is due.
    conn_rows = query(db, 'select count(*) from schedule')
    assert conn_rows == [(0,)]
    from tests.poison_tasks import connect
    conn = connect(db)
    conn.execute('insert into schedule (queue, data, timestamp) values (?, ?, ?)',
                 ('default', b'not a pickle either', 0.0))
    conn.close()
    consumer = consumers(WORKER, env=WORKER_ENV)

    later = add.apply_async((3, 4), countdown=1)
    assert later.get(timeout=10) == 7
    letters = wait_until(lambda: dead_letter_rows(db), 5, 'the corrupt scheduled row in the dead letters')
    assert len(letters) == 1
    assert 'cannot be read' in letters[0][2]
    assert bytes(letters[0][4]) == b'not a pickle either'
    assert query(db, 'select count(*) from schedule') == [(0,)]
    assert consumer.alive()

"""JsonSerializer (hueyapp.json_serializer), SignedSerializer and create_serializer (hueyapp.serializer)."""
from __future__ import annotations

import datetime
import decimal
import pickle
import uuid

import pytest
from freezegun import freeze_time
from huey.registry import Message
from huey.serializer import Serializer
from huey.serializer import SignedSerializer as HueySignedSerializer
from huey.utils import SKIPPED, ChordConfig, Error

from hueyapp.json_serializer import JsonSerializer
from hueyapp.outcome import Revoked
from hueyapp.registry import RoutedMessage
from hueyapp.result import AsyncResult, GroupResult
from hueyapp.serializer import (BadSignature, SignedSerializer, StaleMessage,
                                create_serializer)
from hueyapp.tasks import add, huey, mul, xsum

NAIVE = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
CET = datetime.timezone(datetime.timedelta(hours=1, minutes=30))

VALUES = {
    'none': None,
    'true': True,
    'false': False,
    'int': 42,
    'big int': 2 ** 100,
    'negative zero': -0.0,
    'float': 0.1,
    'str': 'héllo \u2603 \ud800',
    'empty str': '',
    'list': [1, 'two', [3.0]],
    'dict': {'a': 1, 'b': {'c': [None]}},
    'tuple': (1, 'x'),
    'empty tuple': (),
    'nested tuples': ((1, (2, (3,))), [(4,)], {'k': (5,)}),
    'naive datetime': NAIVE,
    'utc datetime': NAIVE.replace(tzinfo=datetime.timezone.utc),
    'offset datetime': NAIVE.replace(tzinfo=CET),
    'date': datetime.date(2024, 2, 29),
    'time': datetime.time(23, 59, 58, 1),
    'aware time': datetime.time(1, 2, tzinfo=CET),
    'timedelta': datetime.timedelta(days=-3, seconds=5, microseconds=7),
    'decimal': decimal.Decimal('1.10'),
    'decimal exponent': decimal.Decimal('-0E+3'),
    'uuid': uuid.UUID('12345678-1234-5678-1234-567812345678'),
    'bytes': b'\x00\xff:hueyapp1:',
    'set': {1, 'a', (2, 3)},
    'frozenset': frozenset({frozenset({1}), 2}),
    'int keys': {1: 'a', (2, 3): 'b', None: 'c'},
    'tag key': {'__t': 'tuple', 'v': [1, 2]},
    'nested tag key': [{'__t': 'x'}, ({'__t': 'dict', 'v': []},)],
    'error': Error({'error': 'boom', 'exc_args': ('boom',), 'retries': 0}),
    'revoked': Revoked('tid', 'expired'),
    'revocation': (NAIVE, True),
    'no revocation': (None, False),
    'message': Message('id', 'mod.name', NAIVE, 1, 2.5, 3, (1, (2,)), {'k': b'v'},
                       None, None, 10, NAIVE, 60, None, 2.0),
}


def routed_message() -> RoutedMessage:
    callback = RoutedMessage('cb', 'mod.cb', args=(), kwargs={}, queue='hipri', immutable=True)
    on_error = Message('err', 'mod.err', args=('x',), kwargs={})
    return RoutedMessage('id', 'mod.t', NAIVE, 0, 0, None, (1, 2), {'z': 1.5},
                         callback, on_error, datetime.timedelta(seconds=30), NAIVE, None,
                         ('cid', 2, 1, callback), None, queue='default', immutable=False)


def serializers() -> dict[str, Serializer]:
    return {
        'json': JsonSerializer(),
        'json+gzip': JsonSerializer(compression=True),
        'json+zlib': JsonSerializer(compression=True, use_zlib=True),
        'signed json': SignedSerializer(JsonSerializer(compression=True), 'secret'),
        'signed pickle': SignedSerializer(Serializer(), b'secret'),
    }


def assert_same(got, expected):
    """Equal, and of the same types all the way down (1 == 1.0 == True would hide a bug)."""
    assert type(got) is type(expected)
    assert got == expected
    if isinstance(expected, (list, tuple)):
        for g, e in zip(got, expected):
            assert_same(g, e)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, (datetime.datetime, datetime.time)):
        assert got.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize('serializer', serializers().values(), ids=serializers().keys())
@pytest.mark.parametrize('value', VALUES.values(), ids=VALUES.keys())
def test_round_trip(serializer, value):
    assert_same(serializer.deserialize(serializer.serialize(value)), value)


@pytest.mark.parametrize('serializer', serializers().values(), ids=serializers().keys())
def test_round_trip_of_everything_at_once(serializer):
    value = {**VALUES, 'routed': routed_message(), 'all': tuple(VALUES.values())}
    assert_same(serializer.deserialize(serializer.serialize(value)), value)


@pytest.mark.parametrize('serializer', serializers().values(), ids=serializers().keys())
def test_skipped_comes_back_as_the_sentinel(serializer):
    assert serializer.deserialize(serializer.serialize(SKIPPED)) is SKIPPED
    assert serializer.deserialize(serializer.serialize([SKIPPED]))[0] is SKIPPED


def test_routed_message_round_trips_with_nested_messages():
    message = routed_message()
    got = JsonSerializer().deserialize(JsonSerializer().serialize(message))
    assert_same(got, message)
    assert type(got.on_complete) is RoutedMessage and type(got.on_error) is Message
    assert type(got.chord_config) is tuple and type(got.chord_config[3]) is RoutedMessage


def test_wire_format_is_compact_readable_json():
    data = JsonSerializer().serialize({'a': (1, 'é'), 'b': [None]})
    assert data == '{"a":{"__t":"tuple","v":[1,"é"]},"b":[null]}'.encode('utf-8')


def test_result_handles_travel_by_id():
    group = GroupResult('gid', [AsyncResult('a', None), AsyncResult('b', None)])
    handle = AsyncResult('c', None, parent=group)
    got = JsonSerializer().deserialize(JsonSerializer().serialize(handle))
    assert type(got) is AsyncResult and got.id == 'c'
    assert type(got.parent) is GroupResult and got.parent.id == 'gid'
    assert [r.id for r in got.parent.results] == ['a', 'b']
    assert all(type(r) is AsyncResult for r in got.parent.results)


def _through_json(task):
    serializer = JsonSerializer()
    data = serializer.serialize(huey._registry.create_message(task))
    return huey._registry.create_task(serializer.deserialize(data))


def test_real_task_message_with_on_complete():
    task = add.s(1, 2).to_task()
    task.on_complete = mul.s(3).to_task()
    got = _through_json(task)
    assert (type(got), got.id, got.args, got.kwargs, got.queue) == (
        type(task), task.id, (1, 2), {}, task.queue)
    assert type(got.on_complete) is type(task.on_complete)
    assert (got.on_complete.id, got.on_complete.args) == (task.on_complete.id, (3,))
    assert got.eta == task.eta and got.immutable == task.immutable


def test_real_task_message_with_chord_config():
    task = add.s(1, 2).to_task()
    callback = xsum.s().to_task()
    task.chord_config = ChordConfig('cid', 2, 0, callback)
    got = _through_json(task)
    assert got.id == task.id
    cc = got.chord_config
    assert (cc.cid, cc.size, cc.idx) == ('cid', 2, 0)
    assert (type(cc.callback), cc.callback.id, cc.callback.args) == (type(callback), callback.id, ())


def test_a_message_travels_as_a_plain_tuple_and_older_forms_still_read():
    task = add.s(1, 2).set(queue='hipri').to_task()
    task.on_complete = mul.si(3).to_task()
    wire = huey._registry.create_message(task)
    assert type(wire) is tuple and type(wire[8]) is tuple  # on_complete too
    assert b'RoutedMessage' not in pickle.dumps(wire)
    # As earlier hueyapp wrote it (a RoutedMessage), and as plain Huey writes it (a Message).
    older = RoutedMessage(*wire[:8], RoutedMessage(*wire[8]), *wire[9:])
    plain = Message(*wire[:len(Message._fields)])
    for message in (wire, older, plain):
        got = huey.deserialize_task(Serializer().serialize(message))
        assert (type(got), got.id, got.args) == (type(task), task.id, (1, 2))
    assert huey.deserialize_task(Serializer().serialize(older)).on_complete.immutable
    assert huey.deserialize_task(Serializer().serialize(wire)).queue == 'hipri'
    assert huey.deserialize_task(Serializer().serialize(plain)).queue == 'default'


class Custom:
    pass


@pytest.mark.parametrize('value, name', [
    (Custom(), 'tests.test_serializer.Custom'),
    ({'deep': [(1, object())]}, 'object'),
    (bytearray(b'x'), 'bytearray'),
    ({Custom(): 1}, 'tests.test_serializer.Custom'),
    (ChordConfig('cid', 1, 0, None), 'huey.utils.ChordConfig'),  # not whitelisted
])
def test_unsupported_type_raises_type_error_naming_it(value, name):
    with pytest.raises(TypeError, match=f'cannot be serialized to JSON: {name}$'):
        JsonSerializer().serialize(value)


@pytest.mark.parametrize('data', [
    b'', b'{', b'\xff\xfe', b'{"__t":"tuple"}', b'{"__t":"tuple","v":[],"x":1}',
    b'{"__t":"os.system","v":["echo"]}', b'{"__t":"decimal","v":"not a number"}',
    b'{"__t":"bytes","v":"!!"}', b'{"__t":"datetime","v":"yesterday"}',
    b'{"__t":"hueyapp.Revoked","v":[1,2,3]}', b'{"__t":"set","v":[[1]]}',
    b'{"__t":"dict","v":[[[1],2]]}', b'{"__t":"tuple","v":"abc"}', b'{"__t":["x"],"v":1}',
])
def test_corrupt_input_raises_value_error(data):
    with pytest.raises(ValueError):
        JsonSerializer().deserialize(data)


# -- signing ------------------------------------------------------------------------------
UNPICKLED: list[str] = []


def _mark_unpickled(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Exploit:
    """What an attacker would write to the database: unpickling it runs code."""

    def __reduce__(self):
        return (_mark_unpickled, ('pwned',))


@pytest.fixture
def spy():
    UNPICKLED.clear()
    yield UNPICKLED
    UNPICKLED.clear()


def test_exploit_does_run_when_unpickled(spy):
    # The control experiment: the flag works, so its staying unset below means something.
    pickle.loads(pickle.dumps(Exploit()))
    assert spy == ['pwned']


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def _tampered() -> dict[str, bytes]:
    signed = SignedSerializer(Serializer(), 'secret')
    good = signed.serialize(Exploit())
    prefix_len = len(b'hueyapp1:')
    return {
        'payload byte': _flip(good, len(good) - 2),
        'signature byte': _flip(good, prefix_len + 3),
        'timestamp byte': _flip(good, prefix_len + 64 + 2),
        'no prefix': good[prefix_len:],
        'other version': b'hueyapp2:' + good[prefix_len:],
        'other secret': SignedSerializer(Serializer(), 'other').serialize(Exploit()),
        'plain pickle': pickle.dumps(Exploit()),
        'huey signed': HueySignedSerializer(secret='secret').serialize(Exploit()),
        'truncated': good[:prefix_len + 10],
        'empty': b'',
        'not bytes': 'hueyapp1:abc',
    }


@pytest.mark.parametrize('data', _tampered().values(), ids=_tampered().keys())
def test_tampered_data_is_rejected_before_unpickling(spy, data):
    signed = SignedSerializer(Serializer(), 'secret')
    with pytest.raises(BadSignature):
        signed.deserialize(data)
    with pytest.raises(BadSignature):
        signed.signed_at(data)
    assert spy == []


def test_untampered_exploit_is_unpickled(spy):
    # Signing authenticates the writer, it does not make pickle safe: the secret must stay secret.
    signed = SignedSerializer(Serializer(), 'secret')
    assert signed.deserialize(signed.serialize(Exploit())) == 'pwned'
    assert spy == ['pwned']


def test_signed_format():
    signed = SignedSerializer(JsonSerializer(), 'secret')
    with freeze_time('2024-01-01 00:00:00'):
        data = signed.serialize((1,))
    version, signature, signed_at, payload = data.split(b':', 3)
    assert version == b'hueyapp1' and len(signature) == 64 and payload == b'{"__t":"tuple","v":[1]}'
    assert float(signed_at) == signed.signed_at(data) == 1704067200.0


def test_compression_applies_inside_the_signature():
    signed = SignedSerializer(JsonSerializer(compression=True), 'secret')
    payload = signed.serialize('x' * 1000).split(b':', 3)[3]
    assert payload[:1] == b'\x1f' and len(payload) < 100


def test_max_age():
    signed = SignedSerializer(JsonSerializer(), 'secret', max_age=60)
    with freeze_time('2024-01-01 00:00:00'):
        data = signed.serialize('hello')
    with freeze_time('2024-01-01 00:00:59'):
        assert signed.deserialize(data) == 'hello'
    with freeze_time('2024-01-01 00:01:01'):
        with pytest.raises(StaleMessage, match='older than max_age'):
            signed.deserialize(data)
        assert signed.signed_at(data) == 1704067200.0  # the age check is deserialize's alone
    assert issubclass(StaleMessage, BadSignature) and issubclass(BadSignature, ValueError)


@pytest.mark.parametrize('kwargs', [{'secret': ''}, {'secret': 's', 'max_age': 0}])
def test_signed_serializer_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        SignedSerializer(JsonSerializer(), **kwargs)


# -- factory ------------------------------------------------------------------------------
def test_factory_kinds():
    pickled = create_serializer()
    assert type(pickled) is Serializer and not pickled.comp
    json_ = create_serializer('json', compression=True)
    assert type(json_) is JsonSerializer and json_.comp
    signed = create_serializer('json', secret='s3cret')
    assert type(signed) is SignedSerializer and type(signed.inner) is JsonSerializer
    assert signed.deserialize(signed.serialize((1, NAIVE))) == (1, NAIVE)
    signed_pickle = create_serializer('pickle', secret='s3cret', compression=True)
    assert type(signed_pickle.inner) is Serializer and signed_pickle.inner.comp


def test_factory_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'yaml'.*json, pickle"):
        create_serializer('yaml')


def test_serializer_is_a_drop_in_for_huey():
    from huey import MemoryHuey

    h = MemoryHuey('serializer-test', serializer=create_serializer('json', secret='k'), immediate=True)

    @h.task()
    def pair(a, b):
        return (a, b, NAIVE)

    assert pair(1, decimal.Decimal('2.5'))() == (1, decimal.Decimal('2.5'), NAIVE)

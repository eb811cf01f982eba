"""JSON instead of pickle for what hueyapp stores, so a writable database cannot run code.

:class:`JsonSerializer` writes compact UTF-8 JSON. Plain JSON values (``null``, booleans,
numbers, strings, arrays, objects with string keys) stand for themselves; ``list`` is an
array. Every other supported value is a *tagged* object with exactly two keys::

    {"__t": <tag>, "v": <encoded value>}

    tuple        {"__t":"tuple","v":[1,2]}            (nested tuples stay tuples)
    dict         {"__t":"dict","v":[[k,v],...]}       keys not all str, or a "__t" key
    set          {"__t":"set","v":[...]}              also "frozenset"
    bytes        {"__t":"bytes","v":"<base64>"}
    datetime     {"__t":"datetime","v":"2024-01-02T03:04:05.000006+01:00"}
    date, time   {"__t":"date","v":"2024-01-02"}      ISO 8601, as ``isoformat()``
    timedelta    {"__t":"timedelta","v":[days,seconds,microseconds]}
    Decimal      {"__t":"decimal","v":"1.10"}
    UUID         {"__t":"uuid","v":"<hex>"}
    SKIPPED      {"__t":"skipped","v":null}           Huey's sentinel, same object back
    namedtuple   {"__t":"huey.Message","v":[fields]}  only the whitelist of _named_tuples()
    AsyncResult  {"__t":"AsyncResult","v":[id,parent]}
    GroupResult  {"__t":"GroupResult","v":[id,[results],parent]}

Types are matched exactly (a ``str`` or ``dict`` subclass is refused, not silently
downgraded). Anything else raises ``TypeError``; malformed input raises ``ValueError``.
No class is ever looked up by a name read from the data.
"""
from __future__ import annotations

import base64
import datetime
import decimal
import functools
import json
import sys
import uuid
from typing import Any, Callable

from huey.serializer import Serializer
from huey.utils import SKIPPED

__all__ = ['JsonSerializer']

TAG = '__t'
VALUE = 'v'
_TAGGED_KEYS = frozenset((TAG, VALUE))
_PLAIN = (str, int, float, bool, type(None))


# -- encoding -----------------------------------------------------------------------
@functools.cache
def _named_tuples() -> dict[str, type]:
    """The namedtuples that may travel, by wire name; imported late to avoid import cycles."""
    from huey.registry import Message
    from huey.utils import Error

    from hueyapp.outcome import Revoked, Stored
    from hueyapp.registry import RoutedMessage
    return {'huey.Message': Message, 'huey.Error': Error,
            'hueyapp.RoutedMessage': RoutedMessage, 'hueyapp.Revoked': Revoked,
            'hueyapp.Stored': Stored}


@functools.cache
def _named_tuple_tags() -> dict[type, str]:
    return {cls: name for name, cls in _named_tuples().items()}


def _tagged(tag: str, value: Any) -> dict[str, Any]:
    return {TAG: tag, VALUE: value}


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == 'builtins' else f'{cls.__module__}.{cls.__qualname__}'


def _encode_dict(obj: dict) -> Any:
    # A plain JSON object when it reads back unambiguously; otherwise a list of pairs.
    if TAG not in obj and all(type(key) is str for key in obj):
        return {key: _encode(value) for key, value in obj.items()}
    return _tagged('dict', [[_encode(key), _encode(value)] for key, value in obj.items()])


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    list: lambda obj: [_encode(item) for item in obj],
    dict: _encode_dict,
    tuple: lambda obj: _tagged('tuple', [_encode(item) for item in obj]),
    set: lambda obj: _tagged('set', [_encode(item) for item in obj]),
    frozenset: lambda obj: _tagged('frozenset', [_encode(item) for item in obj]),
    bytes: lambda obj: _tagged('bytes', base64.b64encode(obj).decode('ascii')),
    datetime.datetime: lambda obj: _tagged('datetime', obj.isoformat()),
    datetime.date: lambda obj: _tagged('date', obj.isoformat()),
    datetime.time: lambda obj: _tagged('time', obj.isoformat()),
    datetime.timedelta: lambda obj: _tagged('timedelta', [obj.days, obj.seconds, obj.microseconds]),
    decimal.Decimal: lambda obj: _tagged('decimal', str(obj)),
    uuid.UUID: lambda obj: _tagged('uuid', obj.hex),
}


def _encode_result(obj: Any) -> Any:
    """A result handle by id (and its parents), as Celery stores one; None if obj is not one."""
    module = sys.modules.get('hueyapp.result')  # not imported yet: obj cannot be a handle
    if module is None:
        return None
    if type(obj) is module.AsyncResult:
        return _tagged('AsyncResult', [obj.id, _encode(obj.parent)])
    if type(obj) is module.GroupResult:
        return _tagged('GroupResult', [obj.id, [_encode(r) for r in obj.results], _encode(obj.parent)])
    return None


def _encode(obj: Any) -> Any:
    """``obj`` as a tree of plain JSON values; TypeError for what cannot round-trip."""
    cls = type(obj)
    if cls in _PLAIN:
        return obj
    encoder = _ENCODERS.get(cls)
    if encoder is not None:
        return encoder(obj)
    if obj is SKIPPED:
        return _tagged('skipped', None)
    tag = _named_tuple_tags().get(cls)
    if tag is not None:
        return _tagged(tag, [_encode(item) for item in obj])
    encoded = _encode_result(obj)
    if encoded is not None:
        return encoded
    raise TypeError(f'value cannot be serialized to JSON: {_type_name(obj)}')


# -- decoding -----------------------------------------------------------------------
def _decode_dict(pairs: Any) -> dict:
    return {key: value for key, value in pairs}


def _decode_async_result(value: Any) -> Any:
    from hueyapp.result import AsyncResult
    task_id, parent = value
    return AsyncResult(task_id, None, parent)


def _decode_group_result(value: Any) -> Any:
    from hueyapp.result import GroupResult
    group_id, results, parent = value
    return GroupResult(group_id, results, parent)


def _decode_timedelta(value: Any) -> datetime.timedelta:
    days, seconds, microseconds = value
    return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)


# tag -> (the JSON type its "v" must have, how to rebuild the value from it)
_DECODERS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    'tuple': (list, tuple),
    'dict': (list, _decode_dict),
    'set': (list, set),
    'frozenset': (list, frozenset),
    'bytes': (str, lambda value: base64.b64decode(value.encode('ascii'), validate=True)),
    'datetime': (str, datetime.datetime.fromisoformat),
    'date': (str, datetime.date.fromisoformat),
    'time': (str, datetime.time.fromisoformat),
    'timedelta': (list, _decode_timedelta),
    'decimal': (str, decimal.Decimal),
    'uuid': (str, uuid.UUID),
    'skipped': (type(None), lambda value: SKIPPED),
    'AsyncResult': (list, _decode_async_result),
    'GroupResult': (list, _decode_group_result),
}


def _decoder(tag: Any) -> tuple[type, Callable[[Any], Any]]:
    if tag in _DECODERS:
        return _DECODERS[tag]
    cls = _named_tuples().get(tag)
    if cls is not None:
        return list, lambda value: cls(*value)
    raise ValueError(f'unknown tag {tag!r}')


def _decode_object(obj: dict[str, Any]) -> Any:
    """json ``object_hook``: children are decoded already, so only this level is looked at."""
    if TAG not in obj:
        return obj
    if obj.keys() != _TAGGED_KEYS:
        raise ValueError(f'malformed tagged value with keys {sorted(obj)}')
    expected, decode = _decoder(obj[TAG])
    value = obj[VALUE]
    if type(value) is not expected:
        raise ValueError(f'tag {obj[TAG]!r} needs a {expected.__name__} value, got {type(value).__name__}')
    return decode(value)


class JsonSerializer(Serializer):
    """JSON on the wire, so a writable database cannot make a consumer run code."""

    def _serialize(self, data: Any) -> bytes:
        # surrogatepass: a str with a lone surrogate is a valid Python str, keep it round-tripping.
        text = json.dumps(_encode(data), separators=(',', ':'), ensure_ascii=False)
        return text.encode('utf-8', 'surrogatepass')

    def _deserialize(self, data: bytes) -> Any:
        try:
            text = bytes(data).decode('utf-8', 'surrogatepass')
            return json.loads(text, object_hook=_decode_object)
        except (ValueError, TypeError, KeyError, ArithmeticError, AttributeError) as exc:
            # Corrupt or foreign data: one exception type, whatever the decoder tripped on.
            raise ValueError(f'cannot deserialize JSON payload: {exc}') from exc

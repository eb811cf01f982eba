"""Signed payloads, and the serializer a setting names.

Huey pickles task messages and results by default, so anyone who can write the database file
can run code in every consumer. Two remedies, usable apart or together, both drop-in for
``Huey(serializer=...)`` and both subclasses of :class:`huey.serializer.Serializer`:
:class:`hueyapp.json_serializer.JsonSerializer` (``HUEYAPP_SERIALIZER=json``), and
:class:`SignedSerializer` (``HUEYAPP_SECRET_KEY``), which wraps any serializer's output
(compressed or not) as::

    b'hueyapp1:' + hmac_sha256_hex + b':' + signed_at + b':' + payload

where the HMAC covers ``b'hueyapp1:' + signed_at + b':' + payload`` and ``signed_at`` is
``time.time()`` as ASCII decimal. The signature is checked before the payload reaches the
inner serializer, so a forged pickle is never unpickled.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable

from huey.serializer import Serializer

from hueyapp.errors import BadSignature, StaleMessage

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; typing itself would cost every worker 0.5 MB
if TYPE_CHECKING:
    from typing import Any

__all__ = ['BadSignature', 'SignedSerializer', 'StaleMessage', 'create_serializer']


# -- signing ------------------------------------------------------------------------------
_SIGNED_PREFIX = b'hueyapp1:'
_SIGNED_AT = re.compile(rb'\d+\.\d+\Z')
_KEY_CONTEXT = b'hueyapp.serializer.SignedSerializer'


class SignedSerializer(Serializer):
    """Signs another serializer's bytes so only holders of the secret can write messages.

    ``max_age`` rejects data signed more than that many seconds ago. It applies to everything
    read through this serializer, results and scheduled tasks included: keep it above the
    longest eta and result lifetime, or leave it None and check :meth:`signed_at` yourself.
    """

    def __init__(self, inner: Serializer, secret: str | bytes, max_age: float | None = None) -> None:
        super().__init__()
        if not secret:
            raise ValueError('SignedSerializer needs a non-empty secret')
        if max_age is not None and not max_age > 0:
            raise ValueError(f'max_age must be a positive number of seconds or None, got {max_age!r}')
        if isinstance(secret, str):
            secret = secret.encode('utf-8')
        self.inner = inner
        self.max_age = max_age
        # A key of its own, so the same secret used elsewhere cannot produce valid signatures here.
        self._key = hmac.new(secret, _KEY_CONTEXT, hashlib.sha256).digest()

    def _signature(self, signed_at: bytes, payload: bytes) -> bytes:
        message = _SIGNED_PREFIX + signed_at + b':' + payload
        return hmac.new(self._key, message, hashlib.sha256).hexdigest().encode('ascii')

    def serialize(self, data: Any) -> bytes:
        """The inner serializer's bytes (compressed if it compresses), signed and timestamped."""
        payload = self.inner.serialize(data)
        signed_at = f'{time.time():.6f}'.encode('ascii')
        return b''.join((_SIGNED_PREFIX, self._signature(signed_at, payload), b':', signed_at, b':', payload))

    def _unsign(self, data: bytes) -> tuple[float, bytes]:
        """(signing time, payload) of correctly signed data; BadSignature otherwise."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadSignature(f'expected bytes, got {type(data).__name__}')
        data = bytes(data)
        if not data.startswith(_SIGNED_PREFIX):
            raise BadSignature('data is not signed (no hueyapp1 signature prefix)')
        parts = data[len(_SIGNED_PREFIX):].split(b':', 2)
        if len(parts) != 3:
            raise BadSignature('malformed signed data')
        signature, signed_at, payload = parts
        if not hmac.compare_digest(signature, self._signature(signed_at, payload)):
            raise BadSignature('signature mismatch')
        if not _SIGNED_AT.match(signed_at):  # cannot happen unless the secret signed it so
            raise BadSignature('malformed signing time')
        return float(signed_at), payload

    def signed_at(self, data: bytes) -> float:
        """When ``data`` was signed (a ``time.time()`` value), once its signature is verified."""
        return self._unsign(data)[0]

    def deserialize(self, data: bytes) -> Any:
        """Verify signature and age first; only then let the inner serializer read the payload."""
        signed_at, payload = self._unsign(data)
        if self.max_age is not None:
            age = time.time() - signed_at
            if age > self.max_age:
                raise StaleMessage(f'data signed {age:.0f}s ago, older than max_age={self.max_age}s')
        return self.inner.deserialize(payload)

    # Huey's hooks: never fall back to the base class's unsigned pickle.
    _serialize = serialize
    _deserialize = deserialize


# -- factory ------------------------------------------------------------------------------
def _json_serializer(**options: Any) -> Serializer:
    from hueyapp.json_serializer import JsonSerializer  # json and decimal only for those who use it
    return JsonSerializer(**options)


_KINDS: dict[str, Callable[..., Serializer]] = {'pickle': Serializer, 'json': _json_serializer}


def create_serializer(kind: str = 'pickle', secret: str | None = None,
                      compression: bool = False) -> Serializer:
    """The serializer a setting names; with a secret, signed, so forged rows are rejected."""
    factory = _KINDS.get(kind.strip().lower())
    if factory is None:
        raise ValueError(f'unknown serializer {kind!r}; expected one of: {", ".join(sorted(_KINDS))}')
    serializer = factory(compression=compression)
    if secret is not None:
        return SignedSerializer(serializer, secret)
    return serializer

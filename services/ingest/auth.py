"""Sensor tokens: issue, hash, verify (pure).

A token is ``shl_`` + 43 url-safe characters (256 random bits). It is shown once when issued;
only its SHA-256 is stored. With 256 bits of entropy a slow password hash buys nothing, and a
fast one lets ingest look the sensor up by hash with one indexed query per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

TOKEN_PREFIX = "shl_"


def issue_token() -> tuple[str, bytes]:
    """A new random token and the hash to store."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 100


def bearer_token(authorization: str | None) -> str | None:
    """The token from an ``Authorization: Bearer …`` header, or None if absent/malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not looks_like_token(token):
        return None
    return token


def verify(token: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


V = TypeVar("V")


@dataclass
class VerifiedTokens(Generic[V]):
    """Tokens the registry confirmed recently, to answer while the database does not (pure).

    Ingest asks the database on every request, so a revocation or a rotation takes effect on
    the next request. Only when the database fails to answer is a token looked up here, and
    only if it was confirmed within ``max_age_s``: a sensor revoked (or a token rotated) just
    before an outage is still accepted for at most ``max_age_s`` seconds. Holds at most
    ``capacity`` tokens, the least recently confirmed first out. ``now`` is monotonic seconds.
    """

    max_age_s: float
    capacity: int
    _entries: OrderedDict[bytes, tuple[float, V]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def confirmed(self, token_hash: bytes, value: V, now: float) -> None:
        self._entries[token_hash] = (now, value)
        self._entries.move_to_end(token_hash)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, token_hash: bytes) -> None:
        self._entries.pop(token_hash, None)

    def get(self, token_hash: bytes, now: float) -> V | None:
        """The value confirmed for this token within ``max_age_s``, else None."""
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if now - entry[0] > self.max_age_s:
            del self._entries[token_hash]
            return None
        return entry[1]

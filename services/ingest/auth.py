"""Sensor tokens: issue, hash, verify (pure).

A token is ``shl_`` + 43 url-safe characters (256 random bits). It is shown once when issued;
only its SHA-256 is stored. With 256 bits of entropy a slow password hash buys nothing, and a
fast one lets ingest look the sensor up by hash with one indexed query per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

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

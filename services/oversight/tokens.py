"""Per-user API tokens with a role: shown once, stored as SHA-256, revocable.

A token is ``shl_<token_id>_<secret>`` (256-bit secret): the id makes it listable and
revocable without the secret; only the SHA-256 of the whole token is stored (a random
256-bit secret needs no slow hash: there is nothing to brute-force). Creating and revoking
a token is written to the audit log in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import asyncpg

from services.oversight import audit

Role = Literal["admin", "dispatcher", "reviewer", "analyst", "auditor"]
ROLES: tuple[str, ...] = get_args(Role)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    user_name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


async def create_token(
    pool: asyncpg.Pool, user_name: str, role: str, *, actor: audit.Actor, now: datetime
) -> tuple[TokenRow, str]:
    """A new token for ``user_name`` in ``role``; (row, the token: shown only now)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not user_name.strip() or len(user_name) > 200:
        raise ValueError("user name must be 1-200 characters")
    token_id = secrets.token_hex(6)
    token = f"shl_{token_id}_{secrets.token_urlsafe(32)}"
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO api_tokens (token_id, user_name, role, token_hash, created_at)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING token_id, user_name, role, created_at, revoked_at, last_used_at""",
            token_id,
            user_name,
            role,
            token_hash(token),
            now,
        )
        await audit.append(
            conn, actor, "token.create", token_id, {"user": user_name, "role": role}, at=now
        )
    assert row is not None
    return TokenRow(**dict(row)), token


async def revoke_token(
    pool: asyncpg.Pool, token_id: str, *, actor: audit.Actor, now: datetime
) -> TokenRow | None:
    """Revoke at once (its next request is refused); None if unknown."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE token_id = $1
               RETURNING token_id, user_name, role, created_at, revoked_at, last_used_at""",
            token_id,
            now,
        )
        if row is None:
            return None
        await audit.append(
            conn,
            actor,
            "token.revoke",
            token_id,
            {"user": row["user_name"], "role": row["role"]},
            at=now,
        )
    return TokenRow(**dict(row))


async def list_tokens(conn: asyncpg.Connection | asyncpg.Pool) -> list[TokenRow]:
    rows = await conn.fetch(
        """SELECT token_id, user_name, role, created_at, revoked_at, last_used_at
           FROM api_tokens ORDER BY created_at, token_id"""
    )
    return [TokenRow(**dict(r)) for r in rows]


async def lookup(pool: asyncpg.Pool, token: str) -> TokenRow | None:
    """The live (not revoked) token row for a presented bearer token, else None."""
    row = await pool.fetchrow(
        """UPDATE api_tokens SET last_used_at = now()
           WHERE token_hash = $1 AND revoked_at IS NULL
           RETURNING token_id, user_name, role, created_at, revoked_at, last_used_at""",
        token_hash(token),
    )
    return None if row is None else TokenRow(**dict(row))

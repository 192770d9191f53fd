"""API keys: `uc_live_` + 43 random URL-safe characters, kept only as a SHA-256 hash.

A fast hash is the right tool here: the secret carries 256 bits of randomness, so there is nothing
for a slow password hash to protect against, and every request pays for the lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import attrs

from jobtracker.domain.errors import InvalidInput, NotAuthenticated
from jobtracker.store.base import ApiKey, Store, utc_now

PREFIX = "uc_live_"
SCOPES = frozenset({"owner", "worker"})


@attrs.frozen
class IssuedKey:
    """A key just created: the record and the secret, shown this once."""

    record: ApiKey
    secret: str


def hash_secret(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(secret: str) -> bool:
    """Cheap shape check before any lookup.

    A key is ASCII; a header's undecodable bytes arrive as surrogates, which cannot be hashed.
    """
    return secret.isascii() and secret.startswith(PREFIX) and 32 + len(PREFIX) <= len(secret) <= 128


async def issue_key(
    store: Store,
    name: str,
    scope: str = "owner",
    *,
    owners: Sequence[str] = (),
    all_owners: bool = False,
) -> IssuedKey:
    """Create and store a new key; the secret is returned once and never stored.

    A worker key is bound either to the jobs of `owners` (owner keys, active now) or, with
    `all_owners`, to every job: exactly one of the two.
    """
    if scope not in SCOPES:
        raise InvalidInput(f"scope: must be one of {', '.join(sorted(SCOPES))}")
    if not name or len(name) > 200:
        raise InvalidInput("name: must be 1 to 200 characters")
    await _check_binding(store, scope, owners, all_owners)
    secret = PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        key_id="key_" + secrets.token_hex(8),
        name=name,
        scope=scope,
        key_hash=hash_secret(secret),
        created_at=utc_now(),
        all_owners=all_owners,
        owners=owners,
    )
    await store.add_key(record)
    return IssuedKey(record, secret)


async def _check_binding(
    store: Store, scope: str, owners: Sequence[str], all_owners: bool
) -> None:
    if scope != "worker":
        if owners or all_owners:
            raise InvalidInput("owner: only a worker key is bound to owners")
        return
    if bool(owners) == all_owners:
        raise InvalidInput("owner: a worker key is bound to some owner keys or to all owners")
    for owner in owners:
        await check_owner_key(store, owner)


async def check_owner_key(store: Store, key_id: str) -> None:
    """`InvalidInput` naming `owner` unless `key_id` is an active owner-scope key."""
    key = await store.get_key(key_id)
    if key is None:
        raise InvalidInput(f"owner: no key has the id {key_id!r}")
    if not key.active:
        raise InvalidInput(f"owner: the key {key_id!r} is revoked")
    if key.scope != "owner":
        raise InvalidInput(f"owner: the key {key_id!r} is not an owner key")


async def authenticate(store: Store, secret: str | None) -> ApiKey:
    """The active key behind `secret`, or `NotAuthenticated`."""
    if not secret:
        raise NotAuthenticated("Missing API key: send it in the X-API-Key header")
    if looks_like_key(secret):
        digest = hash_secret(secret)
        key = await store.find_key(digest)
        # The lookup is by hash already; compare_digest keeps the final check constant-time too.
        if key is not None and key.active and hmac.compare_digest(key.key_hash, digest):
            return key
    raise NotAuthenticated("Invalid or revoked API key")

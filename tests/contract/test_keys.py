"""The key records every store keeps."""

from __future__ import annotations

from jobtracker.store import Store
from jobtracker.store.keys import hash_secret, issue_key


async def test_key_is_found_by_hash_and_revocation_sticks(store: Store) -> None:
    """A key is looked up by its hash, never its secret, and a revoked key stays revoked."""
    issued = await issue_key(store, "ci")
    found = await store.find_key(hash_secret(issued.secret))
    assert found is not None
    assert found.active
    assert found.key_id == issued.record.key_id
    assert await store.revoke_key(issued.record.key_id) is True
    revoked = await store.find_key(hash_secret(issued.secret))
    assert revoked is not None
    assert not revoked.active
    assert await store.revoke_key("key_nobody") is False
    assert [k.key_id for k in await store.list_keys()] == [issued.record.key_id]

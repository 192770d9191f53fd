"""Worker keys' bindings as every store keeps them, and worker keys made before bindings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.errors import InvalidInput
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.keys import hash_secret, issue_key
from tests.conftest import make_test_store
from tests.old_schema import (
    OWNER_SECRET,
    WORKER_SECRET,
    old_postgres_database,
    old_sqlite_database,
)


async def test_a_bound_worker_key_comes_back_with_its_owners(store: Store) -> None:
    """The lookup by hash, by id and the listing all carry the owners a worker key is bound to."""
    alice, bob = await issue_key(store, "alice"), await issue_key(store, "bob")
    owners = sorted([alice.record.key_id, bob.record.key_id])
    worker = await issue_key(store, "celery", "worker", owners=owners[::-1])
    found = await store.find_key(hash_secret(worker.secret))
    assert found is not None
    assert (found.all_owners, found.owners) == (False, tuple(owners))
    assert found.acts_for(alice.record.key_id)
    assert not found.acts_for("key_someone_else")
    assert await store.get_key(worker.record.key_id) == found
    listed = {key.key_id: key for key in await store.list_keys()}
    assert listed[worker.record.key_id] == found
    assert listed[alice.record.key_id].owners == ()


async def test_an_all_owners_worker_key_acts_for_every_owner(store: Store) -> None:
    """A worker key made with all_owners is stored so, and acts for any owner."""
    worker = await issue_key(store, "platform", "worker", all_owners=True)
    found = await store.find_key(hash_secret(worker.secret))
    assert found is not None
    assert (found.all_owners, found.owners) == (True, ())
    assert found.acts_for("key_anyone")
    assert await store.get_key("key_nobody") is None


@pytest.mark.parametrize(
    ("scope", "bound_to", "all_owners"),
    [("worker", False, False), ("worker", True, True), ("owner", True, False),
     ("owner", False, True)],
)
async def test_a_worker_key_is_bound_to_some_owners_or_all_and_an_owner_key_to_none(
    store: Store, scope: str, bound_to: bool, all_owners: bool
) -> None:
    """No binding, both bindings, or a binding on an owner key: refused, and no key is stored."""
    owner = await issue_key(store, "alice")
    owners = [owner.record.key_id] if bound_to else []
    with pytest.raises(InvalidInput, match=r"^owner: "):
        await issue_key(store, "celery", scope, owners=owners, all_owners=all_owners)
    assert [key.key_id for key in await store.list_keys()] == [owner.record.key_id]


async def test_a_worker_key_is_bound_only_to_active_owner_keys(store: Store) -> None:
    """An unknown id, a revoked key or another worker key cannot be a worker key's owner."""
    revoked = await issue_key(store, "gone")
    await store.revoke_key(revoked.record.key_id)
    platform = await issue_key(store, "platform", "worker", all_owners=True)
    refusals = {
        "key_nobody": "owner: no key has the id 'key_nobody'",
        revoked.record.key_id: f"owner: the key '{revoked.record.key_id}' is revoked",
        platform.record.key_id: f"owner: the key '{platform.record.key_id}' is not an owner key",
    }
    for key_id, detail in refusals.items():
        with pytest.raises(InvalidInput) as refused:
            await issue_key(store, "celery", "worker", owners=[key_id])
        assert refused.value.detail == detail
    assert len(await store.list_keys()) == 2


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_worker_keys_from_before_bindings_keep_working_for_all_owners(
    store_kind: str,
    tmp_path: Path,
    postgres_url: str | None,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    """A worker key stored by the previous schema still reports on its owners' jobs after the
    upgrade, is an all-owners key, and the upgraded store binds new worker keys."""
    if postgres_url is None:
        old_sqlite_database(tmp_path / "jobs.db")
    else:
        await old_postgres_database(postgres_url)
    store = make_test_store(store_kind, tmp_path, postgres_url)
    client = await aiohttp_client(create_app(Settings(), store=store))  # opening migrates
    owner, worker = {"X-API-Key": OWNER_SECRET}, {"X-API-Key": WORKER_SECRET}
    created = await client.post("/api/v1/jobs", json={"job_id": "after"}, headers=owner)
    appended = await client.post("/api/v1/jobs/after/events", json=[{"type": "started"}],
                                 headers=worker)
    assert (created.status, appended.status) == (201, 200)
    old = await store.find_key(hash_secret(WORKER_SECRET))
    assert old is not None
    assert (old.scope, old.all_owners, old.owners) == ("worker", True, ())
    new = await issue_key(store, "celery", "worker", owners=["key_oldowner"])
    assert {key.key_id: key.all_owners for key in await store.list_keys()} == {
        "key_oldowner": False, "key_oldworker": True, new.record.key_id: False}
    found = await store.find_key(hash_secret(new.secret))
    assert found is not None
    assert found.owners == ("key_oldowner",)

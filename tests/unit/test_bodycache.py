"""The finished-body cache stays within its byte budget and returns exactly what it holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobtracker.server.bodycache import CommitGate, FinishedBodies, FinishedBody

puts = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.binary(max_size=40)),
    max_size=30,
)


@given(budget=st.integers(min_value=0, max_value=100), items=puts)
def test_the_cache_never_holds_more_bytes_than_its_budget(
    budget: int, items: list[tuple[str, bytes]]
) -> None:
    """Whatever goes in, the bodies held add up to at most the budget."""
    cache = FinishedBodies(budget)
    for job_id, body in items:
        cache.put(job_id, FinishedBody("key_owner", body, "\"2\""), cache.replays)
        held = [cache.get(j) for j in "abcdef"]
        assert sum(len(h.body) for h in held if h is not None) <= budget


@given(items=puts)
def test_a_held_body_is_the_first_one_put_for_its_job(items: list[tuple[str, bytes]]) -> None:
    """A finished body never changes, so the cache keeps the first it was given for a job."""
    cache = FinishedBodies(10_000)
    first: dict[str, bytes] = {}
    for job_id, body in items:
        cache.put(job_id, FinishedBody("key_owner", body, "\"2\""), cache.replays)
        first.setdefault(job_id, body)
    assert {j: h.body for j in "abcdef" if (h := cache.get(j)) is not None} == first


def test_the_least_recently_read_body_leaves_first() -> None:
    """When the budget is full, the body nobody read for longest is dropped."""
    cache = FinishedBodies(budget=10)
    cache.put("old", FinishedBody("k", b"12345", "\"2\""), cache.replays)
    cache.put("new", FinishedBody("k", b"12345", "\"2\""), cache.replays)
    assert cache.get("old") is not None  # now "new" is the least recently read
    cache.put("newest", FinishedBody("k", b"12345", "\"2\""), cache.replays)
    assert cache.get("new") is None
    assert cache.get("old") is not None
    assert cache.get("newest") is not None
    assert len(cache) == 2


def test_a_replay_drops_the_bodies_it_may_have_changed() -> None:
    """A replay of one job drops that job's body; a replay of every job drops them all."""
    cache = FinishedBodies()
    for job_id in ("a", "b", "c"):
        cache.put(job_id, FinishedBody("k", b"{}", "\"2\""), cache.replays)
    cache.forget_replayed("b")
    assert [cache.get(j) is not None for j in "abc"] == [True, False, True]
    cache.forget_replayed(None)
    assert [cache.get(j) is not None for j in "abc"] == [False, False, False]
    assert len(cache) == 0


def test_a_body_read_before_a_replay_is_not_held_after_it() -> None:
    """A GET that read a finished job just before a replay was made live, and comes to hold the
    body just after the server dropped what the replay changed, must not hold what it read:
    every later GET would be answered with the body the replay repaired."""
    cache = FinishedBodies()
    seen = cache.replays  # the GET starts: it notes the replays, then reads the store
    cache.forget_replayed("other-job")  # a replay is made live meanwhile (any job's)
    cache.put("a", FinishedBody("k", b"{}", "\"2\""), seen)
    assert cache.get("a") is None
    cache.put("a", FinishedBody("k", b"{}", "\"2\""), cache.replays)  # the next GET holds it
    assert cache.get("a") is not None


def test_the_gate_refuses_a_running_body_read_before_a_replay() -> None:
    """The running bodies follow the same rule: one read before a replay is not held after it."""
    gate = CommitGate()
    ticket = gate.look()
    gate.forget_replayed(None)
    assert ticket != gate.look()

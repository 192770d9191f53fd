"""The finished-body cache stays within its byte budget and returns exactly what it holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobtracker.server.bodycache import FinishedBodies, FinishedBody

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
        cache.put(job_id, FinishedBody("key_owner", body, "\"2\""))
        held = [cache.get(j) for j in "abcdef"]
        assert sum(len(h.body) for h in held if h is not None) <= budget


@given(items=puts)
def test_a_held_body_is_the_first_one_put_for_its_job(items: list[tuple[str, bytes]]) -> None:
    """A finished body never changes, so the cache keeps the first it was given for a job."""
    cache = FinishedBodies(10_000)
    first: dict[str, bytes] = {}
    for job_id, body in items:
        cache.put(job_id, FinishedBody("key_owner", body, "\"2\""))
        first.setdefault(job_id, body)
    assert {j: h.body for j in "abcdef" if (h := cache.get(j)) is not None} == first


def test_the_least_recently_read_body_leaves_first() -> None:
    """When the budget is full, the body nobody read for longest is dropped."""
    cache = FinishedBodies(budget=10)
    cache.put("old", FinishedBody("k", b"12345", "\"2\""))
    cache.put("new", FinishedBody("k", b"12345", "\"2\""))
    assert cache.get("old") is not None  # now "new" is the least recently read
    cache.put("newest", FinishedBody("k", b"12345", "\"2\""))
    assert cache.get("new") is None
    assert cache.get("old") is not None
    assert cache.get("newest") is not None
    assert len(cache) == 2

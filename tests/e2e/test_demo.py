"""`jobtracker demo`: a real server, a worker in another process, the seed's polling loop."""

from __future__ import annotations

from jobtracker.cli.demo import run_demo
from tests.server.test_get_job import SEED_SUCCESS_RESULT


def test_demo_ends_with_the_seeds_success_counters() -> None:
    """The demo job goes PENDING → PROGRESS → SUCCESS with exactly the seed's example result."""
    lines: list[str] = []
    final = run_demo(out=lines.append, interval=0.1)
    assert final["status"] == "SUCCESS"
    assert final["result"] == SEED_SUCCESS_RESULT
    assert any(line.endswith(": PENDING") for line in lines)
    assert any(line.startswith(" Progress: ") for line in lines)

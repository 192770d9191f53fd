"""`jobtracker stats` on every store: the events and jobs it holds, and on disk what the log costs
per event, table by table."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from jobtracker.cli.main import main
from jobtracker.domain.events import Created, EmailSent, NewEvent, RowSucceeded, new_event_ids
from jobtracker.store import Store


async def _write_rows(store: Store, job_id: str, rows: int) -> None:
    await store.create_job(job_id, Created(owner="key_owner", total=rows))
    events = [each for row in range(1, rows + 1)
              for each in (RowSucceeded(row, f"r{row}@uni.edu", internal=False),
                           EmailSent(row, f"r{row}@uni.edu"))]
    items = [NewEvent(event_id, event)
             for event_id, event in zip(new_event_ids(len(events)), events, strict=True)]
    for start in range(0, len(items), 500):
        await store.append(job_id, items[start : start + 500])


async def test_stats_count_the_events_and_jobs_the_store_holds(store: Store) -> None:
    """Two jobs of 5 rows each: 2 creations + 20 row events, 2 jobs."""
    await _write_rows(store, "job-a", 5)
    await _write_rows(store, "job-b", 5)
    found = await store.storage_stats()
    assert (found.events, found.jobs) == (22, 2)


#: The tables that make up the log, with their indexes, in each store on disk.
LOG_TABLES = {"sqlite": frozenset({"log", "log_jobs"}),
              "postgres": frozenset({"log", "log_ids", "log_text_ids", "log_jobs"})}


async def test_stats_on_disk_show_the_log_growing_by_its_bytes_per_event(
    store: Store, store_kind: str
) -> None:
    """The log (events and their indexes) is part of the total and grows as events arrive; each
    of its indexes is named with the table it belongs to. memory:// says it has nothing on disk."""
    await _write_rows(store, "job-small", 1)
    before = await store.storage_stats()
    await _write_rows(store, "job-big", 3000)
    after = await store.storage_stats()
    if store_kind == "memory":
        assert (after.total_bytes, after.log_bytes, after.relations) == (0, 0, ())
        return
    assert 0 < before.log_bytes < after.log_bytes <= after.total_bytes
    per_event = after.per_event(after.log_bytes)
    assert per_event is not None
    assert 20 < per_event < 2000
    tables = LOG_TABLES[store_kind]
    log_parts = {each.name for each in after.relations if each.table in tables}
    assert tables <= log_parts
    assert len(log_parts) >= 3
    assert sum(each.bytes for each in after.relations if each.table in tables) == after.log_bytes


def test_stats_command_prints_bytes_per_event_for_a_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jobtracker stats` on a new file: counts, sizes and the table list; `--json` the same as
    one object."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert main(["migrate", "--store", url]) == 0
    capsys.readouterr()
    assert main(["stats", "--store", url]) == 0
    text = capsys.readouterr().out
    assert "events  0" in text
    assert "jobs    0" in text
    assert "log_by_event_id" in text
    assert main(["stats", "--store", url, "--json"]) == 0
    found = orjson.loads(capsys.readouterr().out)
    assert found["events"] == 0
    assert found["log_bytes_per_event"] is None
    assert {"name": "log", "table": "log", "index": False}.items() <= next(
        each for each in found["relations"] if each["name"] == "log").items()

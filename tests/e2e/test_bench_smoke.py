"""`scripts/bench.py --quick`: every benchmark runs (how fast is not judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench.py"


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def listed_names() -> list[str]:
    listing = bench("--list")
    assert listing.returncode == 0, listing.stderr
    return [line.split("\t")[0] for line in listing.stdout.splitlines()]


def verdict_of(name: str, table: str) -> str:
    # The table comes after the progress lines, which start with the names too.
    row = [line for line in table.splitlines() if line.startswith(name + " ")][-1]
    return "skipped" if " skipped " in row else "ran" if "ran (quick" in row else row


#: Processes the quick run is split over. Most of a quick round is load legs of fixed length
#: and waits, not CPU, so four at once on two cores take well under half the time of one.
SHARDS = 4


def test_quick_runs_every_benchmark_and_leaves_the_report_alone(tmp_path: Path) -> None:
    """--quick runs (or says why it skips) every benchmark, exits 0, and writes no report."""
    report = tmp_path / "BENCHMARKS.md"
    names = listed_names()
    assert "get-sqlite" in names
    shards = [
        subprocess.Popen(
            [sys.executable, str(BENCH), "--quick", "--output", str(report),
             *(arg for name in names[n::SHARDS] for arg in ("--only", name))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )
        for n in range(SHARDS)
    ]
    try:
        outputs = [shard.communicate(timeout=300)[0] for shard in shards]
    finally:
        for shard in shards:
            shard.kill()
    for shard, output in zip(shards, outputs, strict=True):
        assert shard.returncode == 0, output
    verdicts = {name: verdict_of(name, outputs[n % SHARDS]) for n, name in enumerate(names)}
    assert set(verdicts.values()) <= {"ran", "skipped"}, verdicts
    assert verdicts["get-sqlite"] == "ran"
    assert not report.exists()


def test_without_wrk_a_python_load_generator_stands_in_and_says_so(tmp_path: Path) -> None:
    """With no wrk on the PATH the GET benchmark still runs, and tells how to install wrk."""
    done = bench("--quick", "--only", "get-sqlite", env={"PATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert verdict_of("get-sqlite", done.stdout) == "ran"
    assert "apt-get install -y wrk" in done.stdout
    assert "Python load generator" in done.stdout

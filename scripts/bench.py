"""Run the benchmarks in scripts/benchmarks/, each beside its reference, and write BENCHMARKS.md.

    python scripts/bench.py                  # every benchmark, 3 rounds, rewrites BENCHMARKS.md
    python scripts/bench.py --only get       # one module (or one benchmark name), repeatable
    python scripts/bench.py --quick          # every benchmark runs once, small: a smoke test

A round measures the subject and its reference in the same run; the table shows medians over
rounds. `--quick` checks that every benchmark runs, not how fast, and never writes BENCHMARKS.md;
`--only` writes it only with `--write` (a partial table must not replace the full one by accident).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
# Benchmark modules import `jobtracker` and their own package `benchmarks`, whatever the cwd.
for _entry in (str(ROOT), str(ROOT / "scripts")):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

from benchmarks.base import BenchConfig, Benchmark, Round  # noqa: E402

PACKAGE = "benchmarks"
PG_ENV = "JOBTRACKER_BENCH_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


@attrs.frozen
class Found:
    """A benchmark and the module that defines it."""

    module: str
    benchmark: Benchmark


@attrs.frozen
class Outcome:
    """What running one benchmark gave: its rounds, or why it did not run."""

    found: Found
    rounds: tuple[Round, ...] = ()
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def ran(self) -> bool:
        """Whether every round completed."""
        return self.error is None and self.skipped is None and bool(self.rounds)

    def median(self, pick: str) -> float:
        """The median of 'subject', 'reference' or 'ratio' over the rounds."""
        if pick == "ratio":
            return statistics.median(_ratio(r) for r in self.rounds)
        return statistics.median(getattr(r, pick) for r in self.rounds)

    def extras(self) -> dict[str, float]:
        """Each extra figure's median over the rounds that report it."""
        names = dict.fromkeys(name for r in self.rounds for name in r.extras)
        return {
            name: statistics.median(r.extras[name] for r in self.rounds if name in r.extras)
            for name in names
        }

    def notes(self) -> list[str]:
        """The rounds' caveats, each once."""
        return list(dict.fromkeys(note for r in self.rounds for note in getattr(r, "notes", ())))


def _ratio(round_: Round) -> float:
    return round_.subject / round_.reference if round_.reference else float("nan")


def discover() -> tuple[list[Found], dict[str, str]]:
    """Every `BENCHMARKS` entry of every module in scripts/benchmarks/, in module order.

    A module that fails to import is returned with its traceback instead: the others still run.
    """
    package = importlib.import_module(PACKAGE)
    found: list[Found] = []
    broken: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        try:
            module = importlib.import_module(f"{PACKAGE}.{info.name}")
        except Exception:
            broken[info.name] = traceback.format_exc()
            continue
        found += [Found(info.name, b) for b in getattr(module, "BENCHMARKS", [])]
    names = [f.benchmark.name for f in found]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise SystemExit(f"bench: benchmark names used twice: {', '.join(doubles)}")
    return found, broken


def select(found: list[Found], only: Sequence[str]) -> list[Found]:
    """The benchmarks named by `--only` (a benchmark's name or its module's); all by default."""
    if not only:
        return found
    known = {f.benchmark.name for f in found} | {f.module for f in found}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return [f for f in found if f.benchmark.name in only or f.module in only]


def run_one(found: Found, config: BenchConfig) -> Outcome:
    """All rounds of one benchmark; an exception becomes the outcome's error, not a crash."""
    bench = found.benchmark
    # getattr: modules written against the first version of base.py may lack the newer fields.
    unavailable = getattr(bench, "unavailable", None)
    reason = unavailable() if unavailable else None
    if reason:
        print(f"{bench.name}: skipped, {reason}", flush=True)
        return Outcome(found, skipped=reason)
    started = time.monotonic()
    rounds: list[Round] = []
    try:
        for number in range(1, config.rounds + 1):
            round_ = bench.run(config)
            rounds.append(round_)
            print(f"{bench.name} round {number}/{config.rounds}: subject {_fmt(round_.subject)}, "
                  f"reference {_fmt(round_.reference)} {bench.unit}, "
                  f"ratio {_ratio(round_):.3f}x ({time.monotonic() - started:.1f} s)", flush=True)
    except Exception:
        error = traceback.format_exc()
        print(f"{bench.name}: FAILED\n{error}", file=sys.stderr, flush=True)
        return Outcome(found, tuple(rounds), error=error, seconds=time.monotonic() - started)
    return Outcome(found, tuple(rounds), seconds=time.monotonic() - started)


# --- reporting -------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _extras_text(extras: dict[str, float]) -> str:
    return ", ".join(f"{name} {_fmt(value)}" for name, value in extras.items())


def verdict(outcome: Outcome, quick: bool) -> str:
    """Whether the target is met, in one word or two."""
    if outcome.skipped:
        return "skipped"
    if not outcome.ran:
        return "FAILED"
    if quick:
        return "ran (quick: not judged)"
    meets = outcome.found.benchmark.meets
    if meets is None:
        return "no target"
    return "yes" if meets(outcome.median("ratio"), outcome.extras()) else "NO"


TABLE_HEAD = ("benchmark", "unit", "subject", "reference", "ratio", "target", "met", "more")


def table_rows(outcomes: Sequence[Outcome], quick: bool) -> list[tuple[str, ...]]:
    """One row per benchmark: medians, ratio, target and verdict."""
    rows = []
    for o in outcomes:
        b = o.found.benchmark
        if o.ran:
            figures = (_fmt(o.median("subject")), _fmt(o.median("reference")),
                       f"{o.median('ratio'):.2f}x")
        else:
            figures = ("-", "-", "-")
        unit = b.unit if b.higher_is_better else f"{b.unit} (lower is better)"
        more = _extras_text(o.extras()) if o.ran else (o.skipped or "error, see the log")
        rows.append((b.name, unit, *figures, b.target, verdict(o, quick), more))
    return rows


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """The table, aligned, on stdout."""
    widths = [max(len(row[i]) for row in (TABLE_HEAD, *rows)) for i in range(len(TABLE_HEAD))]
    for row in (TABLE_HEAD, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _run(cmd: Sequence[str]) -> str:
    """The first line a tool prints about itself (wrk -v prints to stderr and exits 1)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "not available"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def machine(load_at_start: tuple[float, ...] = ()) -> dict[str, str]:
    """What the figures were measured on, and how busy it was (others share it)."""
    import sqlite3

    import aiohttp

    pg_url = os.environ.get(PG_ENV, PG_DEFAULT)
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": _ram(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": _run(["psql", pg_url, "-Atc", "SHOW server_version"]),
        "wrk": _run(["wrk", "-v"]),
        "load average (1, 5, 15 min) at start": ", ".join(f"{x:.2f}" for x in load_at_start),
        "load average at the end": ", ".join(f"{x:.2f}" for x in _loadavg()),
    }


def _loadavg() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return ()


def markdown(outcomes: Sequence[Outcome], config: BenchConfig, argv: Sequence[str],
             load_at_start: tuple[float, ...] = ()) -> str:
    """BENCHMARKS.md: machine, date, how to reproduce, the table, each benchmark's detail."""
    rows = table_rows(outcomes, quick=config.quick)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join([".venv/bin/python", "scripts/bench.py", *argv])
    lines = [
        "# Benchmarks",
        "",
        f"Written by `scripts/bench.py` on {now}. Each round measures a subject and its reference "
        "in the same run on the same machine; the figures are medians over "
        f"{config.rounds} rounds, and the ratio (subject / reference, the median of the rounds' "
        "ratios) is what to read: this machine is shared and noisy, so absolute figures move "
        "from run to run. Each benchmark's section gives every round's figures beside its ratio.",
        "",
        "## Machine",
        "",
        *(f"- {name}: {value}" for name, value in machine(load_at_start).items()),
        "",
        "## Reproduce",
        "",
        "```sh",
        "bash scripts/dev.sh test                  # creates .venv with jobtracker and its tools",
        "apt-get update && apt-get install -y wrk  # the HTTP load generator",
        command,
        "```",
        "",
        "## Results",
        "",
        "| " + " | ".join(TABLE_HEAD) + " |",
        "|" + "---|" * len(TABLE_HEAD),
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows),
        "",
    ]
    for outcome in outcomes:
        lines += _detail(outcome)
    lines += ["## Closing note", "", *_closing(outcomes), ""]
    return "\n".join(lines)


def _detail(outcome: Outcome) -> list[str]:
    bench = outcome.found.benchmark
    lines = [f"### {bench.name}", "",
             f"- subject: {bench.subject}", f"- reference: {bench.reference}",
             f"- target: {bench.target}",
             f"- module: `scripts/benchmarks/{outcome.found.module}.py`"]
    if outcome.ran:
        lines.append(f"- rounds, subject / reference in {bench.unit}: " + "; ".join(
            f"{_fmt(r.subject)} / {_fmt(r.reference)} = {_ratio(r):.3f}x"
            for r in outcome.rounds))
        lines.append(f"- time: {outcome.seconds:.0f} s")
    elif outcome.skipped:
        lines.append(f"- skipped: {outcome.skipped}")
    else:
        lines.append("- failed: " + (outcome.error or "no rounds").strip().splitlines()[-1])
    lines += [f"- note: {note}" for note in outcome.notes()]
    return [*lines, ""]


def _closing(outcomes: Sequence[Outcome]) -> list[str]:
    lines = []
    for o in outcomes:
        if not o.ran:
            continue
        b = o.found.benchmark
        more = _extras_text(o.extras())
        lines.append(f"- {b.name}: {_fmt(o.median('subject'))} {b.unit} against "
                     f"{_fmt(o.median('reference'))} {b.unit} for the reference, "
                     f"{o.median('ratio'):.2f}x" + (f"; {more}" if more else "") + ".")
    return lines or ["- nothing ran."]


# --- entry point -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run this benchmark (or every benchmark of this module); repeatable")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one round: checks that each benchmark runs")
    parser.add_argument("--rounds", type=int, help="rounds per benchmark (default 3, quick 1)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--write", action="store_true",
                        help="rewrite BENCHMARKS.md even with --only")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="where to write the report (default: BENCHMARKS.md)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, maybe write; exit 1 when a benchmark failed to import or to run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    found, broken = discover()
    for module, error in broken.items():
        print(f"bench: cannot import scripts/benchmarks/{module}.py\n{error}", file=sys.stderr)
    selected = select(found, args.only)
    if args.list:
        for f in selected:
            print(f"{f.benchmark.name}\t{f.module}\t{f.benchmark.subject}")
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    load_at_start = _loadavg()
    with tempfile.TemporaryDirectory(prefix="jobtracker-bench-") as workdir:
        config = BenchConfig(quick=args.quick, rounds=rounds, workdir=workdir)
        outcomes = [run_one(f, config) for f in selected]
    print()
    print_table(table_rows(outcomes, quick=args.quick))
    for note in dict.fromkeys(n for o in outcomes for n in o.notes()):
        print(f"note: {note}")
    if not args.quick and (args.write or not args.only):
        report = markdown(outcomes, config, argv, load_at_start)
        args.output.write_text(report, encoding="utf-8")
        print(f"wrote {args.output}")
    return 1 if broken or any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())


"""What a benchmark is: one round measures the subject and its reference in the same run.

Machines here are shared and noisy, so only ratios taken within one round, and their medians over
rounds, mean anything. A module in this folder exposes `BENCHMARKS: list[Benchmark]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class BenchConfig:
    """How a run is asked for: `quick` shrinks sizes so every benchmark runs in seconds (CI)."""

    quick: bool = False
    rounds: int = 3
    workdir: str = "."


@attrs.frozen
class Round:
    """One measurement of the subject beside its reference, same unit, same conditions."""

    subject: float
    reference: float
    #: Further figures worth printing (p50/p99 latencies, RSS…), by name.
    extras: dict[str, float] = attrs.field(factory=dict)
    #: Caveats the reader of the table must see (e.g. "wrk missing, a Python stand-in ran").
    notes: tuple[str, ...] = ()


@attrs.frozen
class Benchmark:
    """A named measurement with its reference and its target."""

    name: str
    #: What the subject is, e.g. "GET /api/v1/jobs/{id} on SQLite, wrk -t1 -c32 -d10s".
    subject: str
    #: What it is compared with, e.g. "bare aiohttp handler, same bytes, same key check".
    reference: str
    #: The unit of `Round.subject` and `Round.reference`, e.g. "req/s".
    unit: str
    #: The target in words, e.g. ">= 0.7x the reference".
    target: str
    #: One round; returns the subject's and the reference's figures.
    run: Callable[[BenchConfig], Round]
    #: Whether the medians meet the target: called with (median ratio, median extras); None when
    #: no target is set (reported only: the table says "no target", never "yes").
    meets: Callable[[float, dict[str, float]], bool] | None
    #: True when a bigger figure is better (throughput); False for latency or time.
    higher_is_better: bool = True
    notes: dict[str, Any] = attrs.field(factory=dict)
    #: Why it cannot run on this machine or branch (None: it can); the runner skips it and says so.
    unavailable: Callable[[], str | None] | None = None

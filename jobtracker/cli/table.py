"""Rows for people and for pipes: aligned on a terminal, tab-separated otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of columns padded to the widest cell, two spaces apart."""
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print a header and its rows: aligned on a terminal, tab-separated for `cut -f`."""
    print("\n".join(aligned(rows) if sys.stdout.isatty() else map("\t".join, rows)))

"""Rebuild, verify or look back at projections from the log: `python scripts/replay.py --help`."""

from __future__ import annotations

import sys

from jobtracker.cli.replay import main

if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks for `scripts/bench.py`: every module here that defines `BENCHMARKS` is found."""

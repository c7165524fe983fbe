"""Benchmarks of the conversion hot path (not part of the test suite).

``uv run python -m benchmarks --help``: throughput, peak RSS and output size of the conversion
step alone and of the whole ``preprocess run-all`` on CellxGene-like synthetic files, against a
naive reference implementation, with a scaling mode and a per-stage profile.
"""

"""Benchmarks of the poller. They print figures and ratios; they assert nothing.

Run all with `python -m bench` (or `make bench`), or one at a time:
`python -m bench.unary`, `python -m bench.dial`, `python -m bench.fleet`.
See bench/README.md.
"""

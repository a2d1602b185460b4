"""Nexus benchmarks: gateway vs direct vs LiteLLM, and the HTTP client micro-benchmark.

Run ``make bench`` (``bench/run.py``); see ``bench/README.md``. Nothing here is collected
by ``make test``: benchmarks measure, they never assert timings.
"""

"""Benchmarks and real-data adapters (data caches live in ``bench/.cache/``, never committed)."""

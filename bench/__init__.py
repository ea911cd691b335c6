"""Benchmarks: the engine, the API, and the comparison with the other tools (see README)."""

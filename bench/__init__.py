"""Benchmarks and the soak test: run on demand, never part of `make test`."""

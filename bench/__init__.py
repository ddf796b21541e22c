"""Benchmarks against the Kubernetes API emulator (``make bench``); figures in docs/performance.md."""

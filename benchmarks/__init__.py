"""Benchmarks: long-running measurements that print figures, run by hand, never by pytest."""

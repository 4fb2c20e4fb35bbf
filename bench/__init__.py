"""Benchmarks that print and save their figures under bench/results/ (never timed assertions in tests)."""

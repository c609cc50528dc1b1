"""Benchmarks and the offline evaluation; each prints a table and writes JSON to results/."""

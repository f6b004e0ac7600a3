"""Benchmarks: each module prints a table of ratios measured side by side and writes JSON results."""

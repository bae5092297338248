"""Benchmarks: each prints its figures and ratios, measured side by side in one run."""

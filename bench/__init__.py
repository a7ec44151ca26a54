"""Benchmarks: the side-by-side serving benchmark, the model-level roofline benchmark and their pieces."""

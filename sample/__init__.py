"""Generated sample data for the demo, the tests and the benchmarks (no download needed)."""

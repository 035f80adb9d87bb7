"""Benchmarks (``./scripts/bench NAME``): each module measures the platform beside its baselines in the
same run and reports figures and targets; this package prints the table and writes the JSON."""

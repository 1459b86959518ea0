"""Training speed: the report of the peers benchmarks (results/speed)."""

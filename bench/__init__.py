"""d1deploy's benchmarks: `python -m bench` (see README.md); results in RESULTS.md."""

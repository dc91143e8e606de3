"""Speech-quality evaluation: metrics, alignment, reports, plots and baselines."""

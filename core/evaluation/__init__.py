"""Evaluation helpers: statistics with intervals, plots, and the human-readable report."""

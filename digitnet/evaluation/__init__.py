"""Scoring a model and showing the results: metrics, plots, report."""

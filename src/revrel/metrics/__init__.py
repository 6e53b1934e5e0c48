"""Metrics the tasks use: bootstrap statistics, likelihood probes, the code sandbox."""

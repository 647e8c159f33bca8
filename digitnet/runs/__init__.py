"""The run directory: its files, its lock, and the list of runs."""

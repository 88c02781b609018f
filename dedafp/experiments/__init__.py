"""Experiments built on training runs: configuration sweeps (in-process or as Ray tasks) and Ray itself."""

"""Shared helpers of the core and the tools: files, statistics, threads."""

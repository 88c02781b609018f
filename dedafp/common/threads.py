"""Torch's CPU thread count, set the same way by the command line and the Python API.

One thread was fastest on 2-core machines in every measurement (``shared/perf-notes.md``); torch's
default (all cores) was measured ~10x slower under load (lq1d iteration 0: 95 s against 9-10 s).
"""

from __future__ import annotations

import os

import torch

__all__ = ["DEFAULT_THREADS", "configure_threads"]

#: Threads used unless the caller or ``DEDAFP_THREADS`` says otherwise.
DEFAULT_THREADS = 1


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``, else ``$DEDAFP_THREADS``, else 1; returns the count.

    Raises ``ValueError`` for a count below 1 or above the machine's CPUs.
    """
    if threads is None:
        text = os.environ.get("DEDAFP_THREADS", str(DEFAULT_THREADS))
        try:
            threads = int(text)
        except ValueError:
            raise ValueError(f"DEDAFP_THREADS must be an integer, got {text!r}") from None
    cpus = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cpus:
        raise ValueError(f"threads must be an integer in 1..{cpus} (this machine's CPUs), got {threads!r}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    os.environ["DEDAFP_THREADS"] = str(threads)
    return threads

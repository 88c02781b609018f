"""Wall-clock timing that counts a GPU's queued work, and a record of the machine timings were taken on.

Usage::

    seconds, result = timed(lambda: flow.sample(t, 5000), device)
    start = time.perf_counter(); ...; seconds = seconds_since(start, device)
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["synchronize", "timed", "seconds_since", "machine_info"]

T = TypeVar("T")


def synchronize(device: torch.device | str | None) -> None:
    """Wait for ``device``'s queued work when it is a CUDA device (nothing to wait for otherwise)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[float, T]:
    """Wall-clock seconds of ``fn()`` (work queued on a CUDA ``device`` included) and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def seconds_since(start: float, device: torch.device | str | None = None) -> float:
    """Seconds from ``start`` (a ``time.perf_counter()`` reading) to the end of ``device``'s queued work."""
    synchronize(device)
    return time.perf_counter() - start


def machine_info(load_at_start: float | None = None) -> dict[str, object]:
    """Python and torch versions, torch threads and processor; with ``load_at_start`` (a 1-minute load
    average read when the measurement began) also ``load_average_1min`` at its start and now."""
    info: dict[str, object] = {"python": platform.python_version(), "torch": torch.__version__,
                               "threads": torch.get_num_threads(),
                               "processor": platform.processor() or platform.machine()}
    if load_at_start is not None:
        info["load_average_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    return info

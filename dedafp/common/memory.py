"""Memory a run or a simulation will need, checked before anything is allocated.

The estimates count the big tensors only (trajectories, buffers, one batch of hidden activations),
so they are lower bounds: a run refused here would certainly not fit, one accepted may still be
tight. Available memory is Linux's ``MemAvailable`` (``/proc/meminfo``), else ``os.sysconf``'s free
pages; for a CUDA device, the device's free memory.
"""

from __future__ import annotations

import os

__all__ = ["available_bytes", "check_fits", "format_bytes"]


def format_bytes(n: float) -> str:
    """``1.5 GB``-style text (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"


def available_bytes(device: str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device`` now, or None if unknown."""
    if str(device).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(needed: float, what: str, fix: str, device: str = "cpu") -> None:
    """``ValueError`` with the estimate if ``needed`` bytes exceed what ``device`` has available."""
    available = available_bytes(device)
    if available is not None and needed > available:
        raise ValueError(f"{what} needs at least {format_bytes(needed)} of memory (estimated), more than the "
                         f"{format_bytes(available)} available on {device}; {fix}")

"""Summaries of repeated measurements (seeds, repeats) and the CSV tables they are reported in.

* :func:`mean_sd` and :func:`format_mean_sd`: mean ± sample sd over seeds, NaNs left out;
* :func:`mean_sd_curve`: per iteration, the mean and sd over the runs that measured it;
* :func:`quartile_summary`: median, quartiles and sd of repeated timings;
* :func:`write_csv`: rows of dicts as a CSV file, written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dedafp.common.files import atomic_write

__all__ = ["mean_sd", "format_mean_sd", "mean_sd_curve", "quartile_summary", "write_csv"]


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the finite ``values``: ``(mean, sd)``.

    NaN and ±inf are left out; the mean is NaN when nothing finite remains, the sd when fewer than two do.
    """
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size == 0:
        return math.nan, math.nan
    sd = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return float(finite.mean()), sd


def format_mean_sd(mean: float, sd: float) -> str:
    """``mean ± sd`` with sd to two significant digits and the mean to the same decimals (``n/a``: no mean;
    the mean alone, to 4 significant digits, when sd is NaN or 0)."""
    if not math.isfinite(mean):
        return "n/a"
    if not (math.isfinite(sd) and sd > 0):
        return f"{mean:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(sd)))
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def mean_sd_curve(iterations: Sequence[Sequence[int]], values: Sequence[Sequence[float]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sd over runs per iteration: run r measured ``values[r][j]`` at iteration ``iterations[r][j]``.

    Returns the iterations ``[K]`` (int) where some run has a finite value, the mean ``[K]`` and the sd
    ``[K]`` over the runs there (0 where only one run measured it).
    """
    k = np.array(sorted({i for run in iterations for i in run}), dtype=int)
    table = np.full((len(iterations), len(k)), np.nan)
    for row, (steps, measured) in enumerate(zip(iterations, values, strict=True)):
        table[row, np.searchsorted(k, steps)] = measured
    stats = np.array([mean_sd(list(column)) for column in table.T]).reshape(-1, 2)
    finite = np.isfinite(stats[:, 0])
    return k[finite], stats[finite, 0], np.nan_to_num(stats[finite, 1])


def quartile_summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles and sd (0 for one value) of repeated measurements, and the values themselves."""
    q25, q50, q75 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"median": q50, "q25": q25, "q75": q75, "sd": sd, "values": [float(v) for v in values]}


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """``rows`` as a CSV file with a header, written atomically.

    ``columns``: the columns, in order (a row's missing keys are written empty, its other keys left out);
    None: every key of any row, in order of first appearance.
    """
    fieldnames = list(dict.fromkeys(key for row in rows for key in row)) if columns is None else list(columns)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(buffer.getvalue(), Path(path))

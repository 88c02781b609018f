"""Writing files so that a crash never leaves a half-written one, and reading metrics CSVs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "atomic_write", "write_json", "read_csv_rows"]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write(text: str, path: Path) -> None:
    """Write ``text`` through a temporary file and an atomic rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(data: Any, path: Path) -> None:
    """``data`` as indented JSON, atomically."""
    atomic_write(json.dumps(data, indent=2) + "\n", path)


def read_csv_rows(path: str | Path) -> list[dict[str, float]]:
    """The rows of a numeric CSV as dicts of floats; ``ValueError`` naming the file and line if a row is
    short, long or not numeric (a truncated file)."""
    with open(path) as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            try:
                if None in row or None in row.values():
                    raise ValueError("wrong number of fields")
                rows.append({k: float(v) for k, v in row.items()})
            except ValueError as error:
                raise ValueError(f"{path} line {reader.line_num} is damaged ({error}); it may be truncated") from None
        return rows

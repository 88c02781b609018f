"""SHA-256 checksums of a run folder's checkpoints, in ``checkpoints/SHA256SUMS``.

The file has ``sha256sum``'s format (``<hex digest>  <file name>``, one line each), so
``cd RUN/checkpoints && sha256sum -c SHA256SUMS`` checks it too. It is rewritten atomically after
each checkpoint is written and before that checkpoint takes its final name, so every checkpoint a
run wrote is listed: a file that is listed and differs is corrupted, never trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dedafp.common.files import atomic_write

__all__ = ["MANIFEST", "sha256_of", "read_manifest", "record_checksum", "checksum_problem"]

MANIFEST = "SHA256SUMS"


def sha256_of(path: Path) -> str:
    """The hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, str] | None:
    """File name -> digest from ``folder/SHA256SUMS``; None if there is no such file."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    entries = {}
    for line in path.read_text(errors="replace").splitlines():
        digest, sep, name = line.partition("  ")
        if sep and len(digest) == 64:
            entries[name.strip()] = digest
    return entries


def record_checksum(folder: Path, name: str, digest: str) -> None:
    """Set ``name``'s digest in ``folder/SHA256SUMS`` (rewritten atomically, names sorted)."""
    entries = read_manifest(folder) or {}
    entries[name] = digest
    atomic_write("".join(f"{entries[n]}  {n}\n" for n in sorted(entries)), Path(folder) / MANIFEST)


def checksum_problem(path: Path, manifest: dict[str, str] | None) -> str | None:
    """Why ``path`` cannot be trusted (``"sha256 mismatch: ..."``), or None: listed and matching, or not
    listed at all (written before checksums existed: then only loading it can judge it)."""
    expected = None if manifest is None else manifest.get(path.name)
    if expected is None:
        return None
    actual = sha256_of(path)
    if actual != expected:
        return f"sha256 mismatch (recorded {expected[:12]}..., file {actual[:12]}...)"
    return None

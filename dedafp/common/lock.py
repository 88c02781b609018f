"""One writer per run folder: an exclusive lock (the maintained ``filelock`` library) with its holder
written beside it.

``RUN/.dedafp.lock`` is locked with ``flock`` for as long as a writer works in ``RUN`` and removed on
release (a finished folder holds no lock file); the kernel releases the lock on any exit, ``kill -9``
included, so it is never left held by a dead process (the file then stays, unlocked, until the next
writer takes and removes it).
``RUN/.dedafp.lock.json`` names the holder (pid, host, start time, command) so that a refused second
writer can say who holds the folder; a holder file left by a writer that died without releasing
(the pid is no longer running) is a *stale* lock: the next writer takes the lock, replaces the
holder file and reports what it recovered.

Usage::

    with RunLock(run_dir) as lock:      # RunLockedError (a RuntimeError) if another process holds it
        ...                             # lock.recovered: the dead holder's record, or None
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dedafp.common.files import atomic_write

__all__ = ["RunLock", "RunLockedError", "LOCK_FILES", "read_holder", "pid_running"]

LOCK_NAME = ".dedafp.lock"
HOLDER_NAME = ".dedafp.lock.json"
#: Files a lock leaves in a run folder (never counted as the folder's contents).
LOCK_FILES = (LOCK_NAME, HOLDER_NAME, HOLDER_NAME + ".tmp")


class RunLockedError(RuntimeError):
    """Another process is writing the run folder."""


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # it exists, owned by someone else
        return True
    return True


def read_holder(run_dir: Path) -> dict[str, Any] | None:
    """The holder record of ``run_dir``'s lock (``pid``, ``host``, ``started``, ``command``), or None."""
    try:
        record = json.loads((Path(run_dir) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_holder(record: dict[str, Any] | None) -> str:
    """``pid 123 on host, since 2026-12-01 18:04:38 UTC (dedafp train ...)`` or ``an unknown process``."""
    if record is None:
        return "an unknown process (no holder record)"
    started = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    command = f" ({record['command']})" if record.get("command") else ""
    return f"pid {record.get('pid')} on {record.get('host')}, since {when}{command}"


class RunLock:
    """The exclusive writer lock of a run folder (the folder must exist)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK_NAME), timeout=0, thread_local=False)
        #: The holder record of a dead writer whose lock this one recovered, else None.
        self.recovered: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        """Take the lock at once or raise :class:`RunLockedError` naming the holder."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self._raise_locked()
        except OSError as error:
            raise RunLockedError(f"cannot lock {self.run_dir / LOCK_NAME}: {error.strerror or error}") from None
        previous = read_holder(self.run_dir)
        if previous is not None and previous.get("pid") != os.getpid():
            self.recovered = previous          # we hold the flock, so that writer is gone
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(["dedafp", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("dedafp")
                  else " ".join(sys.argv)}
        try:
            atomic_write(json.dumps(record) + "\n", self.run_dir / HOLDER_NAME)
        except OSError:
            self._lock.release()
            raise
        return self

    def check_free(self) -> None:
        """Raise :class:`RunLockedError` naming the holder if another process holds the lock; else
        return without taking it (nothing is written)."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self._raise_locked()
        except OSError as error:
            raise RunLockedError(f"cannot lock {self.run_dir / LOCK_NAME}: {error.strerror or error}") from None
        self._lock.release()

    def _raise_locked(self) -> None:
        holder = read_holder(self.run_dir)
        dead = ""
        if holder is not None and holder.get("host") == socket.gethostname() \
                and isinstance(holder.get("pid"), int) and not pid_running(holder["pid"]):
            dead = " (that pid is no longer running: a process it started may still hold the lock)"
        raise RunLockedError(f"{self.run_dir} is being written by {describe_holder(holder)}{dead}; "
                             f"wait for it to finish or choose another folder") from None

    def release(self) -> None:
        """Remove the holder record and the lock file, then release the lock. The file goes while it is
        still locked: a writer that opened it meanwhile finds its inode unlinked once it gets the lock
        and does not count itself the holder (filelock checks), so two writers never hold one folder."""
        if not self._lock.is_locked:
            return
        try:
            (self.run_dir / HOLDER_NAME).unlink(missing_ok=True)
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
        finally:
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

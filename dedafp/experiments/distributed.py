"""Optional Ray support: one place that imports Ray, starts or joins a cluster, and shuts it down.

Everything else in dedafp runs in-process with no extra service; Ray is only needed for
``--backend ray`` (install it with ``pip install 'dedafp[ray]'``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from types import ModuleType

BACKENDS = ("local", "ray")
_ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-]+:\d{1,5})$")


def require_ray() -> ModuleType:
    """Import Ray, or fail with one line naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray backend needs Ray: pip install 'dedafp[ray]'") from None
    return ray


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def check_address(address: str | None) -> str | None:
    """Validate a Ray address: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (None starts a local instance)."""
    if address is not None and not _ADDRESS.match(address):
        raise ValueError(f"address must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
    return address


def check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Yield the ``ray`` module connected to a cluster.

    Without ``address`` a local Ray instance is started (``num_cpus`` caps it) and shut down on exit;
    with one, the existing cluster is joined and only this driver disconnects. If Ray is already
    initialised in this process (e.g. by the caller), it is reused and left running.
    """
    ray = require_ray()
    check_address(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(num_cpus=num_cpus, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()

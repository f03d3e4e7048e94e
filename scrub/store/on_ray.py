"""Running tasks on Ray: connecting (a local cluster or an address), resources per task, and
collecting results as tasks finish. Ray is an optional extra (``pip install "scrub[ray]"``);
nothing here is imported unless a sweep or a sharded evaluation asks for ``executor="ray"``.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlparse

from scrub.errors import ScrubError

__all__ = ["RayError", "connect", "run_tasks", "task_device"]


class RayError(ScrubError, RuntimeError):
    """Ray is missing, or the cluster named cannot be reached."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayError('executor="ray" needs Ray: pip install "scrub[ray]" (or pip install "ray>=2"), '
                       'or use executor="local"') from None
    return ray


def _check_answers(address: str, timeout: float = 5.0) -> None:
    """Refuse an address whose host does not accept a connection (before Ray waits a minute on it)."""
    text = address if "://" in address else f"tcp://{address}"
    parsed = urlparse(text)
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise RayError(f"Ray address {address!r} is not host:port (or ray://host:port); give e.g. 10.0.0.5:6379, "
                       f"'auto' for the cluster on this machine, or no address to start a local one")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise RayError(
            f"the Ray cluster at {address!r} does not answer ({err.strerror or err}); start it (ray start --head) "
            f"or check the address. Nothing was computed; the store is unchanged and a later run resumes it"
        ) from None


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Connect to Ray: the running session if there is one, else ``address`` (``"auto"``,
    ``host:port`` or ``ray://host:port``), else a new local cluster (``num_cpus`` workers).

    Raises:
        RayError: Ray is not installed, or the address does not answer.
    """
    ray = _ray()
    remote = address not in (None, "", "local")
    if remote and address != "auto":
        _check_answers(address)  # even when a session is running: a wrong address is a mistake to report
    if ray.is_initialized():
        return
    if remote:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RayError(f"cannot connect to the Ray cluster at {address!r}: {err}; nothing was computed") from None
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


def task_device() -> str:
    """The device type each task runs on: ``cuda`` when the cluster has GPUs, else ``cpu``."""
    ray = _ray()
    return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


def run_tasks(fn: Callable, jobs: Sequence[tuple[tuple, Any]], *, max_retries: int,
              on_done: Callable[[Any, Any], None], shared: Sequence[Any] = ()) -> None:
    """Run ``fn(*shared, *args)`` for each ``(args, tag)`` of ``jobs`` as Ray tasks (one GPU each
    when the cluster has GPUs, else one CPU), calling ``on_done(tag, value)`` as each finishes.
    ``shared`` values (models) are put in Ray's object store once. A task whose worker dies is
    retried up to ``max_retries`` times; an exception raised by ``fn`` is not retried and is raised
    here (the other tasks' results are kept: they were written by the tasks themselves)."""
    ray = _ray()
    resources = {"num_gpus": 1} if task_device() == "cuda" else {"num_cpus": 1}
    remote = ray.remote(fn).options(max_retries=max_retries, retry_exceptions=False, **resources)
    refs = [ray.put(value) for value in shared]
    pending = {remote.remote(*refs, *args): tag for args, tag in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                tag = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else None
                    raise (cause or err) from None
                except ray.exceptions.RayError as err:  # a worker lost more often than max_retries, ...
                    raise RayError(f"a Ray task failed ({type(err).__name__}: {err}); finished cells are in the "
                                   f"store, run again to compute the rest") from None
                on_done(tag, value)
    finally:
        for ref in pending:
            ray.cancel(ref)


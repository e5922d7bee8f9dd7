"""Where runs execute: worker processes of this node (:class:`LocalExecutor`) or a Dask cluster (:class:`DaskExecutor`).

Both run :func:`~slicebox_lab.apps.execute.run_app` on a :class:`~slicebox_lab.apps.execute.RunSpec` and give
a :class:`Handle` to wait on, take the outcome from, or stop.  Local runs use a pool of their own
(``SliceboxApp.app_workers`` processes), not the ingest's: a run takes seconds to hours, an image's
validation milliseconds, and two long runs on the ingest's two workers would stop every upload.  A
worker killed mid-run (out of memory, a cancel) fails that run only and is replaced.  On Dask the
workers must see the node's storage folder and its spool (the same machine, or a shared file system).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from ..errors import InvalidInput
from ..workers.pool import Call, WorkerFailed, WorkerPool
from .execute import Outcome, RunSpec, run_app

__all__ = ["DaskExecutor", "Executor", "Handle", "LocalExecutor", "executor_for"]


class Handle(Protocol):
    def wait(self, timeout: float) -> bool:
        """Whether the run ended within ``timeout`` seconds."""
        ...

    def outcome(self) -> Outcome:
        """The run's outcome (a failed one when the process running it died)."""
        ...

    def stop(self) -> None:
        """Stop the run (kill its process, cancel its task)."""
        ...


class Executor(Protocol):
    name: str

    def submit(self, spec: RunSpec) -> Handle: ...

    def close(self) -> None: ...


class _LocalHandle:
    def __init__(self, call: Call[Outcome]) -> None:
        self.call = call

    def wait(self, timeout: float) -> bool:
        return self.call.wait(timeout)

    def outcome(self) -> Outcome:
        try:
            return self.call.result()
        except WorkerFailed as error:
            return Outcome(ok=False, error=f"the app's process died: {error.message}")

    def stop(self) -> None:
        """Kill the process, then take its (failed) answer: that hands the pool its replacement.  Without
        it the dead worker never went back to the pool, and the next run waited for it for ever."""
        self.call.terminate()
        self.call.settle()


class LocalExecutor:
    """``workers`` processes of this node for apps (0: in the calling thread, for debugging)."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.pool = WorkerPool(workers)
        self._lock = threading.Lock()

    def submit(self, spec: RunSpec) -> Handle:
        return _LocalHandle(self.pool.start(run_app, spec))

    def close(self) -> None:
        self.pool.close(timeout=5.0)


class _DaskHandle:
    def __init__(self, future: Any) -> None:
        self.future = future

    def wait(self, timeout: float) -> bool:
        from distributed import wait

        try:
            wait(self.future, timeout=timeout)
        except TimeoutError:
            return False
        except Exception:  # noqa: BLE001 - a lost worker or scheduler: outcome() says so
            return True
        return bool(self.future.done())

    def outcome(self) -> Outcome:
        try:
            result = self.future.result()
        except Exception as error:  # noqa: BLE001 - the Dask worker died or the scheduler is gone
            return Outcome(ok=False, error=f"the Dask task failed: {type(error).__name__}: {error}")
        return result if isinstance(result, Outcome) else Outcome(ok=False, error=f"the Dask task returned {result!r}")

    def stop(self) -> None:
        self.future.cancel()


class DaskExecutor:
    """Runs on a Dask cluster: ``dask://host:port`` (or ``tcp://``) or a ``distributed.Client``.

    A stopped run's task is cancelled: Dask drops it, and a task already running on a worker thread
    finishes there unobserved (Dask cannot interrupt a thread); its results go to a folder the node has
    already removed, so nothing of it is stored."""

    name = "dask"

    def __init__(self, address_or_client: Any) -> None:
        from distributed import Client

        if isinstance(address_or_client, Client):
            self.client, self._owned = address_or_client, False
        else:
            address = str(address_or_client)
            if address.startswith("dask://"):
                address = "tcp://" + address[len("dask://") :]
            self.client, self._owned = Client(address, timeout=30, set_as_default=False), True

    def submit(self, spec: RunSpec) -> Handle:
        return _DaskHandle(self.client.submit(run_app, spec, pure=False))

    def close(self) -> None:
        if self._owned:
            self.client.close()


def executor_for(setting: Any, workers: int) -> Executor:
    """The executor of ``SliceboxApp.app_executor``: "" or "local" (worker processes), "dask://host:port",
    or a ``distributed.Client``."""
    if setting is None or setting in ("", "local"):
        return LocalExecutor(workers)
    if isinstance(setting, str) and not setting.startswith(("dask://", "tcp://", "tls://")):
        raise InvalidInput(f"app_executor must be 'local' or 'dask://host:port', not {setting!r}")
    return DaskExecutor(setting)

"""In-flight leases: a running job's claim in Redis, renewed from one thread per process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from worker.store import Store

log = structlog.get_logger(__name__)


class Leases:
    """Keeps the in-flight leases of this process's running jobs alive from one thread.

    A job being executed holds a short lease in Redis; if its process dies, the lease runs out
    and the reaper sends the job again. The lease is renewed while the job runs, however long
    its API call takes.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, job_id: str) -> Iterator[None]:
        """Renew the job's lease until the block ends."""
        with self._lock:
            self._held.add(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew, name="signq-leases", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def _renew(self) -> None:
        lease_ms = int(self.store.settings.lease_seconds * 1000)
        stop = threading.Event()
        while not stop.wait(lease_ms / 3000):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                self.store.renew(lease_ms, held)
            except Exception:
                log.warning("lease_renewal_failed", jobs=len(held), exc_info=True)

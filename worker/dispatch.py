"""The one seam through which signq sends work to workers: job messages, poll chunks, the
reaper and the cleanup. The broker's implementation lives in ``worker.broker``; tests and the
demo use ``worker.testing.RecordingDispatcher`` to run what is sent in their own order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Dispatcher(Protocol):
    """Sends work; every service takes one instead of a callable of its own."""

    def jobs(self, job_ids: Sequence[str]) -> None:
        """One run of each job (the outbox keeps each until its run starts)."""

    def poll(self, members: list[str]) -> None:
        """A chunk of due signatures to poll."""

    def reap(self, full: bool) -> None:
        """One reaper pass."""

    def cleanup(self) -> None:
        """The periodic cleanup."""

    def webhooks(self, delivery_ids: Sequence[str]) -> None:
        """One attempt of each webhook delivery."""

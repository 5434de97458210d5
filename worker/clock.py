"""The clock the core waits on: a monotonic reading and a sleep, as one object, so a test hands
the core a FakeClock (``worker.testing``) and lets time pass without sleeping.

Deadlines that other processes compare (leases, retries, polls, probes) read Redis's clock
instead (``Store.time_ms`` and ``lib.lua``'s NOW): no host's clock sets them.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic scale, and a wait of some of them."""

    def __call__(self) -> float:
        """Now, in monotonic seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        ...


class SystemClock:
    """This host's monotonic clock and ``time.sleep``."""

    def __call__(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block the thread for ``seconds``."""
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()

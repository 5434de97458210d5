"""One run of a job: what was claimed, the clock it reads, and the schedules of its retries."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from worker.jsms.credentials import Credentials
from worker.jsms.errors import JsmsError, RateLimited
from worker.records import JobRecord


class RetryLater(Exception):
    """Run the job again after ``delay_ms``; its record already says why."""

    def __init__(self, reason: str, delay_ms: int) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


@dataclass(frozen=True)
class Attempt:
    """One run of a job: its record as claimed, and Redis's clock at the claim."""

    job: JobRecord
    creds: Credentials
    previous: str
    started_ms: int
    clock: Callable[[], float]
    _started: float
    # An unconfirmed create of the account may have an audit pending: a 50103 is not proof.
    probing: bool = False

    def now_ms(self) -> int:
        """Redis's clock now, projected from the claim by this host's monotonic clock."""
        return self.started_ms + int((self.clock() - self._started) * 1000)


def uncertain_delay(retries: int, error: JsmsError, window: float) -> float:
    """The short schedule of uncertain retries: at once, then doubling from 0.25 s up to a
    tenth of the window, or what a 429 asked for."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return error.retry_after
    if retries == 0:
        return 0.0
    cap = max(0.25, window / 10)
    return float(min(cap, 0.25 * 2 ** (retries - 1)))


def undecided(attempt: Attempt) -> str:
    """Why a submission is given up as unconfirmed."""
    why = "no decisive answer within the uncertain window"
    if attempt.probing:
        why += " (an earlier unconfirmed create's audit may have been the pending one)"
    return why


def need_sign_id(sign_id: int | None) -> int:
    """The job's sign id, which its op requires."""
    if sign_id is None:
        raise ValueError("job has no sign_id")
    return sign_id


def backoff(attempts: int, low: float, high: float) -> int:
    """Exponential back-off with full jitter, in ms."""
    ceiling = min(high, low * 2 ** max(0, attempts - 1))
    return int(1000 * random.uniform(low, max(low, ceiling)))  # noqa: S311 - jitter

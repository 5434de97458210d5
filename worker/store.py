"""Redis state access: the connection and signq's Lua scripts, each one atomic step.

Scripts live in ``worker/lua/``; each is registered once, with the key builders of
``worker.keys`` and the shared library ``lib.lua`` (gate acquire/park/release, state indexes,
event publishing) in front of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import redis

from worker.connections import redis_client
from worker.keys import Keys
from worker.settings import RateLimits, Settings


def text(value: Any) -> str:
    """A reply of the decoding client as str (redis-py types replies as bytes | str)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def texts(values: Any) -> list[str]:
    """A list reply as a list of str."""
    return [text(v) for v in values or ()]


def fields(value: Any) -> dict[str, str]:
    """A hash reply as a dict of str."""
    return {text(k): text(v) for k, v in (value or {}).items()}


@dataclass
class Change:
    """One atomic change to a job (see ``lua/apply.lua``); only the parts that are set apply."""

    id: str
    from_: list[str] | None = None
    to: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    # Run again this many ms from now (Redis's clock), owned by the outbox meanwhile.
    retry_in: int | None = None
    # A field set to Redis's time in ms, unless it is set already (when a wait began).
    stamp: str | None = None
    lease_clear: bool = False
    unpark: bool = False
    wait: bool = False
    pause: dict[str, str] | None = None
    block: dict[str, Any] | None = None
    unblock: str | None = None
    release: bool = False
    # Probe mode on (an unconfirmed create handed the gate on) / off (the API accepted a
    # submission: nothing of the account's was pending).
    probing: bool = False
    proof: bool = False
    track: dict[str, Any] | None = None
    untrack: int | None = None
    terminal: int | None = None
    events: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The spec the script reads; empty parts are left out."""
        spec = {k: v for k, v in asdict(self).items() if v not in (None, False, [], {})}
        if self.from_ is not None:
            spec["from"] = spec.pop("from_")
        if self.untrack is not None:
            spec["untrack"] = str(self.untrack)  # never a Lua number: ids may exceed 2^53
        return json.dumps(spec, ensure_ascii=False)


@dataclass(frozen=True)
class Applied:
    """What ``apply`` did: whether the compare-and-set held, the state before, the next job."""

    applied: bool
    previous: str
    next_job: str | None


@dataclass(frozen=True)
class Claim:
    """What ``start`` decided for a job: ``run`` it (with what the script read), or why not
    (``throttled`` for ``wait_ms``, ``settled``, ``busy``, ``parked``, ``early``, ``paused``,
    ``no_account``, ``missing``)."""

    outcome: str
    wait_ms: int = 0
    previous: str = ""
    app_key: str = ""
    stored_secret: str = field(default="", repr=False)
    snapshot: dict[str, Any] = field(default_factory=dict)
    clock_ms: int = 0
    probing: bool = False


@dataclass(frozen=True)
class PollClaim:
    """What ``poll`` decided for a signature: ``run`` (with the account's stored credentials),
    ``throttled`` for ``wait_ms``, ``paused`` or ``no_account``."""

    outcome: str
    wait_ms: int = 0
    app_key: str = ""
    stored_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class DueClaim:
    """Signatures claimed for polling, when each was due, and Redis's clock at the claim."""

    now_ms: int
    members: list[str]
    due_at: list[float]


@dataclass(frozen=True)
class ReapMoves:
    """One reaper pass's moves into the outbox, and the outbox entries now due."""

    expired_leases: int
    probes: int
    due: list[str]


@dataclass(frozen=True)
class Intake:
    """What ``submit`` did with one job spec: ``queued``/``parked``/``duplicate`` (``value``
    the job id), ``no_account`` or ``full``."""

    outcome: str
    value: str


@dataclass(frozen=True)
class Repair:
    """What ``repair`` did to an account's gate (``ok``: nothing to do), and the job it
    handed the gate to, whose message the caller sends."""

    what: str
    next_job: str | None


@dataclass(frozen=True)
class Observed:
    """How an observed status compared with the tracked one (``same``, ``changed``, ``gone``,
    ``untracked``, ...), and the job the account's gate went to, if it was released."""

    what: str
    next_job: str | None


@dataclass(frozen=True)
class Retried:
    """A retry's new state (``queued``, ``parked`` or ``refused``) and the state before."""

    state: str
    before: str


@dataclass(frozen=True)
class AccountFlip:
    """A pause or resume: ``paused``/``resumed`` or why not, and the jobs it re-queued."""

    status: str
    queued: list[str]


class Store:
    """One process's Redis connection and registered scripts, each behind a typed method."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        # Told the types of the events each applied change published (the runtime counts them
        # in its metrics; the store itself knows nothing of metrics).
        self.on_published: Callable[[list[str]], object] = lambda _types: None
        self.redis: redis.Redis = client or redis_client(settings)
        # Images are bytes: a second pool to the same server, without decoding.
        if client is None:
            self.raw: redis.Redis = redis_client(settings, decode=False)
        else:
            pool = client.connection_pool
            self.raw = redis.Redis(
                connection_pool=type(pool)(
                    connection_class=pool.connection_class,
                    **{**pool.connection_kwargs, "decode_responses": False},
                )
            )
        library = self.keys.lua() + "\n" + _lua("lib")
        header = "local P = ARGV[1]\n"
        self._scripts = {
            name: self.redis.register_script(header + library + "\n" + _lua(name))
            for name in (
                "submit",
                "start",
                "apply",
                "account",
                "repair",
                "claim",
                "poll",
                "observe",
                "retry",
                "renew",
                "reap",
                "sent",
                "lead",
                "resign",
                "wh_fanout",
                "wh_enqueue",
                "wh_claim",
                "wh_settle",
            )
        }

    def _run(self, name: str, *args: object, pipe: Any = None) -> Any:
        """Run a script with the common arguments (prefix, events MAXLEN, outbox grace) first."""
        s = self.settings
        argv: list[Any] = [s.prefix, s.events_maxlen, int(s.outbox_grace_seconds * 1000), *args]
        return self._scripts[name](args=argv, client=pipe or self.redis)

    def script(self, name: str) -> Callable[..., Any]:
        """One registered script, called with its own arguments (the common ones go first):
        for the typed wrappers of a domain module, such as the webhooks'."""
        return lambda *args: self._run(name, *args)

    def start(self, job_id: str, lease_ms: int, limits: RateLimits) -> Claim:
        """Claim a job for a run (``lua/start.lua``)."""
        reply = [text(x) for x in self._run("start", job_id, lease_ms, *_limits(limits))]
        outcome = reply[0]
        if outcome == "throttled":
            return Claim(outcome, wait_ms=int(reply[1]))
        if outcome != "run":
            return Claim(outcome)
        previous, app_key, secret, snapshot, clock, probing = reply[1:7]
        return Claim(
            outcome,
            previous=previous,
            app_key=app_key,
            stored_secret=secret,
            snapshot=json.loads(snapshot),
            clock_ms=int(clock),
            probing=probing == "1",
        )

    def poll(self, account: str, limits: RateLimits) -> PollClaim:
        """Take a rate-limit token and read the credentials for one poll (``lua/poll.lua``)."""
        reply = [text(x) for x in self._run("poll", account, *_limits(limits))]
        if reply[0] == "throttled":
            return PollClaim("throttled", wait_ms=int(reply[1]))
        if reply[0] == "run":
            return PollClaim("run", app_key=reply[1], stored_secret=reply[2])
        return PollClaim(reply[0])

    def claim_due(self, limit: int, hold_ms: int) -> DueClaim:
        """Claim up to ``limit`` due signatures for ``hold_ms`` (``lua/claim.lua``)."""
        now, *reply = texts(self._run("claim", limit, hold_ms))
        return DueClaim(int(now), reply[0::2], [float(x) for x in reply[1::2]])

    def reap(self, batch: int) -> ReapMoves:
        """Move expired leases and due probes into the outbox; read what is due there
        (``lua/reap.lua``)."""
        expired, probes, *due = (text(x) for x in self._run("reap", batch))
        return ReapMoves(int(expired), int(probes), due)

    def time_ms(self) -> int:
        """Redis's clock in ms: the one clock every process shares for deadlines."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def apply(self, change: Change) -> Applied:
        """Apply a change to a job atomically."""
        applied, previous, next_job = self._run("apply", change.to_json())
        if int(applied) and change.events:
            self.on_published([json.loads(event)["type"] for event in change.events])
        return Applied(bool(int(applied)), str(previous), str(next_job) or None)

    def repair(self, account: str) -> Repair:
        """Release the account's dead gate holder or promote a stranded FIFO head
        (``lua/repair.lua``)."""
        what, next_job = texts(self._run("repair", account))
        return Repair(what, next_job or None)

    def repair_many(self, accounts: list[str]) -> list[Repair]:
        """``repair`` for each account, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for account in accounts:
            self._run("repair", account, pipe=pipe)
        return [Repair(text(what), text(nxt) or None) for what, nxt in pipe.execute()]

    def submit(self, specs: Sequence[dict[str, Any]]) -> list[Intake]:
        """Accept job specs, one script call each in one round trip (``lua/submit.lua``)."""
        pipe = self.redis.pipeline(transaction=False)
        for spec in specs:
            self._run("submit", json.dumps(spec, ensure_ascii=False), pipe=pipe)
        return [Intake(text(outcome), text(value)) for outcome, value in pipe.execute()]

    def observe(self, spec: dict[str, Any]) -> Observed:
        """Compare an observed status with the tracked one and apply what follows
        (``lua/observe.lua``)."""
        what, next_job = texts(self._run("observe", json.dumps(spec, ensure_ascii=False)))
        return Observed(what, next_job or None)

    def retry(self, job_id: str) -> Retried:
        """Put a failed or cancelled job back through its account's gate (``lua/retry.lua``)."""
        state, before = texts(self._run("retry", job_id))
        return Retried(state, before)

    def set_account(self, name: str, action: str, event: str, reason: str = "") -> AccountFlip:
        """Pause or resume an account (``lua/account.lua``), publishing ``event``."""
        status, queued = texts(self._run("account", name, action, event, reason))
        return AccountFlip(status, list(json.loads(queued or "null") or []))

    def renew(self, lease_ms: int, job_ids: Sequence[str]) -> None:
        """Extend the leases of jobs this process runs (``lua/renew.lua``)."""
        self._run("renew", lease_ms, *job_ids)

    def sent(self, redeliver_ms: int, job_ids: Sequence[str]) -> None:
        """Note that messages went out for jobs: the outbox sends again only after
        ``redeliver_ms`` if none has started (``lua/sent.lua``)."""
        self._run("sent", redeliver_ms, *job_ids)

    def lead(self, node: str, ttl_ms: int) -> bool:
        """Take or renew the scheduler's lease for ``node`` (``lua/lead.lua``)."""
        return bool(int(self._run("lead", node, ttl_ms)))

    def resign(self, node: str) -> None:
        """Give the scheduler's lease up if ``node`` holds it (``lua/resign.lua``)."""
        self._run("resign", node)

    def close(self) -> None:
        """Close the connection pool."""
        self.redis.close()
        self.raw.close()


def _limits(limits: RateLimits) -> tuple[float, int, float, int]:
    return (limits.rate, limits.burst, limits.account_rate, limits.account_burst)


def _lua(name: str) -> str:
    return resources.files("worker").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")

"""Redis state access: the connection and signq's Lua scripts, each one atomic step.

Scripts live in ``worker/lua/``; each is registered once, with the key builders of
``worker.keys`` and the shared library ``lib.lua`` (gate acquire/park/release, state indexes,
event publishing) in front of it. Every key a script touches is declared in its ``KEYS``: each
method here declares what it can name, and a script that finds it needs a key only a record
names (the job an account's gate holds, the jobs waiting for a resume) asks for it before it
writes anything; ``_run`` runs it again with that key declared.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from importlib import resources
from typing import Any

import redis

from worker.connections import redis_client
from worker.errors import LayoutError
from worker.keys import JOB_STATES, LAYOUT, Keys
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
        """The spec the script reads; empty parts are left out. The fields are read as they
        are (``asdict`` would deep-copy each dict and list first, on every transition)."""
        values = ((f.name, getattr(self, f.name)) for f in _CHANGE_FIELDS)
        spec = {k: v for k, v in values if v not in (None, False, [], {})}
        if self.from_ is not None:
            spec["from"] = spec.pop("from_")
        if self.untrack is not None:
            spec["untrack"] = str(self.untrack)  # never a Lua number: ids may exceed 2^53
        return json.dumps(spec, ensure_ascii=False)


_CHANGE_FIELDS = dataclass_fields(Change)


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
    # A settled job that held its account's gate handed it to this one (its message is due).
    next_job: str | None = None


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


# A job an audit result finishes moves out of one of the first two into one of the others.
_FINISHED_BY_OBSERVE = ("pending_audit", "unconfirmed", "approved", "rejected", "deleted")
# A key declared to a script: a name, or a name already encoded (see Store._shared).
KeyName = str | bytes
# A script's reply asking for keys to be declared: ['__want', name, ...] (lib.lua's wanting).
_WANT = "__want"
# Runs of one script asking for keys before it gives up: each run asks for all it can name
# then, so two or three suffice unless the records change under it each time.
_ROUNDS = 8
# Accounts of jobs this process has seen, kept to declare their keys at once (a job's account
# never changes); past this size the map starts again. The same for accounts' encoded keys.
_KNOWN_JOBS = 100_000
_KNOWN_ACCOUNTS = 20_000


class KeysWanted(RuntimeError):
    """A script kept asking for more keys than it could be given (records changing under it)."""


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
        header = _HEADER
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

        k = self.keys
        # Keys every job script may touch: the cross-account indexes and the global bucket.
        # Declared keys go out as bytes, encoded once: each script call declares a few dozen,
        # and redis-py would encode each str again on every call.
        self._shared = _encoded(
            [
                k.gates(),
                k.outbox(),
                k.inflight(),
                k.probes(),
                k.events(),
                k.due(),
                k.bucket("*"),
            ]
        )
        # The state indexes, each declared where a script may move a job into or out of it.
        self._state_keys = {state: k.jobs_by_state(state).encode() for state in JOB_STATES}
        self._account_keys: dict[str, list[bytes]] = {}
        self._accounts: dict[str, str] = {}
        self._layout_checked = False

    def layout_version(self) -> int | None:
        """The key layout the data is in: the stored version, 1 for data of a signq from
        before versions were stored, None for no data yet."""
        stored = self.redis.get(self.keys.layout())
        if stored is not None:
            return int(text(stored))
        p = self.settings.prefix
        sample = texts(self.redis.srandmember(self.keys.accounts(), 20))
        # Layout 1 named an account's hash without its hash tag.
        old = [f"{p}:account:{name}" for name in sample]
        return 1 if old and self.redis.exists(*old) else None

    def check_layout(self) -> None:
        """Refuse data in a layout this code does not know; mark a new deployment's Redis as
        this layout. Done once per process, before its first script runs, whenever Redis
        answers then (a process may start before Redis does)."""
        found = self.layout_version()
        if found is None:
            self.redis.set(self.keys.layout(), LAYOUT, nx=True)
            found = self.layout_version()
        where = f"prefix {self.settings.prefix!r}"
        if found is not None and found > LAYOUT:
            raise LayoutError(
                f"the Redis data under {where} is in key layout {found}, newer than this "
                f"signq's {LAYOUT}: upgrade signq on this host"
            )
        if found != LAYOUT:
            raise LayoutError(
                f"the Redis data under {where} is in key layout {found}; this signq uses "
                f"{LAYOUT}: stop the workers and schedulers and run signq migrate"
            )
        self._layout_checked = True

    def _argv(self, args: Sequence[object]) -> list[Any]:
        s = self.settings
        return [s.prefix, s.events_maxlen, int(s.outbox_grace_seconds * 1000), *args]

    def _run(self, name: str, *args: object, keys: Sequence[KeyName] = ()) -> Any:
        """Run a script with the common arguments (prefix, events MAXLEN, outbox grace) first
        and ``keys`` declared, again with the keys it asks for while it asks."""
        if not self._layout_checked:
            self.check_layout()
        argv = self._argv(args)
        return self._rerun(name, argv, list(keys), self._scripts[name](keys=keys, args=argv))

    def _queue(self, pipe: Any, name: str, *args: object, keys: Sequence[KeyName] = ()) -> None:
        """Queue a script run on a pipeline; ``_rerun`` its reply after ``execute``."""
        if not self._layout_checked:
            self.check_layout()
        self._scripts[name](keys=keys, args=self._argv(args), client=pipe)

    def _rerun(self, name: str, argv: list[Any], keys: list[KeyName], reply: Any) -> Any:
        for _ in range(_ROUNDS):
            if not (isinstance(reply, list) and reply and text(reply[0]) == _WANT):
                return reply
            keys = [*keys, *texts(reply[1:])]
            reply = self._scripts[name](keys=keys, args=argv)
        raise KeysWanted(f"lua/{name}.lua still asked for keys after {_ROUNDS} runs")

    def script(self, name: str, keys: Sequence[KeyName] = ()) -> Callable[..., Any]:
        """One registered script, called with its own arguments (the common ones go first) and
        ``keys`` declared: for the typed wrappers of a domain module, such as the webhooks'."""
        return lambda *args: self._run(name, *args, keys=keys)

    def account_keys(self, account: str) -> list[bytes]:
        """Every per-account key a script may touch (lib.lua's want_account), encoded."""
        found = self._account_keys.get(account)
        if found is None:
            k = self.keys
            found = _encoded(
                [
                    k.account(account),
                    k.gate(account),
                    k.parked(account),
                    k.waiting(account),
                    k.unconfirmed(account),
                    k.idem(account),
                    k.idem_expiry(account),
                    k.bucket(account),
                    k.jobs_by_account(account),
                ]
            )
            if len(self._account_keys) >= _KNOWN_ACCOUNTS:
                self._account_keys.clear()
            self._account_keys[account] = found
        return found

    def known(self, job_id: str, account: str) -> None:
        """Note a job's account: its scripts then declare the account's keys in one run."""
        if len(self._accounts) >= _KNOWN_JOBS:
            self._accounts.clear()
        self._accounts[job_id] = account

    def account_of(self, job_id: str) -> str | None:
        """The account of a job this process has seen, if it has."""
        return self._accounts.get(job_id)

    def _job_keys(
        self, job_id: str, account: str | None = None, states: Sequence[str] = ("queued", "parked")
    ) -> list[KeyName]:
        """A job script's keys: the job's, the shared ones, the account's when known, and the
        indexes of ``states`` (by default those a claimed or submitted job may enter)."""
        account = account or self._accounts.get(job_id)
        own = self.account_keys(account) if account else []
        indexes = [self._state_keys[state] for state in states]
        return [self.keys.job(job_id), *self._shared, *own, *indexes]

    def start(
        self, job_id: str, lease_ms: int, limits: RateLimits, account: str | None = None
    ) -> Claim:
        """Claim a job for a run (``lua/start.lua``); ``account``, when the message names it,
        saves the script a run to learn it."""
        keys = self._job_keys(job_id, account)
        reply = texts(self._run("start", job_id, lease_ms, *_limits(limits), keys=keys))
        outcome = reply[0]
        if outcome == "throttled":
            return Claim(outcome, wait_ms=int(reply[1]))
        if outcome == "settled":
            return Claim(outcome, previous=reply[1], next_job=reply[2] or None)
        if outcome != "run":
            return Claim(outcome)
        previous, app_key, secret, snapshot, clock, probing = reply[1:7]
        record = json.loads(snapshot)
        self.known(job_id, str(record.get("account", "")))
        return Claim(
            outcome,
            previous=previous,
            app_key=app_key,
            stored_secret=secret,
            snapshot=record,
            clock_ms=int(clock),
            probing=probing == "1",
        )

    def poll(self, account: str, limits: RateLimits) -> PollClaim:
        """Take a rate-limit token and read the credentials for one poll (``lua/poll.lua``)."""
        k = self.keys
        keys = (k.account(account), k.bucket(account), k.bucket("*"))
        reply = texts(self._run("poll", account, *_limits(limits), keys=keys))
        if reply[0] == "throttled":
            return PollClaim("throttled", wait_ms=int(reply[1]))
        if reply[0] == "run":
            return PollClaim("run", app_key=reply[1], stored_secret=reply[2])
        return PollClaim(reply[0])

    def claim_due(self, limit: int, hold_ms: int) -> DueClaim:
        """Claim up to ``limit`` due signatures for ``hold_ms`` (``lua/claim.lua``)."""
        now, *reply = texts(self._run("claim", limit, hold_ms, keys=[self.keys.due()]))
        return DueClaim(int(now), reply[0::2], [float(x) for x in reply[1::2]])

    def reap(self, batch: int) -> ReapMoves:
        """Move expired leases and due probes into the outbox; read what is due there
        (``lua/reap.lua``)."""
        keys = [self.keys.inflight(), self.keys.outbox(), self.keys.probes()]
        expired, probes, *due = texts(self._run("reap", batch, keys=keys))
        return ReapMoves(int(expired), int(probes), due)

    def time_ms(self) -> int:
        """Redis's clock in ms: the one clock every process shares for deadlines."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def apply(self, change: Change) -> Applied:
        """Apply a change to a job atomically."""
        states = [*(change.from_ or ()), change.to] if change.to else []
        keys = self._job_keys(change.id, states=states)
        account = self._accounts.get(change.id)
        if account and change.track:
            keys.append(self.keys.signature(account, change.track["sign_id"]))
        if account and change.untrack is not None:
            keys.append(self.keys.signature(account, change.untrack))
        applied, previous, next_job = self._run("apply", change.to_json(), keys=keys)
        if account and next_job:
            self.known(text(next_job), account)
        if int(applied) and change.events:
            self.on_published([json.loads(event)["type"] for event in change.events])
        return Applied(bool(int(applied)), str(previous), str(next_job) or None)

    def repair(self, account: str) -> Repair:
        """Release the account's dead gate holder or promote a stranded FIFO head
        (``lua/repair.lua``)."""
        return self.repair_many([account])[0]

    def repair_many(self, accounts: list[str]) -> list[Repair]:
        """``repair`` for each account: the gates read in one round trip, then the scripts in
        another, each declaring the record of the job its gate names."""
        holders = texts(self.redis.mget([self.keys.gate(a) for a in accounts])) if accounts else []
        pipe = self.redis.pipeline(transaction=False)
        declared = []
        for account, holder in zip(accounts, holders, strict=True):
            keys: list[KeyName] = [*self._shared, *self.account_keys(account)]
            if holder:
                keys.append(self.keys.job(holder))
            declared.append(keys)
            self._queue(pipe, "repair", account, keys=keys)
        repairs = []
        for account, keys, reply in zip(accounts, declared, pipe.execute(), strict=True):
            what, nxt = texts(self._rerun("repair", self._argv([account]), keys, reply))
            if nxt:
                self.known(nxt, account)
            repairs.append(Repair(what, nxt or None))
        return repairs

    def submit(self, specs: Sequence[dict[str, Any]]) -> list[Intake]:
        """Accept job specs, one script call each in one round trip (``lua/submit.lua``)."""
        pipe = self.redis.pipeline(transaction=False)
        runs = []
        for spec in specs:
            body = json.dumps(spec, ensure_ascii=False)
            keys = self._job_keys(spec["id"], spec["account"])
            self._queue(pipe, "submit", body, keys=keys)
            runs.append((self._argv([body]), keys))
            self.known(spec["id"], spec["account"])
        intakes = []
        for (argv, keys), reply in zip(runs, pipe.execute(), strict=True):
            outcome, value = texts(self._rerun("submit", argv, keys, reply))
            intakes.append(Intake(outcome, value))
        return intakes

    def observe(self, spec: dict[str, Any]) -> Observed:
        """Compare an observed status with the tracked one and apply what follows
        (``lua/observe.lua``)."""
        account = spec["account"]
        sig = self.keys.signature(account, spec["sign_id"])
        keys: list[KeyName] = [sig, *self._shared, *self.account_keys(account)]
        if spec.get("status") in (None, 1, 2, "1", "2"):
            # A final status finishes the job the record names: declared at once.
            job = text(self.redis.hget(sig, "job_id"))
            if job:
                keys.append(self.keys.job(job))
                keys += [self._state_keys[state] for state in _FINISHED_BY_OBSERVE]
        reply = self._run("observe", json.dumps(spec, ensure_ascii=False), keys=keys)
        what, next_job = texts(reply)
        if next_job:
            self.known(next_job, account)
        return Observed(what, next_job or None)

    def retry(self, job_id: str) -> Retried:
        """Put a failed or cancelled job back through its account's gate (``lua/retry.lua``)."""
        keys = self._job_keys(job_id, states=("failed", "cancelled", "queued", "parked"))
        state, before = texts(self._run("retry", job_id, keys=keys))
        return Retried(state, before)

    def set_account(self, name: str, action: str, event: str, reason: str = "") -> AccountFlip:
        """Pause or resume an account (``lua/account.lua``), publishing ``event``."""
        keys = [*self._shared, *self.account_keys(name), *self._state_keys.values()]
        status, queued = texts(self._run("account", name, action, event, reason, keys=keys))
        return AccountFlip(status, list(json.loads(queued or "null") or []))

    def renew(self, lease_ms: int, job_ids: Sequence[str]) -> None:
        """Extend the leases of jobs this process runs (``lua/renew.lua``)."""
        self._run("renew", lease_ms, *job_ids, keys=[self.keys.inflight()])

    def sent(self, redeliver_ms: int, job_ids: Sequence[str]) -> None:
        """Note that messages went out for jobs: the outbox sends again only after
        ``redeliver_ms`` if none has started (``lua/sent.lua``)."""
        self._run("sent", redeliver_ms, *job_ids, keys=[self.keys.outbox()])

    def lead(self, node: str, ttl_ms: int) -> bool:
        """Take or renew the scheduler's lease for ``node`` (``lua/lead.lua``)."""
        return bool(int(self._run("lead", node, ttl_ms, keys=[self.keys.leader()])))

    def resign(self, node: str) -> None:
        """Give the scheduler's lease up if ``node`` holds it (``lua/resign.lua``)."""
        self._run("resign", node, keys=[self.keys.leader()])

    def close(self) -> None:
        """Close the connection pool."""
        self.redis.close()
        self.raw.close()


# In front of every script: the prefix, and the check that a key was declared (K.name).
_HEADER = """local P = ARGV[1]
local DECLARED = {}
for _, name in ipairs(KEYS) do DECLARED[name] = true end
local function key(name)
  if not DECLARED[name] then error('signq: a script touched a key it did not declare: ' .. name) end
  return name
end
"""


def _encoded(names: list[str]) -> list[bytes]:
    return [name.encode() for name in names]


def _limits(limits: RateLimits) -> tuple[float, int, float, int]:
    return (limits.rate, limits.burst, limits.account_rate, limits.account_burst)


def _lua(name: str) -> str:
    return resources.files("worker").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")

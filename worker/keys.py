"""Every Redis key name signq uses, built in one place for Python and for the Lua scripts.

All keys start with the configured prefix. Every per-account key carries the account as its
Redis hash tag (``signq:gate:{acme}``), so that an account's keys share one Cluster slot; a
template writes the tagged part as ``[n]`` and a plain part as ``{n}``. The Lua scripts get
two builders per template: ``N.name(...)`` only makes a name (to ask for it), ``K.name(...)``
makes one the script may touch, and fails unless the caller declared it in ``KEYS`` (see
``worker/store.py``). ``LAYOUT`` is the version of this layout (``signq migrate``).
"""

from __future__ import annotations

import re

from dramatiq.common import dq_name, xq_name

_TEMPLATES: dict[str, str] = {
    "accounts": "accounts",
    "accounts_index": "accounts:index",
    "account": "account:[0]",
    "job": "job:{0}",
    "jobs_by_state": "jobs:state:{0}",
    "jobs_by_account": "jobs:account:[0]",
    "idem": "idem:[0]",
    "idem_expiry": "idem:expiry:[0]",
    "image": "image:{0}",
    "gate": "gate:[0]",
    "gates": "gates",
    "parked": "parked:[0]",
    "waiting": "waiting:[0]",
    "outbox": "outbox",
    "inflight": "inflight",
    "probes": "probes",
    "unconfirmed": "unconfirmed:[0]",
    "orphans": "orphans:[0]",
    "orphaned": "orphaned",
    "bucket": "bucket:[0]",
    "events": "events",
    "signature": "sig:[0]:{1}",
    "due": "due",
    "leader": "scheduler:leader",
    "ticks": "scheduler:ticks",
    "reaping": "scheduler:reaping",
    "nonce": "callback:nonce:[0]:{1}",
    "cleanup": "cleanup:last",
    "webhooks": "webhooks",
    "webhook": "webhook:{0}",
    "wh_cursor": "webhooks:cursor",
    "wh_due": "webhooks:due",
    "wh_delivery": "whd:{0}",
    "wh_fifo": "whq:{0}:[1]",
    "wh_slot": "whs:{0}:[1]",
    "wh_dead": "webhooks:dead:{0}",
    "wh_attempts": "webhooks:attempts:{0}",
    "wh_lock": "whl:{0}",
    "layout": "layout",
}

# Every job state, each with its index (``jobs_by_state``): a script that moves a job between
# states is declared all of them (worker.records re-exports this as STATES).
JOB_STATES = (
    "queued",
    "parked",
    "submitting",
    "pending_audit",
    "approved",
    "rejected",
    "deleted",
    "failed",
    "unconfirmed",
    "cancelled",
)

# The key layout this code reads and writes (1: before hash tags; 2: per-account hash tags,
# idempotency keys in one hash per account).
LAYOUT = 2
_PART = re.compile(r"\{(\d)\}|\[(\d)\]")


def _python_part(m: re.Match[str]) -> str:
    plain, tagged = m.groups()
    return "{" + plain + "}" if plain else "{{{" + tagged + "}}}"


def _lua_part(m: re.Match[str]) -> str:
    plain, tagged = m.groups()
    return f"' .. a{plain} .. '" if plain else f"{{' .. a{tagged} .. '}}"


# The templates as str.format strings (a tagged part in literal braces).
_FORMATS = {name: _PART.sub(_python_part, template) for name, template in _TEMPLATES.items()}


def member(account: str, sign_id: int | str) -> str:
    """A tracked signature's member in the due set: ``account:sign_id``."""
    return f"{account}:{sign_id}"


def parse_member(value: str) -> tuple[str, int]:
    """The account and sign id of a due-set member (account names hold no colon)."""
    account, _, sign_id = value.rpartition(":")
    return account, int(sign_id)


class Keys:
    """Key builders for one prefix: ``Keys("signq").job("j1") == "signq:job:j1"``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _key(self, name: str, *parts: object) -> str:
        return f"{self.prefix}:{_FORMATS[name].format(*parts)}"

    def accounts(self) -> str:
        """Set of registered account names."""
        return self._key("accounts")

    def account(self, name: str) -> str:
        """Hash: an account's app key, secret and status."""
        return self._key("account", name)

    def job(self, job_id: str) -> str:
        """Hash: a job record."""
        return self._key("job", job_id)

    def jobs_by_state(self, state: str) -> str:
        """Sorted set of job ids in a state, by time of entering it; for ``submitting``, the
        in-flight leases (by deadline): a running job's lease is its index."""
        if state == "submitting":
            return self.inflight()
        return self._key("jobs_by_state", state)

    def jobs_by_account(self, account: str) -> str:
        """Sorted set of an account's job ids, by creation time."""
        return self._key("jobs_by_account", account)

    def idem(self, account: str) -> str:
        """Hash: the job ids behind an account's idempotency keys (``key:KEY``) and content keys
        (``content:HASH``), and when a finished job's key expires (``exp:KEY``, ms)."""
        return self._key("idem", account)

    def idem_expiry(self, account: str) -> str:
        """Sorted set: the account's idempotency keys of finished jobs, by when they expire (the
        hash's fields are pruned from it: a hash field has no TTL of its own before Redis 7.4)."""
        return self._key("idem_expiry", account)

    def layout(self) -> str:
        """String: the key layout version the data is in (``LAYOUT``)."""
        return self._key("layout")

    def image(self, sha256: str) -> str:
        """String: an audit image's bytes, stored once by content hash."""
        return self._key("image", sha256)

    def gate(self, account: str) -> str:
        """String: the job id holding the account's audit slot."""
        return self._key("gate", account)

    def gates(self) -> str:
        """Set of accounts whose gate is held."""
        return self._key("gates")

    def accounts_index(self) -> str:
        """Sorted set: every account name at score 0, for paged, prefix-searched listings."""
        return self._key("accounts_index")

    def parked(self, account: str) -> str:
        """List: the account's parked jobs, FIFO."""
        return self._key("parked", account)

    def waiting(self, account: str) -> str:
        """Set: jobs waiting for a paused account to resume."""
        return self._key("waiting", account)

    def outbox(self) -> str:
        """Sorted set: jobs that need a message, by when the reaper sends one if nothing has
        started them by then; an entry leaves when the job's run starts."""
        return self._key("outbox")

    def inflight(self) -> str:
        """Sorted set: jobs being executed, by lease deadline."""
        return self._key("inflight")

    def probes(self) -> str:
        """Sorted set: externally blocked accounts, by next probe time."""
        return self._key("probes")

    def unconfirmed(self, account: str) -> str:
        """Set: the account's unconfirmed creates, waiting for their sign id to be found."""
        return self._key("unconfirmed", account)

    def orphans(self, account: str) -> str:
        """Hash: audit results pushed for sign ids no job claims yet (sign id -> JSON)."""
        return self._key("orphans", account)

    def orphaned(self) -> str:
        """Set: accounts with results kept for sign ids no job claims yet."""
        return self._key("orphaned")

    def bucket(self, name: str) -> str:
        """String ``"tokens ms"``: a token bucket (``*`` is the global one)."""
        return self._key("bucket", name)

    def events(self) -> str:
        """Stream (and pub/sub channel) of events."""
        return self._key("events")

    def signature(self, account: str, sign_id: int | str) -> str:
        """Hash: a tracked signature."""
        return self._key("signature", account, sign_id)

    def due(self) -> str:
        """Sorted set of every tracked signature (``account:sign_id``), by next check time."""
        return self._key("due")

    def leader(self) -> str:
        """String: the scheduler lease holder."""
        return self._key("leader")

    def ticks(self) -> str:
        """Hash: the scheduler's last tick and its counters."""
        return self._key("ticks")

    def reaping(self) -> str:
        """String: set while a reaper message is outstanding, so ticks do not pile them up."""
        return self._key("reaping")

    def nonce(self, account: str, nonce: str) -> str:
        """String: a callback nonce already seen (replay protection)."""
        return self._key("nonce", account, nonce)

    def cleanup(self) -> str:
        """String: when the periodic cleanup last ran."""
        return self._key("cleanup")

    def webhooks(self) -> str:
        """Set: the ids of the webhook endpoints."""
        return self._key("webhooks")

    def webhook(self, endpoint: str) -> str:
        """Hash: a webhook endpoint (URL, filters, sealed secret, state)."""
        return self._key("webhook", endpoint)

    def wh_cursor(self) -> str:
        """String: the id of the last event fanned out to webhook deliveries."""
        return self._key("wh_cursor")

    def wh_due(self) -> str:
        """Sorted set: deliveries that may be sent, by when (a claimed one moves ahead)."""
        return self._key("wh_due")

    def wh_delivery(self, delivery: str) -> str:
        """Hash: one delivery of one event to one endpoint."""
        return self._key("wh_delivery", delivery)

    def wh_fifo(self, endpoint: str, account: str) -> str:
        """List: deliveries of one account to one endpoint waiting behind the one in flight."""
        return self._key("wh_fifo", endpoint, account)

    def wh_slot(self, endpoint: str, account: str) -> str:
        """String: the delivery of one account to one endpoint in flight (one at a time)."""
        return self._key("wh_slot", endpoint, account)

    def wh_dead(self, endpoint: str) -> str:
        """Sorted set: an endpoint's dead deliveries, by when they died."""
        return self._key("wh_dead", endpoint)

    def wh_attempts(self, endpoint: str) -> str:
        """List: an endpoint's latest delivery attempts, newest first (JSON)."""
        return self._key("wh_attempts", endpoint)

    def wh_lock(self, delivery: str) -> str:
        """String: held while one sender attempts a delivery (a second message waits)."""
        return self._key("wh_lock", delivery)

    def dramatiq_namespace(self) -> str:
        """Namespace of Dramatiq's own keys."""
        return f"{self.prefix}:dramatiq"

    def dramatiq_queue(self, queue: str) -> str:
        """List: a queue's ready messages, as Dramatiq's RedisBroker names it."""
        return f"{self.dramatiq_namespace()}:{queue}"

    def dramatiq_delayed(self, queue: str) -> str:
        """List: a queue's delayed messages (Dramatiq's delay queue)."""
        return self.dramatiq_queue(dq_name(queue))

    def dramatiq_dead(self, queue: str) -> str:
        """Sorted set: a queue's dead letters, by when they died."""
        return self.dramatiq_queue(xq_name(queue))

    def dramatiq_dead_bodies(self, queue: str) -> str:
        """Hash: the bodies of a queue's dead letters."""
        return f"{self.dramatiq_dead(queue)}.msgs"

    def lua(self) -> str:
        """Lua key builders mirroring the methods above, for the scripts (prefix in ``P``):
        ``N.name`` makes a name, ``K.name`` one that must be declared (``key``, in lib.lua)."""
        lines = ["local N, K = {}, {}"]
        for name, template in _TEMPLATES.items():
            args = sorted({a or b for a, b in _PART.findall(template)})
            params = ", ".join(f"a{n}" for n in args)
            body = ("P .. ':" + _PART.sub(_lua_part, template) + "'").replace(" .. ''", "")
            lines.append(f"function N.{name}({params}) return {body} end")
            lines.append(f"function K.{name}({params}) return key(N.{name}({params})) end")
        return "\n".join(lines)

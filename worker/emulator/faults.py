"""Seeded, configurable fault injection for the emulator.

A fault plan is a list of rules, global (``"*"``) or per app key. For each API request the
matching rules are rolled in order: ``latency`` rules add delay, and the first other rule that
fires decides the request's fate. A rule with ``count`` fires that many times and is then spent,
which lets a test script an exact sequence ("the next create fails after its effect").

Kinds:
- ``latency``: wait ``seconds`` before handling.
- ``error``: HTTP 500 with code 50019, before the effect (``after: false``) or after it.
- ``drop``: the connection is cut mid-response, before or after the effect.
- ``slow``: the effect happens, then the answer waits ``seconds`` (to outlast a client timeout).
- ``stall``: the request waits ``seconds`` before it reaches the API, then the connection is
  cut with nothing done (a proxy holding it past the client's timeout).
- ``rate_limit``: HTTP 429 with ``Retry-After: seconds``, nothing done.
- ``html``: a proxy's HTML 502 page, nothing done.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

KINDS = frozenset({"latency", "error", "drop", "slow", "stall", "rate_limit", "html"})
OPERATIONS = frozenset({"create", "modify", "query", "delete"})
ANY_ACCOUNT = "*"


class FaultSpecError(ValueError):
    """A fault rule that cannot be used; the message names the field."""


@dataclass
class FaultRule:
    """One rule; ``count`` None means it never runs out."""

    kind: str
    rate: float = 1.0
    operations: frozenset[str] = OPERATIONS
    after: bool = False
    seconds: float = 0.0
    count: int | None = None

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> FaultRule:
        """Parse one rule of the admin API, naming any bad field."""
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultSpecError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        ops = spec.get("operations", sorted(OPERATIONS))
        if isinstance(ops, str):
            ops = [ops]
        if not isinstance(ops, list) or not set(ops) <= OPERATIONS:
            raise FaultSpecError(f"operations must be a subset of {sorted(OPERATIONS)}")
        try:
            rate = float(spec.get("rate", 1.0))
            seconds = float(spec.get("seconds", 0.0))
            count = None if spec.get("count") is None else int(spec["count"])
        except (TypeError, ValueError) as exc:
            raise FaultSpecError(f"rate, seconds and count must be numbers ({exc})") from None
        if not 0.0 <= rate <= 1.0:
            raise FaultSpecError(f"rate must be between 0 and 1, got {rate}")
        if seconds < 0 or (count is not None and count < 1):
            raise FaultSpecError("seconds must be >= 0 and count >= 1")
        return cls(
            kind=kind,
            rate=rate,
            operations=frozenset(ops),
            after=bool(spec.get("after", False)),
            seconds=seconds,
            count=count,
        )

    def to_dict(self) -> dict[str, Any]:
        """The rule as the admin API shows it."""
        return {
            "kind": self.kind,
            "rate": self.rate,
            "operations": sorted(self.operations),
            "after": self.after,
            "seconds": self.seconds,
            "count": self.count,
        }


@dataclass(frozen=True)
class Decision:
    """What happens to one request."""

    delay: float = 0.0
    fault: FaultRule | None = None


class Faults:
    """Fault plans by app key, rolled with one seeded generator."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self.plans: dict[str, list[FaultRule]] = {}

    def set_plan(self, app_key: str, rules: list[FaultRule]) -> None:
        """Replace an account's (or the global) plan; an empty list clears it."""
        if rules:
            self.plans[app_key] = rules
        else:
            self.plans.pop(app_key, None)

    def decide(self, app_key: str | None, operation: str) -> Decision:
        """Roll the global rules, then the account's, for one request."""
        delay = 0.0
        for key in (ANY_ACCOUNT, app_key):
            rules = self.plans.get(key) if key is not None else None
            if not rules:
                continue
            for rule in list(rules):
                if operation not in rule.operations or self._random.random() >= rule.rate:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        rules.remove(rule)
                if rule.kind == "latency":
                    delay += rule.seconds
                    continue
                return Decision(delay=delay, fault=rule)
        return Decision(delay=delay)

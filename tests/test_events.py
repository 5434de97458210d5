"""Events on the Redis stream: schema, consumer groups, crashes and take-over, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from worker import events


@pytest.fixture
def stream(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """A fresh stream under this run's prefix."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    name = f"{os.environ['SIGNQ_PREFIX']}-ev{uuid.uuid4().hex[:6]}:events"
    yield client, name
    client.delete(name)
    client.close()


def publish(client: redis.Redis, name: str, kind: str, account: str = "acme", **fields: Any) -> str:
    """Add one event as the scripts do."""
    return str(client.xadd(name, {"event": events.make(kind, account, **fields)}))


def test_events_carry_the_contract_fields() -> None:
    """id (unique), type, account, at (ISO-8601 UTC); None fields are left out."""
    first = events.event("signature.approved", "acme", sign_id=1, reason=None)
    second = events.event("signature.approved", "acme", sign_id=1)
    assert first["id"] != second["id"]
    assert first["at"].endswith("Z")
    assert "reason" not in first
    assert set(first) == {"id", "type", "account", "at", "sign_id"}
    with pytest.raises(ValueError, match="unknown event type"):
        events.event("signature.exploded", "acme")


def test_a_consumer_that_dies_mid_batch_leaves_its_entries_to_another(
    stream: tuple[redis.Redis, str],
) -> None:
    """Consumer A takes 3 entries, handles one and dies; B claims the other two once idle.
    Nothing is lost and nothing handled by A is handled again."""
    client, name = stream
    for n in range(3):
        publish(client, name, "signature.approved", sign_id=n)
    a = events.Consumer(client, name, "backend", "a")
    a.ensure_group()
    batch = a.new(count=3, block_ms=10)
    assert len(batch) == 3
    a.ack(batch[0].id)  # handled one, then the process died
    b = events.Consumer(client, name, "backend", "b")
    assert b.claim(min_idle_ms=60_000) == []
    claimed = b.claim(min_idle_ms=0)
    assert [e.event["sign_id"] for e in claimed] == [1, 2]
    b.ack(*(e.id for e in claimed))
    assert client.xpending(name, "backend")["pending"] == 0


def test_run_acks_after_the_handler_and_retries_a_failure(
    stream: tuple[redis.Redis, str],
) -> None:
    """A handler that raises leaves its entry pending; it is handled again once idle; filters
    skip other types and accounts without calling the handler."""
    client, name = stream
    publish(client, name, "signature.approved", sign_id=1)
    publish(client, name, "job.accepted", sign_id=2)
    publish(client, name, "signature.rejected", account="other", sign_id=3)
    publish(client, name, "signature.rejected", sign_id=4)
    seen: list[int] = []
    failed_once: set[int] = set()
    stop = threading.Event()

    def handler(event: dict[str, Any]) -> None:
        if event["sign_id"] == 4 and 4 not in failed_once:
            failed_once.add(4)
            raise RuntimeError("downstream unavailable")
        seen.append(event["sign_id"])
        if len(seen) == 2:
            stop.set()

    consumer = events.Consumer(client, name, "g", "c1")
    runner = threading.Thread(
        target=consumer.run,
        args=(handler,),
        kwargs={
            "stop": stop,
            "types": ["signature.approved", "signature.rejected"],
            "accounts": ["acme"],
            "claim_idle_ms": 50,
            "block_ms": 20,
        },
    )
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert seen == [1, 4]
    assert client.xpending(name, "g")["pending"] == 0


def test_a_restarted_consumer_first_finishes_its_own_pending(
    stream: tuple[redis.Redis, str],
) -> None:
    """Entries delivered to a consumer before it crashed come back to it when it restarts."""
    client, name = stream
    publish(client, name, "signature.approved", sign_id=7)
    first = events.Consumer(client, name, "g", "same-name")
    first.ensure_group()
    assert len(first.new(block_ms=10)) == 1  # delivered, then the process died
    again = events.Consumer(client, name, "g", "same-name")
    assert [e.event["sign_id"] for e in again.pending()] == [7]


def test_read_from_an_id_and_follow(stream: tuple[redis.Redis, str]) -> None:
    """Reading resumes after a given id; follow returns new entries as they come."""
    client, name = stream
    first = publish(client, name, "job.accepted", sign_id=1)
    publish(client, name, "job.accepted", sign_id=2)
    assert [e.event["sign_id"] for e in events.read(client, name, since=first)] == [2]
    assert [e.event["sign_id"] for e in events.read(client, name)] == [1, 2]
    stop = threading.Event()
    got: list[int] = []

    def follow() -> None:
        for entry in events.read(client, name, since="$", follow=True, block_ms=50, stop=stop):
            got.append(entry.event["sign_id"])
            stop.set()

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        # Until the follower has started reading, an entry may come before its "$": publish
        # until one is seen (bounded), so the test waits on the follower, not on a sleep.
        for _ in range(50):
            publish(client, name, "job.accepted", sign_id=3)
            if stop.wait(0.1):
                break
        thread.join(timeout=5)
    finally:
        stop.set()
    assert got == [3]


def test_following_a_stream_not_there_yet_sees_its_first_entry(
    stream: tuple[redis.Redis, str],
) -> None:
    """The tail of a stream nobody has written yet is ``0-0`` (what ``$`` resolves to there), and
    following from it sees the stream's first entry."""
    client, name = stream
    fresh = f"{name}:fresh"
    assert events.tail(client, fresh) == "0-0"
    stop = threading.Event()
    publish(client, fresh, "job.accepted", sign_id=9)
    try:
        first = next(events.read(client, fresh, since="0-0", follow=True, block_ms=10, stop=stop))
    finally:
        client.delete(fresh)
    assert first.event["sign_id"] == 9


def test_following_from_the_end_never_skips_what_comes_between_reads(
    stream: tuple[redis.Redis, str],
) -> None:
    """Following from ``$`` resolves it once: every blocking read after a timeout asks for what
    came after the last id seen, never for "new from now", which would drop an entry added
    between two reads."""
    client, name = stream
    publish(client, name, "job.accepted", sign_id=1)
    tail = client.xrevrange(name, count=1)[0][0]
    asked: list[str] = []
    stop = threading.Event()

    class Recording:
        def xread(self, streams: dict[str, str], **options: object) -> object:
            asked.append(next(iter(streams.values())))
            if len(asked) == 3:
                publish(client, name, "job.accepted", sign_id=2)
            if len(asked) >= 5:
                stop.set()
            return client.xread(streams, **options)

        def __getattr__(self, attribute: str) -> object:
            return getattr(client, attribute)

    seen = [
        e.event["sign_id"]
        for e in events.read(Recording(), name, since="$", follow=True, block_ms=10, stop=stop)  # type: ignore[arg-type]
    ]
    assert seen == [2]
    assert "$" not in asked
    assert asked[0] == tail


def test_events_command_prints_json_lines_and_filters(stream: tuple[redis.Redis, str]) -> None:
    """`signq events` prints one JSON object per line; --type and --account filter; a group
    read acknowledges what it printed."""
    client, name = stream
    prefix = name.removesuffix(":events")
    publish(client, name, "signature.approved", sign_id=1)
    publish(client, name, "signature.rejected", account="other", sign_id=2)
    env = {**os.environ, "SIGNQ_PREFIX": prefix}

    def run(*args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "worker", "events", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return [json.loads(line) for line in out.stdout.splitlines()]

    assert [e["sign_id"] for e in run()] == [1, 2]
    assert [e["sign_id"] for e in run("--type", "signature.rejected")] == [2]
    assert [e["sign_id"] for e in run("--account", "acme")] == [1]
    assert [e["sign_id"] for e in run("--group", "cli", "--consumer", "x")] == [1, 2]
    assert run("--group", "cli", "--consumer", "x") == []

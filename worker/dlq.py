"""Dramatiq's dead-letter queues for signq's queues: list, show, retry, purge.

A message is dead-lettered when its actor failed past its retries. Retrying a job's message
reopens the job (``signq jobs retry``), since a message alone would find it settled.

On Redis the dead letters are a sorted set and a hash per queue; on RabbitMQ they are the
``.XQ`` queues Dramatiq declares, read by taking messages and putting back those not retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from dramatiq.message import Message

from worker.broker import RUN_JOB, queues
from worker.errors import JobError
from worker.runtime import Runtime
from worker.store import text


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message."""

    id: str
    queue: str
    actor: str
    args: list[Any]
    dead_at: int
    raw: dict[str, Any]


class DeadLetters:
    """The dead letters of signq's queues."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ns = runtime.store.keys.dramatiq_namespace()
        self.queues = queues(runtime.settings)

    def _keys(self, queue: str) -> tuple[str, str]:
        keys = self.runtime.store.keys
        return keys.dramatiq_dead(queue), keys.dramatiq_dead_bodies(queue)

    def all(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        if self.runtime.settings.rabbitmq:
            return self._rabbit(keep=lambda _letter: True)
        r = self.runtime.store.redis
        found = []
        for queue in self.queues:
            index, bodies = self._keys(queue)
            # redis-py types this reply loosely; with scores it is (member, score) pairs.
            entries = cast("list[tuple[str, float]]", r.zrange(index, 0, -1, withscores=True))
            ids = [text(i) for i, _ in entries]
            raws = r.hmget(bodies, ids) if ids else []
            for (entry_id, score), raw in zip(entries, raws, strict=True):
                body = json.loads(raw) if raw else {}
                found.append(
                    DeadLetter(
                        text(entry_id),
                        queue,
                        body.get("actor_name", "?"),
                        list(body.get("args") or []),
                        int(score),
                        body,
                    )
                )
        return sorted(found, key=lambda d: d.dead_at)

    def show(self, message_id: str) -> DeadLetter:
        """One dead letter, or an error naming the id."""
        for letter in self.all():
            if letter.id == message_id:
                return letter
        raise JobError(f"no dead letter {message_id!r}")

    def retry(self, message_ids: list[str] | None = None) -> list[str]:
        """Send dead letters again (all with None); returns what was done with each."""
        letters = self.all()
        if message_ids is not None:
            wanted = set(message_ids)
            missing = wanted - {letter.id for letter in letters}
            if missing:
                raise JobError(f"no dead letter(s): {', '.join(sorted(missing))}")
            letters = [letter for letter in letters if letter.id in wanted]
        if self.runtime.settings.rabbitmq:
            wanted_ids = {letter.id for letter in letters}
            taken: list[DeadLetter] = []
            self._rabbit(keep=lambda letter: letter.id not in wanted_ids, taken=taken)
            return [self._retry(letter) for letter in taken]
        done = []
        for letter in letters:
            done.append(self._retry(letter))
            self._remove(letter)
        return done

    def _rabbit(
        self, keep: Any, taken: list[DeadLetter] | None = None, limit: int = 10_000
    ) -> list[DeadLetter]:
        """Walk RabbitMQ's dead-letter queues: each message is taken, and put back unless
        ``keep`` says no (those go to ``taken``, acknowledged). Returns every letter seen."""
        from dramatiq.common import xq_name  # noqa: PLC0415

        channel = self.runtime.broker.connection.channel()  # type: ignore[attr-defined]
        seen: list[DeadLetter] = []
        try:
            for queue in self.queues:
                tags = []
                for _ in range(limit):
                    method, _props, body = channel.basic_get(xq_name(queue), auto_ack=False)
                    if method is None:
                        break
                    raw = json.loads(body)
                    letter = DeadLetter(
                        str(raw.get("message_id")),
                        queue,
                        raw.get("actor_name", "?"),
                        list(raw.get("args") or []),
                        int(
                            raw.get("options", {}).get("dead_at")
                            or raw.get("message_timestamp")
                            or 0
                        ),
                        raw,
                    )
                    seen.append(letter)
                    if keep(letter):
                        tags.append(method.delivery_tag)
                    else:
                        if taken is not None:
                            taken.append(letter)
                        channel.basic_ack(method.delivery_tag)
                for tag in tags:
                    channel.basic_nack(tag, requeue=True)
        finally:
            channel.close()
        return sorted(seen, key=lambda d: d.dead_at)

    def _retry(self, letter: DeadLetter) -> str:
        if letter.actor == RUN_JOB and letter.args:
            job_id = str(letter.args[0])
            record = self.runtime.jobs.get(job_id)
            if record is not None and record.state in ("failed", "cancelled"):
                return f"{letter.id}: job {job_id} reopened ({self.runtime.jobs.retry(job_id)})"
        options = {
            k: v
            for k, v in letter.raw.get("options", {}).items()
            if k not in ("retries", "traceback", "redis_message_id", "dead_message_ttl")
        }
        message: Message[Any] = Message(
            queue_name=letter.queue,
            actor_name=letter.actor,
            args=tuple(letter.args),
            kwargs=letter.raw.get("kwargs") or {},
            options=options,
        )
        self.runtime.broker.enqueue(message)
        return f"{letter.id}: sent again to {letter.actor}"

    def purge(self) -> int:
        """Drop every dead letter; returns how many."""
        if self.runtime.settings.rabbitmq:
            taken: list[DeadLetter] = []
            self._rabbit(keep=lambda _letter: False, taken=taken)
            return len(taken)
        r = self.runtime.store.redis
        count = 0
        for queue in self.queues:
            index, bodies = self._keys(queue)
            count += int(r.zcard(index))
            r.delete(index, bodies)
        return count

    def _remove(self, letter: DeadLetter) -> None:
        index, bodies = self._keys(letter.queue)
        self.runtime.store.redis.zrem(index, letter.id)
        self.runtime.store.redis.hdel(bodies, letter.id)

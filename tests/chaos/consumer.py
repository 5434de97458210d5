"""An event consumer process for the crash scenario: slow, idempotent, and counting."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import redis

from worker.events import Consumer
from worker.keys import Keys


def main() -> None:
    """``python -m tests.chaos.consumer URL PREFIX NAME``: handle the stream until killed."""
    url, prefix, name = sys.argv[1:4]
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = Keys(prefix)
    handled, deliveries = f"{prefix}:test:handled", f"{prefix}:test:deliveries"

    def handle(event: dict[str, Any]) -> None:
        client.incr(deliveries)
        time.sleep(0.05)
        # Idempotent: the effect is keyed on the event's id.
        client.sadd(handled, event["id"])

    consumer = Consumer(client, keys.events(), "billing", name)
    print("consuming", flush=True)
    consumer.run(handle, stop=threading.Event(), claim_idle_ms=1000, block_ms=200, batch=20)


if __name__ == "__main__":
    main()

"""A webhook receiver for the benchmarks, run in its own process (uvicorn): answers 204 and
appends each delivery's webhook-id and arrival time to a Redis list, so the measuring process
reads arrivals without sharing this one's GIL."""

from __future__ import annotations

import os
import time

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_redis = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
_list = os.environ["BENCH_RECEIVED"]


async def receive(request: Request) -> Response:
    """Record the arrival, answer 204."""
    await request.body()
    _redis.rpush(_list, f"{request.headers.get('webhook-id', '')} {time.time():.6f}")
    return Response(status_code=204)


app = Starlette(routes=[Route("/hooks", receive, methods=["POST"])])

"""Signed webhooks (Standard Webhooks) for backends that don't speak Redis: endpoints, the
delivery of the events stream to them, and ``verify`` for Python receivers.

A receiver checks a delivery with the endpoint's secret::

    from worker.webhooks import WebhookVerificationError, verify

    event = verify(request.headers, request.body, "whsec_...")  # raises if forged or stale
"""

from __future__ import annotations

from worker.webhooks.delivery import Deliveries, Pumped
from worker.webhooks.endpoints import Endpoint, Endpoints
from worker.webhooks.signing import WebhookVerificationError, new_secret, verify

__all__ = [
    "Deliveries",
    "Endpoint",
    "Endpoints",
    "Pumped",
    "WebhookVerificationError",
    "new_secret",
    "verify",
]

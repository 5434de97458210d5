"""The JSMS boundary: client, errors, request models and validation, callback verification."""

from __future__ import annotations

from worker.jsms.client import JsmsClient, RetryPolicy, Timeouts
from worker.jsms.credentials import Credentials
from worker.jsms.errors import Disposition, JsmsError, OutcomeUnknown, ValidationError
from worker.jsms.models import Image, Signature, SignRequest, Status

__all__ = [
    "Credentials",
    "Disposition",
    "Image",
    "JsmsClient",
    "JsmsError",
    "OutcomeUnknown",
    "RetryPolicy",
    "SignRequest",
    "Signature",
    "Status",
    "Timeouts",
    "ValidationError",
]

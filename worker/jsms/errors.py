"""Errors raised at the JSMS boundary.

Every error carries ``http_status``, ``code`` (the JSMS return code, or ``None`` when the API
never answered with one) and ``message``, and knows whether repeating the same request may help
(``retryable``). The tree::

    JsmsError
    ├── ValidationError          bad input, caught before any request (field names what)
    ├── TransportError           no usable HTTP answer: connect error, timeout, dropped connection
    ├── UnexpectedResponse       an answer that is not the API's: HTML page, empty/truncated body,
    │                            unknown code, a 200 without ``sign_id``
    ├── OutcomeUnknown           a create/modify was sent, and whether it took effect is unknown
    └── ApiError                 the API answered ``{"error": {"code", "message"}}``
        ├── ServerError          50019 (transient)
        ├── RateLimited          HTTP 429 (transient; ``retry_after`` seconds when given)
        ├── AuditPending         50103: another signature of the account is pending audit (gate)
        ├── AuthError            50001 50002 50008: the account's credentials or service
        ├── InvalidRequest       50003 50007 50013 50016 50017 50018 50025: signq sent it wrong
        ├── InvalidImage         50101
        ├── InvalidSignId        50102: unknown, deleted or another account's signature
        ├── InvalidSignature     50104: content the API refuses
        └── SignatureInUse       50105: in use, or the default signature; cannot be deleted

``Disposition`` groups them the way the pipeline acts on them: transient errors are retried,
permanent ones fail the job, the gate's (50103) are the per-account audit gate's business, and
auth errors pause the account.
"""

from __future__ import annotations

import enum


class Disposition(enum.Enum):
    """What the pipeline does with an error."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    GATE = "gate"
    AUTH = "auth"


class JsmsError(Exception):
    """Base of every error at the JSMS boundary."""

    disposition = Disposition.PERMANENT

    def __init__(
        self, message: str, *, http_status: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code

    @property
    def retryable(self) -> bool:
        """True when sending the same request again may succeed."""
        return self.disposition is Disposition.TRANSIENT

    def to_dict(self) -> dict[str, object]:
        """The ``error`` object of job records and events: no request data, no secrets."""
        return {
            "code": self.code,
            "message": self.message,
            "http_status": self.http_status,
            "kind": type(self).__name__,
        }

    def __str__(self) -> str:
        where = []
        if self.code is not None:
            where.append(f"code {self.code}")
        if self.http_status is not None:
            where.append(f"HTTP {self.http_status}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class ValidationError(JsmsError):
    """A request that breaks the API's published content rules; nothing was sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class TransportError(JsmsError):
    """No usable HTTP answer. ``sent`` says whether the request may have reached the API."""

    disposition = Disposition.TRANSIENT

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UnexpectedResponse(JsmsError):
    """An answer that is not the API's documented shape; ``body`` is a short excerpt."""

    def __init__(
        self, message: str, *, http_status: int | None, body: str = "", transient: bool = False
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.body = body
        if transient:
            self.disposition = Disposition.TRANSIENT


class OutcomeUnknown(JsmsError):
    """A create or modify reached the wire and failed after: it may or may not have taken effect.

    The client never repeats such a request; the pipeline settles it through the audit gate.
    """

    disposition = Disposition.TRANSIENT

    def __init__(self, operation: str, cause: JsmsError) -> None:
        super().__init__(
            f"{operation} may or may not have taken effect: {cause}",
            http_status=cause.http_status,
            code=cause.code,
        )
        self.operation = operation
        self.cause = cause


class ApiError(JsmsError):
    """The API answered with a JSMS error code."""


class ServerError(ApiError):
    """50019, or a 5xx with the API's error body: the API failed; the effect is unknown."""

    disposition = Disposition.TRANSIENT


class RateLimited(ApiError):
    """HTTP 429: too many requests, certainly not acted on."""

    disposition = Disposition.TRANSIENT

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = 429,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, code=code)
        self.retry_after = retry_after


class AuditPending(ApiError):
    """50103: the account has a signature pending audit, so nothing can be submitted."""

    disposition = Disposition.GATE


class AuthError(ApiError):
    """50001, 50002, 50008: the account cannot use the API until its credentials are fixed."""

    disposition = Disposition.AUTH


class InvalidRequest(ApiError):
    """The API refused the shape of the request (a signq or configuration bug, not the data's)."""


class InvalidImage(ApiError):
    """50101: an image the API refuses."""


class InvalidSignId(ApiError):
    """50102: no such signature on this account (never existed, deleted, or another's)."""


class InvalidSignature(ApiError):
    """50104: signature content the API refuses."""


class SignatureInUse(ApiError):
    """50105: the signature is in use (or is the default one) and cannot be deleted."""


CODES: dict[int, tuple[type[ApiError], int, str]] = {
    50001: (AuthError, 400, "missing auth"),
    50002: (AuthError, 401, "auth failed"),
    50003: (InvalidRequest, 400, "missing body"),
    50007: (InvalidRequest, 403, "invalid body"),
    50008: (AuthError, 403, "no sms code auth"),
    50013: (InvalidRequest, 403, "invalid temp_id"),
    50016: (InvalidRequest, 404, "api not found"),
    50017: (InvalidRequest, 415, "media not supported"),
    50018: (InvalidRequest, 405, "request method not support"),
    50019: (ServerError, 500, "server error"),
    50025: (InvalidRequest, 403, "wrong template type"),
    50101: (InvalidImage, 403, "invalid image"),
    50102: (InvalidSignId, 403, "invalid sign id"),
    50103: (AuditPending, 403, "other signatures in the audit"),
    50104: (InvalidSignature, 403, "invalid signature"),
    50105: (SignatureInUse, 403, "the signature in use cannot be deleted"),
}
"""The seed's return-code table: code -> (exception, documented HTTP status, message)."""


def api_error(http_status: int, code: int, message: str) -> ApiError:
    """The exception for an API error body; an unknown code keeps its number and HTTP status."""
    if http_status == 429:
        return RateLimited(message, http_status=http_status, code=code)
    entry = CODES.get(code)
    if entry is not None:
        return entry[0](message, http_status=http_status, code=code)
    if http_status >= 500:
        return ServerError(f"unknown JSMS code: {message}", http_status=http_status, code=code)
    return ApiError(f"unknown JSMS code: {message}", http_status=http_status, code=code)

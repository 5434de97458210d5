"""The JSMS signature API client: four operations, typed results, two kinds of retry safety.

Query and delete are repeated on any transient failure. Create and modify are repeated only when
the request certainly took no effect (the connection was never made, or HTTP 429); any other
failure after sending raises ``OutcomeUnknown``, for the pipeline to settle through the audit gate.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import certifi
import httpx
import structlog
import tenacity

from worker.jsms.credentials import Credentials
from worker.jsms.errors import (
    InvalidSignId,
    JsmsError,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    TransportError,
    UnexpectedResponse,
    ValidationError,
    api_error,
)
from worker.jsms.models import (
    DEFAULT_MAX_IMAGE_BYTES,
    Signature,
    SignRequest,
    validate_request,
    validate_sign_id,
)

log = structlog.get_logger(__name__)


class ClientSettings(Protocol):
    """What the client reads from signq's settings (the boundary does not import them)."""

    @property
    def api_url(self) -> str: ...

    @property
    def connect_timeout(self) -> float: ...

    @property
    def read_timeout(self) -> float: ...

    @property
    def client_max_attempts(self) -> int: ...

    @property
    def client_max_retry_seconds(self) -> float: ...

    @property
    def client_backoff_initial(self) -> float: ...

    @property
    def client_backoff_max(self) -> float: ...

    @property
    def ca_bundle(self) -> str | None: ...

    @property
    def max_image_bytes(self) -> int: ...


T = TypeVar("T")
EFFECTFUL = frozenset({"create", "modify"})
Observer = Callable[[str, int | None, float], None]
"""Called after each HTTP attempt with (operation, JSMS code or None, seconds)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Client-level retries: short, for faults that pass within seconds."""

    max_attempts: int = 4
    max_seconds: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts are separate: a slow connect is safe to retry, a slow read not."""

    connect: float = 5.0
    read: float = 30.0

    def to_httpx(self) -> httpx.Timeout:
        """The httpx equivalent; writes and pool waits share the read budget."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.read, pool=self.read)


class JsmsClient:
    """Thread-safe client for the signature API; one per process serves every account."""

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        ca_bundle: str | None = None,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_connections: int = 100,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        observer: Observer | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.max_image_bytes = max_image_bytes
        self.observer = observer
        self._sleep = sleep
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=self.retry.backoff_initial, max=self.retry.backoff_max
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=(timeouts or Timeouts()).to_httpx(),
            verify=_tls_context(ca_bundle),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                # Shorter than common server keep-alive timeouts, so a pooled connection is not
                # reused just as the server closes it (which would look like a lost response).
                keepalive_expiry=4.0,
            ),
            headers={"User-Agent": "signq"},
        )

    @classmethod
    def from_settings(cls, settings: ClientSettings, **overrides: Any) -> JsmsClient:
        """The client the settings describe; keyword overrides win (tests, benchmarks)."""
        options: dict[str, Any] = {
            "timeouts": Timeouts(connect=settings.connect_timeout, read=settings.read_timeout),
            "retry": RetryPolicy(
                max_attempts=settings.client_max_attempts,
                max_seconds=settings.client_max_retry_seconds,
                backoff_initial=settings.client_backoff_initial,
                backoff_max=settings.client_backoff_max,
            ),
            "ca_bundle": settings.ca_bundle,
            "max_image_bytes": settings.max_image_bytes,
        }
        options.update(overrides)
        return cls(settings.api_url, **options)

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> JsmsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(self, creds: Credentials, request: SignRequest) -> int:
        """Submit a new signature for audit; returns its sign id."""
        request = validate_request(request, self.max_image_bytes)
        return self._call(
            "create", creds, lambda: self._sign_id(self._post("create", "/sign", creds, request))
        )

    def modify(self, creds: Credentials, sign_id: int, request: SignRequest) -> int:
        """Resubmit a signature that failed audit; returns its sign id."""
        sign_id = validate_sign_id(sign_id)
        request = validate_request(request, self.max_image_bytes)
        return self._call(
            "modify",
            creds,
            lambda: self._sign_id(self._post("modify", f"/sign/{sign_id}", creds, request)),
        )

    def query(self, creds: Credentials, sign_id: int) -> Signature:
        """The signature's current audit and use status."""
        sign_id = validate_sign_id(sign_id)

        def attempt() -> Signature:
            response = self._send("query", "GET", f"/sign/{sign_id}", creds)
            return Signature.from_api(_json_object(response), http_status=response.status_code)

        return self._call("query", creds, attempt)

    def delete(self, creds: Credentials, sign_id: int) -> None:
        """Delete a signature. A retry that finds it gone after an uncertain attempt succeeds."""
        sign_id = validate_sign_id(sign_id)
        uncertain = False

        def attempt() -> None:
            nonlocal uncertain
            try:
                self._send("delete", "DELETE", f"/sign/{sign_id}", creds)
            except InvalidSignId:
                if not uncertain:
                    raise
                log.info("jsms_delete_already_gone", sign_id=sign_id)
            except (TransportError, ServerError, UnexpectedResponse) as exc:
                uncertain = uncertain or not isinstance(exc, TransportError) or exc.sent
                raise

        self._call("delete", creds, attempt)

    def _call(self, operation: str, creds: Credentials, attempt: Callable[[], T]) -> T:
        policy = self.retry
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.max_attempts)
            | tenacity.stop_before_delay(policy.max_seconds),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda exc: _may_retry(operation, exc)),
            reraise=True,
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "jsms_retry",
                operation=operation,
                app_key=creds.masked_key,
                attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else None,
            ),
        )
        try:
            return retrying(attempt)
        except JsmsError as exc:
            if operation in EFFECTFUL and _uncertain(exc):
                raise OutcomeUnknown(operation, exc) from exc
            raise

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        return float(self._backoff(state))

    def _post(
        self, operation: str, path: str, creds: Credentials, request: SignRequest
    ) -> httpx.Response:
        # Every field goes as a multipart part so the body is multipart even without images.
        parts: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = [
            ("sign", (None, request.sign, None))
        ]
        if request.type is not None:
            parts.append(("type", (None, str(request.type), None)))
        if request.remark is not None:
            parts.append(("remark", (None, request.remark, None)))
        for index, image in enumerate(request.images):
            name = f"{image.filename or 'image'}.{'png' if image.kind == 'png' else 'jpg'}"
            parts.append((f"image{index}", (name, image.data, image.content_type)))
        return self._send(operation, "POST", path, creds, files=parts)

    def _send(
        self, operation: str, method: str, path: str, creds: Credentials, **kwargs: Any
    ) -> httpx.Response:
        started = time.perf_counter()
        code: int | None = None
        try:
            response = self._http.request(
                method, path, auth=httpx.BasicAuth(creds.app_key, creds.master_secret), **kwargs
            )
            code = 50000 if response.status_code == 200 else None
            _raise_for_error(response)
            return response
        except httpx.TransportError as exc:
            raise _transport_error(exc) from None
        except JsmsError as exc:
            code = exc.code
            raise
        finally:
            if self.observer is not None:
                self.observer(operation, code, time.perf_counter() - started)

    def _sign_id(self, response: httpx.Response) -> int:
        body = _json_object(response)
        try:
            return validate_sign_id(body.get("sign_id"))
        except ValidationError:
            raise UnexpectedResponse(
                "answer has no valid sign_id",
                http_status=response.status_code,
                body=response.text[:200],
            ) from None


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying TLS context: certifi's trust store (httpx's default), or a given CA bundle."""
    if ca_bundle is None:
        return ssl.create_default_context(cafile=certifi.where())
    if Path(ca_bundle).is_dir():
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


def _may_retry(operation: str, exc: BaseException) -> bool:
    if not isinstance(exc, JsmsError):
        return False
    if operation in EFFECTFUL:
        return isinstance(exc, RateLimited) or (isinstance(exc, TransportError) and not exc.sent)
    return exc.retryable


def _uncertain(exc: JsmsError) -> bool:
    """Could a create/modify that failed this way have taken effect?"""
    if isinstance(exc, TransportError):
        return exc.sent
    return isinstance(exc, ServerError | UnexpectedResponse)


def _transport_error(exc: httpx.TransportError) -> TransportError:
    # Only these guarantee the request never left: no connection, or no pooled slot.
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    detail = str(exc) or type(exc).__name__
    return TransportError(f"{type(exc).__name__}: {detail}", sent=sent)


def _raise_for_error(response: httpx.Response) -> None:
    """Raise the matching error unless the response is a success."""
    body = _maybe_json(response)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if response.status_code == 429:
        raise RateLimited(
            message or "too many requests",
            http_status=429,
            code=code if isinstance(code, int) else None,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if isinstance(code, int):
        raise api_error(response.status_code, code, message)
    if response.status_code == 200:
        return
    raise UnexpectedResponse(
        f"HTTP {response.status_code} without a JSMS error body"
        f" ({response.headers.get('content-type', 'no content type')})",
        http_status=response.status_code,
        body=response.text[:200],
        transient=response.status_code >= 500,
    )


def _maybe_json(response: httpx.Response) -> object:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = _maybe_json(response)
    if not isinstance(body, dict):
        what = "an empty body" if not response.content else f"not a JSON object: {response.text!r}"
        raise UnexpectedResponse(
            f"HTTP {response.status_code} with {what[:200]}",
            http_status=response.status_code,
            body=response.text[:200],
        )
    return body


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

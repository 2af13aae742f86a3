"""Exceptions raised by :class:`sinal_client.Publisher`.

Every error the client raises on purpose is a :class:`SinalError`, so one ``except`` clause
is enough when the caller does not care why a publication failed::

    try:
        publisher.publish("roulette:7", "roulette_update", {"number": 17})
    except Unauthorized:
        ...  # a wrong or revoked API key: fix the configuration, retrying will not help
    except SinalUnavailable as err:
        ...  # the server could not be reached (or kept answering 5xx/429); err.cause says why
    except SinalError as err:
        print(err.status, err.code, err.message)

4xx answers are raised at once (a retry would get the same answer), except 429, which is
retried with backoff like a 5xx answer or a network error. When the retries run out, a
:class:`SinalUnavailable` is raised carrying the last cause.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Type

__all__ = [
    "SinalError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "SinalUnavailable",
    "error_from_response",
]


class SinalError(Exception):
    """Base class of every error this client raises.

    Attributes:
        status: the HTTP status of the answer (``None`` when there was no answer).
        code: the server's stable error code (``"bad_request"``, ``"unauthorized"``,
            ``"forbidden"``, ``"payload_too_large"``, ...; see docs/protocol.md), or a
            client-side code such as ``"bad_response"`` or ``"unavailable"``.
        message: the human-readable message (the server's, when it sent one).
        body: the decoded JSON error body, when there was one.
        retry_after: seconds from a ``Retry-After`` header, when the server sent one.
        published: for :meth:`Publisher.publish_many` split into several requests, the answers
            (``{"offset", "epoch"}``) of the requests that succeeded before this error, in item
            order; the items after them were not published by the failed request.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Any = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.retry_after = retry_after
        self.published: List[Dict[str, Any]] = []

    def __str__(self) -> str:
        head = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        return f"{head}: {self.message}" if head else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class BadRequest(SinalError):
    """400: the request was malformed (``bad_request``, ``unknown_channel``, ...).

    The message names the offending field, e.g. ``[3].channel: ...`` for the fourth item of a
    batch; nothing of that request was published.
    """


class Unauthorized(SinalError):
    """401: the API key is missing, unknown or revoked (``unauthorized``)."""


class Forbidden(SinalError):
    """403: the credential is valid but may not do this (e.g. a user JWT used as an API key)."""


class NotFound(SinalError):
    """404: no such route (usually a wrong base URL or path prefix)."""


class Conflict(SinalError):
    """409: the request conflicts with the server's state (``conflict``, ``locked``)."""


class PayloadTooLarge(SinalError):
    """413: ``data`` is larger than the server's limit (64 KiB of JSON by default)."""


class RateLimited(SinalError):
    """429: too many requests. Retried with backoff; seen only as the cause of a
    :class:`SinalUnavailable` once the retries run out."""


class ServerError(SinalError):
    """5xx: the server failed. Retried with backoff; seen only as the cause of a
    :class:`SinalUnavailable` once the retries run out."""


class SinalUnavailable(SinalError):
    """The retries ran out: the server could not be reached, timed out, or kept answering
    5xx/429.

    Attributes:
        cause: the last error (an ``OSError`` such as ``ConnectionRefusedError``, a
            ``TimeoutError``, an ``http.client`` error, or a :class:`ServerError` /
            :class:`RateLimited`). Also set as ``__cause__``.
        attempts: how many requests were made.

    Because every publication carries an idempotency key, publishing the same items again
    with the same keys later is safe: whatever did reach the server is not published twice.
    """

    def __init__(self, message: str, *, cause: BaseException, attempts: int) -> None:
        status = cause.status if isinstance(cause, SinalError) else None
        super().__init__(message, status=status, code="unavailable")
        self.cause = cause
        self.attempts = attempts


_BY_STATUS: Dict[int, Type[SinalError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def _retry_after(headers: Optional[Mapping[str, str]]) -> Optional[float]:
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare for APIs; the client's own backoff applies
    return max(0.0, seconds)


def error_from_response(status: int, raw: bytes, headers: Optional[Mapping[str, str]] = None) -> SinalError:
    """Builds the exception for a non-2xx answer from its ``{"error":{"code","message"}}`` body.

    A body that is not sinal's JSON (a proxy's HTML page, say) still gives an error, with code
    ``http_<status>`` and the start of the body as its message.

    >>> err = error_from_response(401, b'{"error":{"code":"unauthorized","message":"unknown or revoked API key"}}')
    >>> type(err).__name__, err.status, err.code, err.message
    ('Unauthorized', 401, 'unauthorized', 'unknown or revoked API key')
    """
    body: Any = None
    code: Optional[str] = None
    message: Optional[str] = None
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), str):
            code = error["code"]
        if isinstance(error.get("message"), str):
            message = error["message"]
    if code is None:
        code = f"http_{status}"
    if message is None:
        text = raw[:200].decode("utf-8", "replace").strip()
        message = text or f"HTTP {status} without a body"
    if status >= 500:
        cls: Type[SinalError] = ServerError
    else:
        cls = _BY_STATUS.get(status, SinalError)
    return cls(message, status=status, code=code, body=body, retry_after=_retry_after(headers))

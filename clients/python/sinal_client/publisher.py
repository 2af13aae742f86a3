"""The publishing client: :class:`Publisher`.

Standard library only. One keep-alive HTTP connection per thread, so a ``Publisher`` may be
shared by threads.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import threading
import time
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import urlsplit

from ._version import __version__
from .errors import SinalError, SinalUnavailable, error_from_response

__all__ = ["Publisher", "MAX_BATCH", "new_idempotency_key"]

log = logging.getLogger("sinal_client")

#: The server's limit of publications in one ``POST /v1/publish`` (docs/protocol.md "Publishing").
MAX_BATCH = 1000

#: Statuses answered with a retry (after a backoff) instead of an exception.
_RETRY_STATUSES = frozenset({408, 425, 429})

Item = Union[Mapping[str, Any], Sequence[Any]]


def new_idempotency_key() -> str:
    """A fresh idempotency key (a random UUID4 string), as the client makes for each event."""
    return str(uuid.uuid4())


class _Transport:
    """Keep-alive HTTP(S) connections to one server, one per thread."""

    def __init__(self, url: str, timeout: float, ssl_context: Optional[ssl.SSLContext]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix], got {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._local = threading.local()
        self._all: Set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context or ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.add(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            self._all.discard(conn)

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Tuple[int, Any, bytes]:
        """One POST; returns (status, headers, body). Network errors propagate."""
        conn = self._connection()
        try:
            conn.request("POST", self.prefix + path, body=body, headers=dict(headers))
            response = conn.getresponse()
            raw = response.read()
        except BaseException:
            # The connection's state is unknown (half-sent request, unread answer): never reuse it.
            self._drop(conn)
            raise
        if response.will_close:
            self._drop(conn)
        return response.status, response.headers, raw

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
            self._all.clear()
        for conn in conns:
            conn.close()
        self._local = threading.local()


class Publisher:
    """Publishes events to a sinal server over its REST API, with safe retries.

    Args:
        url: the server's base URL, e.g. ``"http://localhost:3000"`` (a path prefix such as
            ``"https://example.com/sinal"`` is kept).
        api_key: a tenant API key (``sk_...`` from ``sinal keys create --tenant <t>`` or
            ``SINAL_API_KEYS``); sent as ``Authorization: Bearer <api_key>``.
        timeout: seconds to wait for the connection and for each read of the answer.
        max_retries: retries after the first attempt (so at most ``max_retries + 1``
            requests) on network errors, timeouts, 5xx and 429 answers. ``0`` disables retries.
        backoff_base, backoff_cap: the wait before retry *n* (0-based) is drawn uniformly from
            ``[0, min(backoff_cap, backoff_base * 2**n)]`` ("full jitter"); a ``Retry-After``
            header raises that wait (up to ``backoff_cap``).
        max_batch_bytes: :meth:`publish_many` also starts a new request before a body would
            grow past this many bytes (the server refuses bodies over ``MAX_BODY_BYTES``,
            8 MiB by default).
        ssl_context: for ``https`` URLs; the system's default trust store otherwise.
        auto_idempotency_keys: ``False`` sends events without a key unless the caller gives one.
            The server then skips its per-key bookkeeping (much faster for large batches), but
            a retry after a lost answer may publish those events twice.

    Every publication carries an ``idempotency_key`` (a UUID4 made by the client when the caller
    gives none, unless ``auto_idempotency_keys=False``). The server answers a repeated key with the first answer and publishes nothing,
    so a retry after a lost answer never delivers an event twice.

    Example::

        from sinal_client import Publisher, SinalError

        pub = Publisher("http://localhost:3000", "sk_...")
        pub.publish("roulette:7", "roulette_update", {"roulette_id": 7, "number": 17, "color": "black"})
        # {'offset': 42, 'epoch': 'k3f9...'}
        pub.publish_many([
            ("strategy:7", "strategy_update", {"roulette_id": 7, "signal": "bet_red"}),
            {"channel": "roulette:8", "event": "roulette_update", "data": {"roulette_id": 8, "number": 0}},
        ])
        # [{'offset': 3, 'epoch': '...'}, {'offset': 19, 'epoch': '...'}]

    A ``Publisher`` is a context manager; leaving it closes its connections.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 5.0,
        max_retries: int = 5,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        *,
        max_batch_bytes: int = 4 * 1024 * 1024,
        ssl_context: Optional[ssl.SSLContext] = None,
        auto_idempotency_keys: bool = True,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0")
        if backoff_base < 0 or backoff_cap < 0:
            raise ValueError("backoff_base and backoff_cap must be >= 0")
        if max_batch_bytes < 1024:
            raise ValueError("max_batch_bytes must be at least 1024")
        self.url = url
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.max_batch_bytes = max_batch_bytes
        self.auto_idempotency_keys = bool(auto_idempotency_keys)
        self._transport = _Transport(url, self.timeout, ssl_context)
        self._headers = {
            "Authorization": f"Bearer {api_key.strip()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"sinal-client-python/{__version__}",
        }
        self._random = random.Random()

    # -- public API -----------------------------------------------------------------------------

    def publish(self, channel: str, event: str, data: Any, idempotency_key: Optional[str] = None) -> Dict[str, Any]:
        """Publishes one event on one channel (``POST /v1/publish``).

        Args:
            channel: a channel without tenant, e.g. ``"roulette:7"``, ``"room:42"``, ``"global"``.
            event: the event name subscribers see, e.g. ``"roulette_update"``.
            data: any JSON-serialisable value (at most 64 KiB of JSON by default).
            idempotency_key: a key unique to this event; made by the client when omitted. Pass
                your own (e.g. derived from the source record) to make re-runs of a job safe too.

        Returns:
            ``{"offset": n, "epoch": "..."}``: the publication's place in the channel.

        Raises:
            BadRequest, Unauthorized, Forbidden, PayloadTooLarge, SinalError: a 4xx answer.
            SinalUnavailable: the retries ran out.

        Example::

            pub.publish("roulette:7", "roulette_update", {"roulette_id": 7, "number": 32, "color": "red"})
            # {'offset': 1, 'epoch': 'mf3k0q'}
        """
        item = _item(channel, event, data, idempotency_key, "", self.auto_idempotency_keys)
        answer = self._send("/v1/publish", _encode(item))
        return _position(answer)

    def publish_many(self, items: Iterable[Item]) -> List[Dict[str, Any]]:
        """Publishes several events, in order, with as few requests as possible.

        Items are dicts ``{"channel", "event", "data", "idempotency_key"?}`` or tuples
        ``(channel, event, data)`` / ``(channel, event, data, idempotency_key)``. Up to
        :data:`MAX_BATCH` (1000) items go in one request; longer lists are split into several
        requests, sent one after the other, so the order is kept. Every item gets its own
        idempotency key (made here when missing) before the first request, so retrying a
        request never publishes an item twice.

        Returns:
            one ``{"offset", "epoch"}`` per item, in item order. An empty list sends nothing.

        Raises:
            TypeError, ValueError: a malformed item (nothing is sent).
            SinalError: as :meth:`publish`. The server checks a whole request before publishing
                any of it, so when a request fails its items were not published; when a list was
                split, ``err.published`` holds the answers of the requests that went before.

        Example::

            pub.publish_many([
                ("roulette:7", "roulette_update", {"roulette_id": 7, "number": 5}),
                ("roulette:7", "roulette_update", {"roulette_id": 7, "number": 11}),
            ])
            # [{'offset': 2, 'epoch': 'mf3k0q'}, {'offset': 3, 'epoch': 'mf3k0q'}]
        """
        auto = self.auto_idempotency_keys
        encoded = [_encode(_normalize(item, index, auto)) for index, item in enumerate(items)]
        results: List[Dict[str, Any]] = []
        for chunk in self._chunks(encoded):
            try:
                answer = self._send("/v1/publish", b"[" + b",".join(chunk) + b"]")
            except SinalError as err:
                err.published = list(results)
                raise
            if not isinstance(answer, list) or len(answer) != len(chunk):
                err = SinalError(
                    f"expected a list of {len(chunk)} answers, got {_describe(answer)}", code="bad_response"
                )
                err.published = list(results)
                raise err
            results.extend(_position(one) for one in answer)
        return results

    def emit_event(
        self, event: str, data: Any, channel: Optional[str] = None, idempotency_key: Optional[str] = None
    ) -> Dict[str, Any]:
        """The scraper's old shape (``POST /emit-event``): ``{event, data, channel?}``.

        Without ``channel`` the server routes ``roulette_update`` to
        ``roulette:<data["roulette_id"]>`` and ``strategy_update`` to
        ``strategy:<data["roulette_id"]>``; any other event needs ``channel`` (else 400).
        An ``idempotency_key`` is generated and honoured as with :meth:`publish`, so a retry after a
        lost answer delivers the event once.

        Example::

            pub.emit_event("roulette_update", {"roulette_id": 7, "number": 0, "color": "green"})
            # {'offset': 4, 'epoch': 'mf3k0q'}  (published on roulette:7)
        """
        if not isinstance(event, str) or not event:
            raise TypeError("event must be a non-empty string")
        body: Dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            if not isinstance(channel, str) or not channel:
                raise TypeError("channel must be a non-empty string")
            body["channel"] = channel
        key = _key(idempotency_key, "", self.auto_idempotency_keys)
        if key is not None:
            body["idempotency_key"] = key
        answer = self._send("/emit-event", _encode(body))
        return _position(answer)

    def close(self) -> None:
        """Closes the kept-alive connections (a later call opens new ones)."""
        self._transport.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Publisher({self.url!r}, api_key=<hidden>, max_retries={self.max_retries})"

    # -- internals ------------------------------------------------------------------------------

    def _chunks(self, encoded: List[bytes]) -> Iterator[List[bytes]]:
        chunk: List[bytes] = []
        size = 2
        for part in encoded:
            if chunk and (len(chunk) >= MAX_BATCH or size + len(part) + 1 > self.max_batch_bytes):
                yield chunk
                chunk, size = [], 2
            chunk.append(part)
            size += len(part) + 1
        if chunk:
            yield chunk

    def _delay(self, retry: int, cause: BaseException) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** min(retry, 30)))
        delay = self._random.uniform(0.0, ceiling)
        retry_after = getattr(cause, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap))
        return delay

    def _send(self, path: str, body: bytes) -> Any:
        """POSTs ``body``; retries network errors, timeouts, 5xx and 429; raises 4xx at once."""
        cause: Optional[BaseException] = None
        attempts = 0
        for attempt in range(self.max_retries + 1):
            if cause is not None:
                delay = self._delay(attempt - 1, cause)
                log.warning("sinal %s failed (%s); retry %d/%d in %.3fs", path, _describe_error(cause), attempt, self.max_retries, delay)
                time.sleep(delay)
            attempts += 1
            try:
                status, headers, raw = self._transport.post(path, body, self._headers)
            except ssl.CertificateError:
                raise  # a wrong certificate does not fix itself
            except (OSError, http.client.HTTPException) as exc:
                # connection refused/reset, DNS failure, timeout (TimeoutError is an OSError),
                # a connection closed before the answer (RemoteDisconnected), a cut answer
                cause = exc
                continue
            if 200 <= status < 300:
                try:
                    return json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    # Published, but the answer was mangled: the retry (same idempotency keys)
                    # gets the stored answer without publishing again.
                    cause = SinalError(
                        f"answer {status} is not JSON: {raw[:100]!r}", status=status, code="bad_response"
                    )
                    continue
            error = error_from_response(status, raw, headers)
            if status >= 500 or status in _RETRY_STATUSES:
                cause = error
                continue
            raise error
        assert cause is not None
        raise SinalUnavailable(
            f"gave up on {self.url}{path} after {attempts} attempts: {_describe_error(cause)}",
            cause=cause,
            attempts=attempts,
        ) from cause


def _key(value: Optional[str], where: str, auto: bool) -> Optional[str]:
    if value is None:
        return new_idempotency_key() if auto else None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{where}idempotency_key must be a string of 1 to 256 characters")
    return value


def _item(channel: Any, event: Any, data: Any, idempotency_key: Any, where: str, auto: bool) -> Dict[str, Any]:
    if not isinstance(channel, str) or not channel:
        raise TypeError(f"{where}channel must be a non-empty string, got {channel!r}")
    if not isinstance(event, str) or not event:
        raise TypeError(f"{where}event must be a non-empty string, got {event!r}")
    item = {"channel": channel, "event": event, "data": data}
    key = _key(idempotency_key, where, auto)
    if key is not None:
        item["idempotency_key"] = key
    return item


def _normalize(item: Item, index: int, auto: bool) -> Dict[str, Any]:
    where = f"items[{index}]."
    if isinstance(item, Mapping):
        unknown = set(item) - {"channel", "event", "data", "idempotency_key"}
        if unknown:
            raise ValueError(f"{where[:-1]} has unknown fields {sorted(unknown)}")
        if "data" not in item:
            raise ValueError(f"{where}data is required")
        return _item(item.get("channel"), item.get("event"), item["data"], item.get("idempotency_key"), where, auto)
    if isinstance(item, (tuple, list)) and len(item) in (3, 4):
        return _item(item[0], item[1], item[2], item[3] if len(item) == 4 else None, where, auto)
    raise TypeError(
        f"{where[:-1]} must be a dict or a (channel, event, data[, idempotency_key]) tuple, got {_describe(item)}"
    )


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as exc:  # NaN/Infinity: not JSON
        raise ValueError(f"data is not valid JSON: {exc}") from exc


def _position(answer: Any) -> Dict[str, Any]:
    if not isinstance(answer, dict) or "offset" not in answer:
        raise SinalError(f"expected {{offset, epoch}}, got {_describe(answer)}", code="bad_response")
    return answer


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, SinalError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

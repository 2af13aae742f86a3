"""Retry, backoff and error mapping against a scripted local HTTP server (answers sinal never gives
on purpose: 5xx, 429 with Retry-After, HTML error pages, a slow answer)."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

import pytest

from sinal_client import (
    BadRequest,
    Conflict,
    NotFound,
    Publisher,
    RateLimited,
    ServerError,
    SinalError,
    SinalUnavailable,
)

Answer = Tuple[int, Dict[str, str], bytes, float]  # status, headers, body, delay before answering


def ok(value: Any) -> Answer:
    return (200, {"Content-Type": "application/json"}, json.dumps(value).encode(), 0.0)


def error(status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> Answer:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (status, dict({"Content-Type": "application/json"}, **(headers or {})), body, 0.0)


class ScriptedServer:
    """Answers requests from a script, in order; records what it received."""

    def __init__(self, script: List[Answer]) -> None:
        self.script = list(script)
        self.requests: List[Dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                status, headers, payload, delay = outer.script.pop(0) if outer.script else ok({"offset": 1, "epoch": "e"})
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers: List[ScriptedServer] = []

    def make(*script: Answer) -> ScriptedServer:
        server = ScriptedServer(list(script))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def fast(url: str, **kwargs: Any) -> Publisher:
    kwargs.setdefault("max_retries", 3)
    return Publisher(url, "sk_test_key_0123456789", backoff_base=0.001, backoff_cap=0.01, **kwargs)


def test_5xx_answers_are_retried_with_the_same_idempotency_key(scripted):
    server = scripted(error(503, "unavailable", "draining"), error(500, "internal", "boom"), ok({"offset": 4, "epoch": "e1"}))
    assert fast(server.url).publish("roulette:1", "roulette_update", {"n": 1}) == {"offset": 4, "epoch": "e1"}
    assert len(server.requests) == 3
    keys = {r["body"]["idempotency_key"] for r in server.requests}
    assert len(keys) == 1 and len(keys.pop()) == 36  # one uuid4 for all three attempts
    assert all(r["path"] == "/v1/publish" for r in server.requests)
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk_test_key_0123456789"
    assert server.requests[0]["body"] == dict(channel="roulette:1", event="roulette_update", data={"n": 1}, idempotency_key=server.requests[0]["body"]["idempotency_key"])


def test_each_published_event_gets_its_own_key(scripted):
    server = scripted()
    pub = fast(server.url)
    pub.publish("roulette:1", "e", 1)
    pub.publish("roulette:1", "e", 2)
    pub.publish("roulette:1", "e", 3, idempotency_key="mine")
    keys = [r["body"]["idempotency_key"] for r in server.requests]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_429_is_retried_and_retry_after_is_honoured_up_to_the_cap(scripted):
    server = scripted(error(429, "rate_limited", "slow down", {"Retry-After": "0.2"}), ok({"offset": 1, "epoch": "e"}))
    pub = Publisher(server.url, "sk_test_key_0123456789", backoff_base=0.001, backoff_cap=0.15)
    started = time.monotonic()
    pub.publish("roulette:1", "e", {})
    assert 0.14 <= time.monotonic() - started < 2  # waited the cap (0.15 s), not the 1 ms backoff
    assert len(server.requests) == 2


def test_retries_run_out_with_the_last_cause(scripted):
    server = scripted(*[error(500, "internal", f"boom {i}") for i in range(3)] + [error(429, "rate_limited", "later")])
    with pytest.raises(SinalUnavailable) as caught:
        fast(server.url, max_retries=3).publish("roulette:1", "e", {})
    err = caught.value
    assert err.attempts == 4 and len(server.requests) == 4
    assert isinstance(err.cause, RateLimited) and err.__cause__ is err.cause
    assert (err.cause.status, err.cause.code, err.cause.message) == (429, "rate_limited", "later")
    assert (err.status, err.code) == (429, "unavailable")


def test_max_retries_zero_makes_one_attempt(scripted):
    server = scripted(error(502, "bad_gateway", "x"))
    with pytest.raises(SinalUnavailable) as caught:
        fast(server.url, max_retries=0).publish("roulette:1", "e", {})
    assert caught.value.attempts == 1 and isinstance(caught.value.cause, ServerError)


def test_a_non_json_error_page_still_gives_a_clear_error(scripted):
    html = (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>", 0.0)
    server = scripted(html, (400, {"Content-Type": "text/plain"}, b"nope", 0.0))
    with pytest.raises(BadRequest) as caught:
        fast(server.url).publish("roulette:1", "e", {})
    assert (caught.value.status, caught.value.code, caught.value.message) == (400, "http_400", "nope")
    assert len(server.requests) == 2  # the 502 page was retried


@pytest.mark.parametrize("status, cls", [(404, NotFound), (409, Conflict), (418, SinalError)])
def test_other_4xx_answers_are_not_retried(scripted, status: int, cls: type):
    server = scripted(error(status, "some_code", "some message"))
    with pytest.raises(cls) as caught:
        fast(server.url).publish("roulette:1", "e", {})
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, "some_code", "some message")
    assert len(server.requests) == 1


def test_a_timeout_is_retried_with_the_same_key(scripted):
    slow = (200, {"Content-Type": "application/json"}, b'{"offset":1,"epoch":"e"}', 1.0)
    server = scripted(slow, ok({"offset": 1, "epoch": "e"}))
    pub = Publisher(server.url, "sk_test_key_0123456789", timeout=0.3, max_retries=2, backoff_base=0.001)
    assert pub.publish("roulette:1", "e", {}) == {"offset": 1, "epoch": "e"}
    assert len(server.requests) == 2
    assert server.requests[0]["body"]["idempotency_key"] == server.requests[1]["body"]["idempotency_key"]


def test_a_2xx_answer_that_is_not_json_is_retried(scripted):
    server = scripted((200, {}, b"<oops>", 0.0), ok({"offset": 2, "epoch": "e"}))
    assert fast(server.url).publish("roulette:1", "e", {}) == {"offset": 2, "epoch": "e"}


def test_automatic_keys_can_be_turned_off(scripted):
    server = scripted(ok({"offset": 1, "epoch": "e"}), ok([{"offset": 2, "epoch": "e"}, {"offset": 3, "epoch": "e"}]), ok({"offset": 4, "epoch": "e"}))
    pub = fast(server.url, auto_idempotency_keys=False)
    pub.publish("room:1", "a", 1)
    pub.publish_many([("room:1", "b", 2), ("room:1", "c", 3, "given")])
    pub.emit_event("roulette_update", {"roulette_id": 1})
    first, batch, emitted = (r["body"] for r in server.requests)
    assert "idempotency_key" not in first and "idempotency_key" not in emitted
    assert "idempotency_key" not in batch[0] and batch[1]["idempotency_key"] == "given"


def test_publish_many_accepts_dicts_and_tuples_and_splits_by_bytes(scripted):
    server = scripted(ok([{"offset": 1, "epoch": "e"}, {"offset": 2, "epoch": "e"}]), ok([{"offset": 3, "epoch": "e"}]))
    pub = fast(server.url, max_batch_bytes=2048)
    big = "x" * 700
    answers = pub.publish_many([
        {"channel": "room:1", "event": "a", "data": big},
        ("room:1", "b", big, "key-b"),
        ["room:1", "c", big],
    ])
    assert [a["offset"] for a in answers] == [1, 2, 3]
    assert [len(r["body"]) for r in server.requests] == [2, 1]
    sent = server.requests[0]["body"] + server.requests[1]["body"]
    assert [item["event"] for item in sent] == ["a", "b", "c"]
    assert sent[1]["idempotency_key"] == "key-b"
    assert all(set(item) == {"channel", "event", "data", "idempotency_key"} for item in sent)


def test_publish_many_rejects_malformed_items_before_sending(scripted):
    server = scripted()
    pub = fast(server.url)
    with pytest.raises(TypeError, match=r"items\[1\]"):
        pub.publish_many([("room:1", "a", {}), ("room:1", "b")])
    with pytest.raises(ValueError, match="unknown fields"):
        pub.publish_many([{"channel": "room:1", "event": "a", "data": {}, "offset": 3}])
    with pytest.raises(ValueError, match="data is required"):
        pub.publish_many([{"channel": "room:1", "event": "a"}])
    with pytest.raises(ValueError, match="JSON"):
        pub.publish("room:1", "a", float("nan"))
    assert server.requests == []


def test_a_wrong_answer_shape_is_an_error(scripted):
    server = scripted(ok({"offset": 1, "epoch": "e"}))
    with pytest.raises(SinalError) as caught:
        fast(server.url).publish_many([("room:1", "a", 1), ("room:1", "b", 2)])
    assert caught.value.code == "bad_response"


def test_emit_event_sends_the_old_shape_with_a_key(scripted):
    server = scripted()
    pub = fast(server.url)
    pub.emit_event("roulette_update", {"roulette_id": 7, "number": 1})
    pub.emit_event("custom", {"x": 1}, channel="room:5")
    first, second = (r["body"] for r in server.requests)
    assert server.requests[0]["path"] == "/emit-event"
    assert {k: first[k] for k in ("event", "data")} == {"event": "roulette_update", "data": {"roulette_id": 7, "number": 1}}
    assert "channel" not in first and len(first["idempotency_key"]) == 36
    assert second["channel"] == "room:5"


def test_a_path_prefix_in_the_url_is_kept(scripted):
    server = scripted()
    fast(server.url + "/sinal/").publish("room:1", "a", 1)
    assert server.requests[0]["path"] == "/sinal/v1/publish"


def test_connections_are_kept_alive(scripted):
    server = scripted()
    pub = fast(server.url)
    for i in range(5):
        pub.publish("room:1", "a", i)
    conn = pub._transport._local.conn
    assert conn is not None and conn.sock is not None  # still open after five requests


def test_backoff_is_capped_exponential_with_full_jitter():
    pub = Publisher("http://127.0.0.1:9", "sk_test_key_0123456789", backoff_base=0.2, backoff_cap=5.0)
    pub._random = random.Random(1)
    cause = OSError("x")
    for retry, ceiling in [(0, 0.2), (1, 0.4), (2, 0.8), (3, 1.6), (4, 3.2), (5, 5.0), (12, 5.0), (100, 5.0)]:
        delays = [pub._delay(retry, cause) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9 and min(delays) < ceiling * 0.1  # spread over the whole range


@pytest.mark.parametrize(
    "kwargs",
    [dict(api_key=""), dict(timeout=0), dict(max_retries=-1), dict(backoff_base=-1), dict(url="ftp://x")],
)
def test_bad_settings_are_refused(kwargs: Dict[str, Any]):
    args = dict(url="http://localhost:3000", api_key="sk_x")
    args.update(kwargs)
    with pytest.raises(ValueError):
        Publisher(**args)

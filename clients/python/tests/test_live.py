"""The client against a real sinal server (see conftest.py), observed by a WebSocket subscriber."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from conftest import REPO_ROOT, Subscriber, fresh

from sinal_client import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Publisher,
    SinalError,
    SinalUnavailable,
    Unauthorized,
)


def count_requests(pub: Publisher) -> List[str]:
    """Records the path of every HTTP request `pub` makes."""
    calls: List[str] = []
    post = pub._transport.post

    def spy(path: str, body: bytes, headers: Any):
        calls.append(path)
        return post(path, body, headers)

    pub._transport.post = spy  # type: ignore[method-assign]
    return calls


# -- publish reaches subscribers --------------------------------------------------------------


def test_publish_reaches_a_websocket_subscriber_with_the_exact_frame(publisher: Publisher, subscriber: Subscriber):
    channel = fresh()
    reply = subscriber.subscribe(channel)
    data = {"roulette_id": channel.split(":")[1], "number": 17, "color": "black", "nested": {"list": [1, "two", None]}}
    before_ms = int(time.time() * 1000)

    answer = publisher.publish(channel, "roulette_update", data)

    assert set(answer) == {"offset", "epoch"}
    assert answer["offset"] == reply["offset"] + 1 == 1
    assert answer["epoch"] == reply["epoch"]
    frame = subscriber.next_pub()
    assert set(frame) == {"type", "channel", "event", "data", "offset", "epoch", "ts"}
    assert frame["type"] == "pub"
    assert frame["channel"] == channel
    assert frame["event"] == "roulette_update"
    assert frame["data"] == data
    assert frame["offset"] == answer["offset"]
    assert frame["epoch"] == answer["epoch"]
    assert isinstance(frame["ts"], int) and before_ms - 5000 <= frame["ts"] <= int(time.time() * 1000) + 5000


def test_unicode_and_scalar_data_round_trip(publisher: Publisher, subscriber: Subscriber):
    channel = fresh("dept")
    subscriber.subscribe(channel)
    publisher.publish(channel, "note", "roleta é vermelha ✓")
    publisher.publish(channel, "count", 0)
    publisher.publish(channel, "nothing", None)
    frames = subscriber.pubs_until(channel, "nothing")
    assert [(f["event"], f["data"]) for f in frames] == [
        ("note", "roleta é vermelha ✓"),
        ("count", 0),
        ("nothing", None),
    ]


@pytest.mark.parametrize("roulette_id", [7, "br-12"])
def test_emit_event_roulette_update_routes_to_the_roulette_channel(
    publisher: Publisher, subscriber: Subscriber, roulette_id: Any
):
    rid = f"{roulette_id}{os.urandom(4).hex()}" if isinstance(roulette_id, str) else 7_000_000 + int.from_bytes(os.urandom(3), "big")
    channel = f"roulette:{rid}"
    subscriber.subscribe(channel)
    data = {"roulette_id": rid, "number": 0, "color": "green"}

    answer = publisher.emit_event("roulette_update", data)

    frame = subscriber.next_pub()
    assert (frame["channel"], frame["event"], frame["data"]) == (channel, "roulette_update", data)
    assert (frame["offset"], frame["epoch"]) == (answer["offset"], answer["epoch"])


def test_emit_event_strategy_update_and_explicit_channel(publisher: Publisher, subscriber: Subscriber):
    rid = os.urandom(5).hex()
    subscriber.subscribe(f"strategy:{rid}")
    room = fresh("dept")  # (a room: subscription would publish user_joined first)
    subscriber.subscribe(room)

    publisher.emit_event("strategy_update", {"roulette_id": rid, "strategy": "red_streak", "signal": "bet_black"})
    publisher.emit_event("anything", {"x": 1}, channel=room)

    first, second = subscriber.next_pub(), subscriber.next_pub()
    assert (first["channel"], first["event"], first["data"]["signal"]) == (f"strategy:{rid}", "strategy_update", "bet_black")
    assert (second["channel"], second["event"], second["data"]) == (room, "anything", {"x": 1})


# -- batches ----------------------------------------------------------------------------------


def test_publish_many_keeps_order_and_offsets_are_consecutive(publisher: Publisher, subscriber: Subscriber):
    a, b = fresh(), fresh("strategy")
    subscriber.subscribe(a)
    subscriber.subscribe(b)
    items: List[Any] = []
    for i in range(30):
        if i % 3 == 2:
            items.append({"channel": b, "event": "strategy_update", "data": {"i": i}})
        else:
            items.append((a, "roulette_update", {"i": i}))
    items.append((a, "end", {"i": 30}))

    answers = publisher.publish_many(items)

    assert len(answers) == len(items)
    assert [x["offset"] for x, item in zip(answers, items) if _channel(item) == a] == list(range(1, 22))
    assert [x["offset"] for x, item in zip(answers, items) if _channel(item) == b] == list(range(1, 11))
    frames = []
    while not frames or frames[-1]["event"] != "end":
        frames.append(subscriber.next_pub())
    assert [(f["channel"], f["data"]["i"], f["offset"]) for f in frames] == [
        (_channel(item), i, answer["offset"]) for i, (item, answer) in enumerate(zip(items, answers))
    ]


def _channel(item: Any) -> str:
    return item["channel"] if isinstance(item, dict) else item[0]


def test_publish_many_splits_more_than_1000_items(publisher: Publisher, subscriber: Subscriber):
    channel = fresh()
    subscriber.subscribe(channel)
    calls = count_requests(publisher)
    items = [(channel, "tick", {"i": i}) for i in range(2345)]

    answers = publisher.publish_many(items)

    assert calls == ["/v1/publish"] * 3  # 1000 + 1000 + 345
    assert [a["offset"] for a in answers] == list(range(1, 2346))
    assert len({a["epoch"] for a in answers}) == 1
    frames = [subscriber.next_pub() for _ in range(2345)]
    assert [(f["data"]["i"], f["offset"]) for f in frames] == [(i, i + 1) for i in range(2345)]


def test_publish_many_of_nothing_sends_nothing(publisher: Publisher):
    calls = count_requests(publisher)
    assert publisher.publish_many([]) == []
    assert calls == []


def test_a_bad_item_publishes_nothing_of_its_request_and_earlier_requests_are_reported(
    publisher: Publisher, subscriber: Subscriber
):
    channel = fresh()
    subscriber.subscribe(channel)
    items: List[Any] = [(channel, "tick", {"i": i}) for i in range(1500)]
    items[1200] = ("nope:1", "tick", {"i": 1200})

    with pytest.raises(BadRequest) as caught:
        publisher.publish_many(items)

    err = caught.value
    assert (err.status, err.code) == (400, "unknown_channel")
    assert err.message.startswith("[200].channel"), err.message  # the 201st item of the second request
    assert [p["offset"] for p in err.published] == list(range(1, 1001))
    publisher.publish(channel, "end", {})
    frames = subscriber.pubs_until(channel, "end")
    assert len(frames) == 1001  # the first request's 1000 and the sentinel


# -- idempotency and retries ------------------------------------------------------------------


def test_the_same_idempotency_key_publishes_once(publisher: Publisher, subscriber: Subscriber):
    channel = fresh()
    subscriber.subscribe(channel)
    key = f"spin-{os.urandom(8).hex()}"

    first = publisher.publish(channel, "roulette_update", {"number": 9}, idempotency_key=key)
    second = publisher.publish(channel, "roulette_update", {"number": 9}, idempotency_key=key)
    third = publisher.publish_many([(channel, "roulette_update", {"number": 9}, key)])

    assert first == second == third[0]
    publisher.publish(channel, "end", {})
    frames = subscriber.pubs_until(channel, "end")
    assert [f["event"] for f in frames] == ["roulette_update", "end"]
    assert frames[0]["offset"] == first["offset"]


def test_emit_event_with_a_repeated_key_publishes_once(publisher: Publisher, subscriber: Subscriber):
    rid = os.urandom(5).hex()
    channel = f"roulette:{rid}"
    subscriber.subscribe(channel)
    key = f"emit-{os.urandom(8).hex()}"
    first = publisher.emit_event("roulette_update", {"roulette_id": rid, "number": 4}, idempotency_key=key)
    second = publisher.emit_event("roulette_update", {"roulette_id": rid, "number": 4}, idempotency_key=key)
    publisher.publish(channel, "end", {})
    frames = subscriber.pubs_until(channel, "end")
    assert [f["event"] for f in frames] == ["roulette_update", "end"]
    assert first == second


class DropFirstAnswerProxy:
    """A TCP proxy in front of sinal that loses the first answer.

    The first connection's request is forwarded; as soon as the server starts answering (so it has
    published), both sides are closed and the answer never reaches the client. Later connections
    are forwarded both ways.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.lost_answer = b""
        self.dropped = threading.Event()
        self._sockets: List[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            if self.connections == 1:
                threading.Thread(target=self._lose_answer, args=(client, upstream), daemon=True).start()
            else:
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _lose_answer(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            self.lost_answer = upstream.recv(65536)
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.dropped.set()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "DropFirstAnswerProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def test_a_lost_answer_is_retried_and_delivered_once(sinal, publisher: Publisher, subscriber: Subscriber):
    channel = fresh()
    subscriber.subscribe(channel)
    with DropFirstAnswerProxy(sinal.port) as proxy:
        flaky = Publisher(f"http://127.0.0.1:{proxy.port}", sinal.api_key, timeout=10, max_retries=3, backoff_base=0.01)
        answer = flaky.publish(channel, "roulette_update", {"number": 23, "color": "red"})
        flaky.close()
        assert proxy.dropped.is_set()
        assert proxy.connections == 2
        assert proxy.lost_answer.startswith(b"HTTP/1.1 200"), proxy.lost_answer[:100]
        assert f'"offset":{answer["offset"]}'.encode() in proxy.lost_answer  # the retry got the first answer

    publisher.publish(channel, "end", {})
    frames = subscriber.pubs_until(channel, "end")
    assert [f["event"] for f in frames] == ["roulette_update", "end"]
    assert (frames[0]["offset"], frames[0]["data"]) == (answer["offset"], {"number": 23, "color": "red"})


def test_a_lost_batch_answer_is_retried_and_each_item_delivered_once(sinal, publisher: Publisher, subscriber: Subscriber):
    channel = fresh()
    subscriber.subscribe(channel)
    with DropFirstAnswerProxy(sinal.port) as proxy:
        flaky = Publisher(f"http://127.0.0.1:{proxy.port}", sinal.api_key, timeout=10, max_retries=3, backoff_base=0.01)
        answers = flaky.publish_many([(channel, "tick", {"i": i}) for i in range(5)])
        flaky.close()
        assert proxy.connections == 2

    assert [a["offset"] for a in answers] == [1, 2, 3, 4, 5]
    publisher.publish(channel, "end", {})
    frames = subscriber.pubs_until(channel, "end")
    assert [(f["event"], f["offset"]) for f in frames] == [("tick", 1), ("tick", 2), ("tick", 3), ("tick", 4), ("tick", 5), ("end", 6)]


# -- errors -----------------------------------------------------------------------------------


def test_a_wrong_api_key_raises_unauthorized_without_retrying(sinal):
    pub = Publisher(sinal.url, "sk_wrong_" + "z" * 20, max_retries=3, backoff_base=0.01)
    calls = count_requests(pub)
    with pytest.raises(Unauthorized) as caught:
        pub.publish(fresh(), "roulette_update", {"number": 1})
    err = caught.value
    assert isinstance(err, SinalError)
    assert (err.status, err.code) == (401, "unauthorized")
    assert err.message  # the server's words
    assert "401 unauthorized: " in str(err)
    assert calls == ["/v1/publish"]


def test_a_user_jwt_as_api_key_raises_forbidden(sinal, user_token: str):
    pub = Publisher(sinal.url, user_token, max_retries=3, backoff_base=0.01)
    with pytest.raises(Forbidden) as caught:
        pub.emit_event("roulette_update", {"roulette_id": 1, "number": 1})
    err = caught.value
    assert (err.status, err.code) == (403, "forbidden")
    assert "admin" in err.message


def test_an_admin_jwt_may_publish(sinal, subscriber: Subscriber):
    channel = fresh()
    subscriber.subscribe(channel)
    pub = Publisher(sinal.url, sinal.token("ops", roles="admin"))
    answer = pub.publish(channel, "roulette_update", {"number": 3})
    assert subscriber.next_pub()["offset"] == answer["offset"]


def test_data_over_64_kib_raises_payload_too_large(publisher: Publisher, subscriber: Subscriber):
    channel = fresh()
    subscriber.subscribe(channel)
    with pytest.raises(PayloadTooLarge) as caught:
        publisher.publish(channel, "big", {"blob": "x" * (64 * 1024 + 1)})
    err = caught.value
    assert (err.status, err.code) == (413, "payload_too_large")
    assert "bytes" in err.message
    publisher.publish(channel, "end", {})
    assert [f["event"] for f in subscriber.pubs_until(channel, "end")] == ["end"]


@pytest.mark.parametrize(
    "call, code, words",
    [
        (lambda p: p.publish("nope:1", "x", {}), "unknown_channel", "channel"),
        (lambda p: p.publish("Not A Channel", "x", {}), "bad_request", "channel"),
        (lambda p: p.emit_event("some_event", {"roulette_id": 1}), "bad_request", "channel"),
        (lambda p: p.emit_event("roulette_update", {"number": 1}), "bad_request", "roulette_id"),
    ],
    ids=["unknown-kind", "bad-name", "emit-without-route", "emit-without-roulette-id"],
)
def test_bad_requests_raise_bad_request(publisher: Publisher, call, code: str, words: str):
    calls = count_requests(publisher)
    with pytest.raises(BadRequest) as caught:
        call(publisher)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert words in caught.value.message
    assert len(calls) == 1


def test_connection_refused_is_retried_then_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with-block ends: nothing listens there
    pub = Publisher(f"http://127.0.0.1:{port}", "sk_any_key_0123456789", max_retries=4, backoff_base=0.01, backoff_cap=0.05)
    calls = count_requests(pub)
    started = time.monotonic()
    with pytest.raises(SinalUnavailable) as caught:
        pub.publish("roulette:1", "roulette_update", {"number": 1})
    err = caught.value
    assert time.monotonic() - started < 5
    assert len(calls) == 5 and err.attempts == 5
    assert isinstance(err.cause, ConnectionRefusedError)
    assert err.__cause__ is err.cause
    assert err.code == "unavailable" and err.status is None
    assert "after 5 attempts" in err.message


# -- the example scraper ----------------------------------------------------------------------


def test_example_scraper_publishes_roulette_numbers_and_strategy_updates(sinal, subscriber: Subscriber):
    ids = [f"t{os.urandom(3).hex()}", f"t{os.urandom(3).hex()}"]
    for rid in ids:
        subscriber.subscribe(f"roulette:{rid}")
        subscriber.subscribe(f"strategy:{rid}")
    env = dict(os.environ, SINAL_URL=sinal.url, SINAL_API_KEY=sinal.api_key)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "scraper.py"), "--rate", "40", "--duration", "1.5",
         "--roulettes", ",".join(ids), "--seed", "7"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    summary = result.stdout.strip().splitlines()[-1]
    assert "roulette updates" in summary, result.stdout

    frames: List[Dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            frames.append(subscriber.next_pub(timeout=1))
        except TimeoutError:
            break
    spins = [f for f in frames if f["event"] == "roulette_update"]
    strategies = [f for f in frames if f["event"] == "strategy_update"]
    assert len(spins) >= 20
    assert strategies
    for f in spins:
        rid = f["channel"].split(":", 1)[1]
        assert rid in ids and f["data"]["roulette_id"] == rid
        assert 0 <= f["data"]["number"] <= 36
        assert f["data"]["color"] == ("green" if f["data"]["number"] == 0 else f["data"]["color"])
        assert f["data"]["color"] in ("green", "red", "black")
    for f in strategies:
        assert f["channel"].startswith("strategy:") and "signal" in f["data"]
    by_channel: Dict[str, List[int]] = {}
    for f in frames:
        by_channel.setdefault(f["channel"], []).append(f["offset"])
    for offsets in by_channel.values():
        assert offsets == list(range(1, len(offsets) + 1))

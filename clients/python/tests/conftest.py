"""Test harness: a real sinal server started from this repository, and a WebSocket subscriber.

The server is ``node_modules/.bin/bun src/main.ts serve`` (override the command's first part
with ``SINAL_BUN``), on a free loopback port (``PORT=0``; the port is read from the
``"msg":"listening"`` log line), with a temporary sqlite database and one API key for tenant
``acme``. It is stopped with SIGTERM at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
CLIENT_ROOT = HERE.parent
REPO_ROOT = CLIENT_ROOT.parent.parent
sys.path.insert(0, str(CLIENT_ROOT))

JWT_SECRET = "pytest-secret-" + "x" * 40
API_KEY = "sk_pytest_" + "k" * 24
TENANT = "acme"
SUB_CHANNELS = "roulette:*,strategy:*,room:*,dept:*"
START_TIMEOUT_S = 30.0


def _bun() -> List[str]:
    override = os.environ.get("SINAL_BUN")
    if override:
        return override.split()
    return [str(REPO_ROOT / "node_modules" / ".bin" / "bun")]


class SinalServer:
    """A running sinal process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log_path = tmp / "sinal.log"
        self.env = {
            key: value
            for key, value in os.environ.items()
            # nothing from the caller's environment may point this server at shared services
            if key not in ("REDIS_URL", "MONGODB_URI", "MONGODB_DB", "ALLOWED_ORIGINS", "JWT_PUBLIC_KEY")
        }
        self.env.update(
            JWT_SECRET=JWT_SECRET,
            PORT="0",
            HOST="127.0.0.1",
            DATABASE_URL=f"sqlite:{tmp / 't.db'}",
            SINAL_API_KEYS=f"{TENANT}:{API_KEY}",
            LOG_LEVEL="info",
        )
        self.api_key = API_KEY
        self.port = 0
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.proc = subprocess.Popen(
            _bun() + ["src/main.ts", "serve"],
            cwd=str(REPO_ROOT),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read_output, name="sinal-log", daemon=True)
        self._reader.start()
        self.port = self._wait_listening()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self.lines.put(line)
        self.lines.put(None)

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError(f"sinal did not log 'listening' within {START_TIMEOUT_S}s; log: {self.log_tail()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                raise RuntimeError(f"sinal exited with {self.proc.returncode} before listening; log: {self.log_tail()}")
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("msg") == "listening":
                return int(record["port"])

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8")[-chars:]
        except OSError:
            return "(no log)"

    def token(self, user: str = "u1", sub_channels: str = SUB_CHANNELS, roles: Optional[str] = None) -> str:
        """A user JWT minted by the server's own CLI with the same secret."""
        args = _bun() + ["src/main.ts", "token", "--tenant", TENANT, "--user", user, "--sub-channels", sub_channels]
        if roles:
            args += ["--roles", roles]
        out = subprocess.run(
            args, cwd=str(REPO_ROOT), env=self.env, capture_output=True, text=True, timeout=30, check=True
        ).stdout
        return [line for line in out.splitlines() if line.strip()][-1].strip()

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        return self.proc.returncode


@pytest.fixture(scope="session")
def sinal(tmp_path_factory: pytest.TempPathFactory):
    server = SinalServer(tmp_path_factory.mktemp("sinal"))
    try:
        yield server
    finally:
        code = server.stop()
        if code != 0:
            sys.stderr.write(f"\nsinal exited with {code} after SIGTERM; log tail:\n{server.log_tail()}\n")


@pytest.fixture(scope="session")
def user_token(sinal: SinalServer) -> str:
    return sinal.token("u1")


class Subscriber:
    """A WebSocket client of the running server (the `websockets` package, test-only)."""

    def __init__(self, port: int, token: str) -> None:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}/ws?token={token}", open_timeout=10, max_size=None)
        )
        self.backlog: List[Dict[str, Any]] = []
        self._next_id = 0
        self.welcome = self._recv(10)
        assert self.welcome["type"] == "welcome", self.welcome

    def _recv(self, timeout: float) -> Dict[str, Any]:
        return json.loads(self.ws.recv(timeout=timeout))

    def request(self, frame: Dict[str, Any], timeout: float = 10) -> Dict[str, Any]:
        """Sends a frame with a fresh id and returns its reply; frames before it are kept."""
        self._next_id += 1
        frame = dict(frame, id=self._next_id)
        self.ws.send(json.dumps(frame))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(max(0.01, deadline - time.monotonic()))
            if msg.get("type") == "reply" and msg.get("id") == self._next_id:
                return msg
            self.backlog.append(msg)

    def subscribe(self, channel: str) -> Dict[str, Any]:
        reply = self.request({"type": "subscribe", "channel": channel})
        assert reply["ok"] is True, reply
        return reply

    def next_pub(self, timeout: float = 10) -> Dict[str, Any]:
        """The next `pub` frame (the user's own channel and other frames are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.backlog:
                msg = self.backlog.pop(0)
            else:
                msg = self._recv(max(0.01, deadline - time.monotonic()))
            if msg.get("type") == "pub":
                return msg

    def pubs_until(self, channel: str, event: str, timeout: float = 15) -> List[Dict[str, Any]]:
        """Every pub on `channel` up to and including the first one whose event is `event`."""
        deadline = time.monotonic() + timeout
        seen: List[Dict[str, Any]] = []
        while True:
            msg = self.next_pub(max(0.01, deadline - time.monotonic()))
            if msg["channel"] != channel:
                continue
            seen.append(msg)
            if msg["event"] == event:
                return seen

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def subscriber(sinal: SinalServer, user_token: str):
    sub = Subscriber(sinal.port, user_token)
    try:
        yield sub
    finally:
        sub.close()


@pytest.fixture
def publisher(sinal: SinalServer):
    from sinal_client import Publisher

    pub = Publisher(sinal.url, sinal.api_key, timeout=10, max_retries=3, backoff_base=0.05, backoff_cap=0.5)
    try:
        yield pub
    finally:
        pub.close()


def fresh(kind: str = "roulette") -> str:
    """A channel no other test uses."""
    return f"{kind}:{uuid.uuid4().hex[:12]}"

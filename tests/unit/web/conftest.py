"""The apps origin over a fake runtime, in front of a fake app on 127.0.0.1.

The fake app (``fake_app.py``) runs in a process of its own; the apps origin runs
in a uvicorn server on a thread of this one, on a real socket, so HTTP streaming
and WebSockets go through the same code as in production. The seam
``create_apps_app(core, address=...)`` points every session's app at the fake.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Role, Scope
from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.environments.apps import KEY_FILE, App
from sandman.runtime.base import ExecResult
from sandman.web.apps_access import AppsSession
from sandman.web.apps_app import AppsOrigin, create_apps_app

FAKE_APP = Path(__file__).with_name("fake_app.py")
KEY = bytes(range(32))


class LauncherRuntime(FakeRuntime):
    """The fake runtime, with what ``sandman-apps start`` answers settable."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher = ExecResult(0, "started")

    def exec(self, name_or_id: str, argv: Any, user: str, timeout: float) -> ExecResult:
        super().exec(name_or_id, argv, user, timeout)
        return self.launcher


@dataclass
class Upstream:
    port: int
    process: subprocess.Popen[str]


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    process = subprocess.Popen(
        [sys.executable, str(FAKE_APP), "--key", KEY.hex()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    wait_port(port)
    yield Upstream(port, process)
    process.terminate()
    process.wait(timeout=10)


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ServerThread:
    """A uvicorn server on a socket of its own, on a thread with its own loop."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server = self.server
        self.thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[self.sock])), daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the apps origin did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)


@dataclass
class Stack:
    core: Sandman
    runtime: LauncherRuntime
    api: TestClient
    origin: AppsOrigin
    url: str  # the apps origin
    session_id: str
    tokens: dict[str, str]
    touched: list[str] = field(default_factory=list)

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def lab(self, path: str = "", session_id: str | None = None) -> str:
        return f"{self.url}/s/{session_id or self.session_id}/lab/{path}"


def build_stack(root: Path, upstream: Upstream, **settings: Any) -> Iterator[Stack]:
    root.mkdir(parents=True, exist_ok=True)
    (root / KEY_FILE).write_text(KEY.hex() + "\n")
    runtime = LauncherRuntime()
    listener = ServerThread()
    url = f"http://127.0.0.1:{listener.port}"
    core = fake_core(root, runtime, apps_url=url, default_mig_profile=None, **settings)
    touched: list[str] = []
    core.sessions.touch = touched.append  # type: ignore[method-assign]
    for user, role in (("alice", Role.USER), ("bob", Role.USER), ("carol", Role.ADMIN)):
        core.accounts.directory.create(user, UserChanges(role=role))
    tokens = {
        user: core.credentials.create_token(user, "t", frozenset(Scope), None, "bootstrap-admin")[1]
        for user in ("alice", "bob", "carol")
    }

    def fake_address(_: AppsSession, __: App) -> tuple[str, int]:
        return "127.0.0.1", upstream.port

    apps = create_apps_app(core, address=fake_address)
    listener.start(apps)
    with TestClient(create_app(core, run_background=False)) as api:
        created = api.post("/api/v1/sessions", json={"user_id": "alice"}, headers=HEADERS)
        assert created.status_code == 201, created.text
        stack = Stack(
            core,
            runtime,
            api,
            apps.state.apps_origin,
            url,
            created.json()["session_id"],
            tokens,
            touched,
        )
        try:
            yield stack
        finally:
            listener.stop()
    core.stop()


@pytest.fixture
def stack(tmp_path: Path, upstream: Upstream) -> Iterator[Stack]:
    yield from build_stack(tmp_path / "data", upstream)

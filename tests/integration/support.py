"""Helpers shared by the integration tests (the real OpenSSH client)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TOKEN = "test-admin-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def write_key(directory: Path, private_key: str, name: str = "id") -> Path:
    path = directory / name
    path.write_text(private_key)
    os.chmod(path, 0o600)
    return path


def ssh(
    session: dict[str, Any],
    key: Path,
    command: str,
    known_hosts: Path | None = None,
    user: str | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, host key checked strictly against the API's answer."""
    if known_hosts is None:
        known_hosts = key.with_suffix(".known_hosts")
        known_hosts.write_text(
            f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n"
        )
    return subprocess.run(
        [
            "ssh", "-p", str(session["ssh_port"]), "-i", str(key),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ConnectTimeout=20", *extra,
            f"{user or session['user_id']}@127.0.0.1", command,
        ],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    data_dir: Path
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes] | None = None
    start_args: list[str] = field(default_factory=list)  # flags for ``sandman serve``

    def start(self) -> None:
        log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandman.cli", "serve", *self.start_args], env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, (self.data_dir / "serve.log").read_text()
            time.sleep(0.2)
        raise AssertionError("sandman serve did not answer")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.url}/api/v1{path}", headers=HEADERS, timeout=30).json()

    def create(self, user_id: str, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/v1/sessions",
            json={"user_id": user_id, **body},
            headers=HEADERS,
            timeout=180,
        )

    def deployment(self) -> str:
        import sqlite3

        with sqlite3.connect(self.data_dir / "sandman.db") as db:
            (value,) = db.execute("SELECT value FROM meta WHERE key='deployment_id'").fetchone()
            return str(value)


def start_gateway(server: Server) -> subprocess.Popen[bytes]:
    """``sandman gateway`` alone, sharing the server's database; the caller stops it."""
    log = open(server.data_dir / "gateway.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "sandman.cli", "gateway"], env=server.env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    host, port = server.env["SANDMAN_SSH_LISTEN"].rsplit(":", 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, int(port))) == 0:
                return process
        assert process.poll() is None, (server.data_dir / "gateway.log").read_text()
        time.sleep(0.2)
    raise AssertionError("sandman gateway did not listen")


class Terminal:
    """``ssh -tt`` through the gateway, held open with nothing typed; its output is
    collected by a thread."""

    def __init__(self, session: dict[str, Any], key: Path) -> None:
        known = key.with_suffix(".known")
        known.write_text(f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n")
        self.process = subprocess.Popen(
            ["ssh", "-tt", "-p", str(session["ssh_port"]), "-i", str(key), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
             f"{session['user_id']}@127.0.0.1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(4096):
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"no {text!r} in {self.output!r}"
            assert self.process.poll() is None, self.output
            time.sleep(0.05)

    def close(self) -> int:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._reader.join(timeout=5)
        return self.process.wait()

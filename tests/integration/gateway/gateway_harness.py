"""A real OpenSSH sshd upstream, a gateway in a thread, and an OpenSSH client.

Shared by the gateway's integration tests and ``bench/bench_gateway.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sandman.gateway.routing import ConnectionRecord, Route
from sandman.gateway.server import GatewayServer

T = TypeVar("T")
SSHD = "/usr/sbin/sshd"
RUN_USER = os.environ.get("USER") or "root"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def keygen(path: Path, comment: str = "test") -> str:
    """Make an Ed25519 key pair with ssh-keygen; return the public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class MemoryRouteSource:
    """An in-memory RouteSource: keys and routes set by the test, records kept."""

    keys: dict[str, list[str]] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    records: list[ConnectionRecord] = field(default_factory=list)
    touches: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorized_keys(self, user_id: str) -> list[str]:
        with self.lock:
            return list(self.keys.get(user_id, []))

    def route(self, user_id: str) -> Route | None:
        with self.lock:
            return self.routes.get(user_id)

    def record_connection(self, record: ConnectionRecord) -> None:
        with self.lock:
            self.records.append(record)

    def check_password(self, user_id: str, password: str) -> bool:
        return False

    def touch(self, session_id: str) -> None:
        with self.lock:
            self.touches.append(session_id)

    def records_for(self, user_id: str) -> list[ConnectionRecord]:
        with self.lock:
            return [r for r in self.records if r.user_id == user_id]


class Sshd:
    """An OpenSSH sshd on 127.0.0.1 with its own config, host key and authorized_keys."""

    def __init__(self, root: Path, authorized: list[str], *, max_startups: str = "10:30:100"):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = root / "ssh_host_ed25519_key"
        self.host_public_key = keygen(self.host_key, "upstream-host")
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text("\n".join(authorized) + "\n")
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{self.port}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"AllowUsers {RUN_USER}",
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "AllowTcpForwarding yes",
                    "AllowAgentForwarding yes",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "AcceptEnv LANG LC_*",
                    f"MaxStartups {max_startups}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class GatewayThread:
    """A GatewayServer running on its own event loop in a background thread."""

    def __init__(self, source: MemoryRouteSource, root: Path, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GatewayServer(
            source,
            listen_host="127.0.0.1",
            listen_port=0,
            host_key_path=root / "gateway_host_key",
            identity_key_path=root / "gateway_identity_key",
            **kwargs,
        )

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.call(self.server.start())

    @property
    def port(self) -> int:
        return self.server.bound_port

    def stop(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class Client:
    """OpenSSH command lines aimed at one server (the gateway or the upstream)."""

    def __init__(self, root: Path, port: int, host_public_key: str, *, cipher: str | None = None):
        self.port = port
        self.known_hosts = root / f"known_hosts_{port}"
        self.known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
        self.cipher = cipher

    def options(self, key: Path) -> list[str]:
        opts = [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
            "-i",
            str(key),
        ]
        if self.cipher:
            opts += ["-o", f"Ciphers={self.cipher}"]
        return opts

    def ssh(self, user: str, key: Path, *args: str) -> list[str]:
        return ["ssh", "-p", str(self.port), *self.options(key), f"{user}@127.0.0.1", *args]

    def scp(self, key: Path, *args: str) -> list[str]:
        return ["scp", "-q", "-P", str(self.port), *self.options(key), *args]

    def sftp(self, key: Path, *args: str) -> list[str]:
        return ["sftp", "-q", "-P", str(self.port), *self.options(key), *args]

    def rsync_shell(self, key: Path) -> str:
        return " ".join(["ssh", "-p", str(self.port), *self.options(key)])


def make_route(user: str, sshd: Sshd, *, host_public_key: str | None = None) -> Route:
    return Route(
        session_id=f"sess-{user}",
        user_id=user,
        host="127.0.0.1",
        port=sshd.port,
        host_public_key=host_public_key or sshd.host_public_key,
        gpu="MIG 1g.10gb on NVIDIA H100 80GB HBM3",
        expires_at=datetime.now(UTC) + timedelta(hours=2),
        upstream_user=RUN_USER,
    )


def have_openssh_server() -> bool:
    return Path(SSHD).exists() and shutil.which("ssh") is not None


@dataclass
class Env:
    root: Path
    source: MemoryRouteSource
    sshd: Sshd
    gateway: GatewayThread
    client: Client
    direct: Client
    keys: dict[str, Path]

    def ssh(self, user: str, *args: str, key: str | None = None) -> list[str]:
        return self.client.ssh(user, self.keys[key or user], *args)

    def direct_ssh(self, *args: str) -> list[str]:
        """Straight to the upstream sshd, as the gateway itself logs in."""
        return self.direct.ssh(RUN_USER, self.root / "gateway_identity_key", *args)

"""Waiting until a container's sshd really answers (not just a proxy accepting)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from sandman.errors import RuntimeFailure


def sshd_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True once the peer sends an SSH identification string."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            return connection.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_sshd(
    host: str,
    port: int,
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
    interval: float = 0.05,
    probe: Callable[[str, int], bool] = sshd_answers,
) -> None:
    """Poll the banner; ``alive`` returns why the container cannot answer any more, or None."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if probe(host, port):
            return
        if time.monotonic() >= next_check:
            reason = alive()
            if reason:
                raise RuntimeFailure(reason)
            next_check = time.monotonic() + 0.5
        time.sleep(interval)
    raise RuntimeFailure(f"the container's sshd did not answer on {host}:{port} in {timeout:g}s")

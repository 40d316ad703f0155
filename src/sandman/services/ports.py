"""Host ports for sessions' sshd, reserved in the database before use."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from sandman.errors import CapacityExhausted


def port_is_bindable(address: str, port: int) -> bool:
    """Whether nothing else on the host listens there (checked before reserving)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def choose_port(start: int, end: int, claimed: Iterable[int], address: str) -> int:
    """The lowest port of the range that no session holds and the host has free."""
    taken = set(claimed)
    for port in range(start, end + 1):
        if port not in taken and port_is_bindable(address, port):
            return port
    raise CapacityExhausted(
        f"no free SSH port: all {end - start + 1} ports of {start}-{end} are in use"
    )

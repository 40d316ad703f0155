"""Places for sealed sessions to try to reach, none of them off this machine: a
listener on the host itself, and network namespaces joined to the host by a veth
pair (a link-local "metadata service", a stand-in for the outside world).

Every name is ``smt-<random>``; address ranges are picked where no route of the
host's goes; everything is removed on exit, also when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

READY = b"sandman-ok\n"

# Listens on every TCP port named, and on UDP port 53 of each address (so answers
# come from the address asked), answering READY: a service and a resolver in one.
LISTENER = r"""
import socket, sys, threading
def tcp(port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(64)
    while True:
        connection, _ = server.accept()
        connection.sendall(b"sandman-ok\n")
        connection.close()
def udp(address):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((address, 53))
    while True:
        _, peer = server.recvfrom(512)
        server.sendto(b"sandman-ok\n", peer)
for port in sys.argv[2:]:
    threading.Thread(target=tcp, args=(int(port),), daemon=True).start()
for address in sys.argv[1].split(","):
    threading.Thread(target=udp, args=(address,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""

# Tries each "tcp|udp,HOST,PORT" and prints {target: "open" | "closed: why"} as JSON;
# runs inside a session container (its python3) and on the host, for the controls.
PROBE = r"""
import json, socket, sys
found = {}
for target in sys.argv[1:]:
    kind, host, port = target.split(",")
    kind_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    try:
        family, type_, proto, _, address = socket.getaddrinfo(host, int(port), type=kind_type)[0]
        with socket.socket(family, type_, proto) as probe:
            probe.settimeout(3)
            if kind == "tcp":
                probe.connect(address)
            else:
                probe.sendto(b"ping", address)
            found[target] = "open" if probe.recv(64) else "closed: no answer"
    except OSError as exc:
        found[target] = f"closed: {exc}"
print(json.dumps(found))
"""


def probe_here(targets: Sequence[str]) -> dict[str, str]:
    """``PROBE`` from the host itself."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *targets], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def host_routes() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every network the host routes or holds an address in, but the default route."""
    found = []
    for family in ("-4", "-6"):
        for argv in (["ip", family, "route", "show", "table", "all"], ["ip", family, "addr"]):
            for word in subprocess.run(argv, capture_output=True, text=True).stdout.split():
                with suppress(ValueError):
                    found.append(ipaddress.ip_network(word, strict=False))
    return found


def unused(candidates: Sequence[str]) -> ipaddress.IPv4Network:
    """The first candidate network that overlaps none of the host's."""
    taken = host_routes()
    for text in candidates:
        network = ipaddress.IPv4Network(text)
        if not any(network.version == t.version and network.overlaps(t) for t in taken):
            return network
    raise AssertionError(f"no unused network among {candidates}")


def host_addresses(version: int, scope: str = "global", device: str | None = None) -> list[str]:
    """The host's own addresses of one family and scope (of one interface)."""
    argv = ["ip", "-j", f"-{version}", "addr", *(["show", "dev", device] if device else [])]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [
        info["local"]
        for interface in json.loads(out.stdout)
        for info in interface.get("addr_info", [])
        if info.get("scope") == scope
    ]


@dataclass
class Namespace:
    """A network namespace behind a veth pair, with ``LISTENER`` running in it."""

    name: str
    host_veth: str
    addresses: list[str]  # the namespace's own

    def targets(self, kind: str, port: int) -> list[str]:
        return [f"{kind},{address},{port}" for address in self.addresses]


@contextmanager
def namespace(
    network: ipaddress.IPv4Network, hosts: Sequence[int], ports: Sequence[int]
) -> Iterator[Namespace]:
    """A namespace holding host numbers ``hosts`` of ``network``; the host holds the
    first address (its route to the network) and is the namespace's way back."""
    suffix = uuid.uuid4().hex[:6]
    name, host_veth, inner = f"smt-{suffix}", f"smt-{suffix}-h", f"smt-{suffix}-n"
    gateway = network.network_address + 1
    addresses = [str(network.network_address + n) for n in hosts]
    listener: subprocess.Popen[bytes] | None = None
    try:
        run("ip", "netns", "add", name)
        run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", name)
        run("ip", "addr", "add", f"{gateway}/{network.prefixlen}", "dev", host_veth)
        run("ip", "link", "set", host_veth, "up")
        run("ip", "-n", name, "link", "set", "lo", "up")
        for address in addresses:
            run("ip", "-n", name, "addr", "add", f"{address}/{network.prefixlen}", "dev", inner)
        run("ip", "-n", name, "link", "set", inner, "up")
        run("ip", "-n", name, "route", "add", "default", "via", str(gateway))
        listener = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", LISTENER, ",".join(addresses),
             *map(str, ports)],
            stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert listener.stdout is not None and listener.stdout.readline() == b"listening\n"
        yield Namespace(name, host_veth, addresses)
    finally:
        if listener is not None:
            with suppress(ProcessLookupError):
                os.killpg(listener.pid, signal.SIGKILL)
            listener.wait()
        subprocess.run(["ip", "link", "del", host_veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def link_local() -> ipaddress.IPv4Network:
    """A /30 of 169.254.0.0/16 the host does not use, away from 169.254.169.0/24 so the
    host's own metadata service stays reachable to it while a test runs."""
    thirds = [n for n in range(1, 255) if n != 169]
    random.shuffle(thirds)
    return unused([f"169.254.{third}.{4 * random.randint(1, 60)}/30" for third in thirds[:40]])


def outside() -> ipaddress.IPv4Network:
    """A /24 of the benchmarking range 198.18.0.0/15 the host does not use."""
    return unused([f"198.{18 + i % 2}.{random.randint(0, 255)}.0/24" for i in range(40)])


class HostListener:
    """A TCP listener on every address of the host (``::``, IPv4 too)."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("::", 0))
        self.server.listen(64)
        self.port: int = self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            with connection:
                connection.sendall(READY)

    def close(self) -> None:
        self.server.close()

    def targets(self, addresses: Sequence[str]) -> list[str]:
        return [f"tcp,{address},{self.port}" for address in addresses]


def parse_probe(output: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result

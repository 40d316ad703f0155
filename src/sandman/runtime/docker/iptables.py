"""Applies, checks and removes the sealing rules (``firewall``) with the iptables
commands, the same ones (and so the same backend, nf_tables or legacy) Docker uses.

Every call takes the xtables lock (``-w``); a repair is one ``iptables-restore
--noflush`` transaction. Checking costs one ``iptables -S`` per family, cheap
enough for every reconciler pass, so rules an engine restart or a firewall
reload dropped come back within one pass.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandman.errors import ConfigurationError, RuntimeFailure
from sandman.runtime.docker.firewall import (
    Address,
    Family,
    Plan,
    Seal,
    Table,
    bridge_name,
    has_ipv6,
    host_resolvers,
    owned,
    parse_listing,
    removal,
    repair,
    restore_script,
    seal_plan,
)
from sandman.runtime.egress import Egress

log = logging.getLogger(__name__)

SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"  # a service's PATH may lack the sbin dirs
RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
TIMEOUT = 30.0

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class Iptables:
    """One family's ``iptables`` (or ``ip6tables``) and its ``-restore`` sibling."""

    def __init__(self, family: Family, run: Runner = subprocess.run) -> None:
        self.family = family
        self.name = "iptables" if family == 4 else "ip6tables"
        self._run = run
        self._binary: str | None = None

    @property
    def binary(self) -> str:
        if self._binary is None:
            found = shutil.which(self.name, path=f"{os.environ.get('PATH', '')}:{SEARCH_PATH}")
            if found is None:
                raise ConfigurationError(
                    f"sealing session containers needs {self.name}, which is not installed "
                    "(apt-get install iptables); SANDMAN_SEAL_NETWORK=false runs without it, "
                    "with sessions able to reach this host"
                )
            self._binary = found
        return self._binary

    def _call(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            done = self._run(
                argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeFailure(f"{argv[0]} failed: {exc}") from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()
            if "denied" in message or "must be root" in message:
                raise ConfigurationError(
                    f"sealing session containers needs root (CAP_NET_ADMIN) for {self.name}: "
                    f"{message}; run Sandman as root or set SANDMAN_SEAL_NETWORK=false"
                )
            raise RuntimeFailure(f"{' '.join(argv[:3])} failed: {message}")
        return done.stdout

    def listing(self) -> Table:
        return parse_listing(self._call([self.binary, "-w", "-t", "filter", "-S"]))

    def restore(self, lines: list[str]) -> None:
        restore = str(Path(self.binary).with_name(f"{self.name}-restore"))
        self._call([restore, "-w", "--noflush"], stdin=restore_script(lines))


def read_resolvers() -> tuple[Address, ...]:
    systemd = SYSTEMD_RESOLV_CONF.read_text() if SYSTEMD_RESOLV_CONF.exists() else None
    return host_resolvers(RESOLV_CONF.read_text() if RESOLV_CONF.exists() else "", systemd)


@dataclass
class Status:
    """One family's rules of a deployment: what should be, and whether it is."""

    family: Family
    plan: Plan | None  # None: the network has no such addresses
    repairs: list[str]  # restore lines the check found wanting; empty when in place


class Sealer:
    """Keeps one deployment's session network sealed (``firewall``), for IPv4 and, on
    networks with IPv6 subnets, IPv6."""

    def __init__(
        self,
        deployment: str,
        egress: Egress,
        dns_servers: tuple[Address, ...] = (),
        tools: Mapping[Family, Iptables] | None = None,
        resolvers: Callable[[], tuple[Address, ...]] = read_resolvers,
    ) -> None:
        self.deployment = deployment
        self.egress = egress
        self.dns_servers = dns_servers
        self.tools: Mapping[Family, Iptables] = tools or {4: Iptables(4), 6: Iptables(6)}
        self._resolvers = resolvers
        self._sealed: set[str] = set()  # bridges this process has sealed (for its logs)

    def statuses(self, network: Mapping[str, Any]) -> list[Status]:
        """What should be installed for ``network`` (its ``docker network inspect``
        document) and the repairs each family needs."""
        seal = Seal(
            self.deployment,
            str(network.get("Name", "")),
            bridge_name(network),
            self.egress,
            self.dns_servers or self._resolvers(),
        )
        found = []
        for family in (4, 6):
            tool = self.tools[family]
            if family == 6 and not has_ipv6(network):
                try:  # nothing to seal; only rules of an earlier IPv6 network to remove
                    table = tool.listing()
                except (ConfigurationError, RuntimeFailure):
                    continue  # no ip6tables, or no IPv6 in this kernel: nothing to remove
                found.append(Status(6, None, removal(self.deployment, table)))
                continue
            table = tool.listing()
            parent = "DOCKER-USER" if "DOCKER-USER" in table else "FORWARD"
            plan = seal_plan(seal, family, forward_parent=parent)
            found.append(Status(family, plan, repair(plan, table)))
        return found

    def seal(self, network: Mapping[str, Any]) -> None:
        """Install the rules, or repair them where they drifted; idempotent. Rules that
        cannot be installed are a ``ConfigurationError``: Sandman refuses to start
        rather than run sessions that can reach the host."""
        try:
            self._seal(network)
        except RuntimeFailure as exc:
            raise ConfigurationError(
                f"could not seal the session network {network.get('Name')}: {exc.message}; "
                "SANDMAN_SEAL_NETWORK=false runs without sealing, with sessions able to "
                "reach this host"
            ) from exc

    def _seal(self, network: Mapping[str, Any]) -> None:
        bridge = bridge_name(network)
        for status in self.statuses(network):
            if not status.repairs:
                continue
            self.tools[status.family].restore(status.repairs)
            if bridge in self._sealed:
                log.warning(
                    "the IPv%d firewall rules sealing %s had changed (an engine restart or a "
                    "firewall reload?); restored them",
                    status.family,
                    network.get("Name"),
                )
        if bridge not in self._sealed:
            log.info(
                "sessions on %s (%s) are sealed off from this host, link-local addresses "
                "and each other; egress: %s",
                network.get("Name"),
                bridge,
                self.egress,
            )
            self._sealed.add(bridge)


def unseal(deployment: str, tools: Mapping[Family, Iptables] | None = None) -> list[str]:
    """Remove a deployment's rules from both families; the lines removed."""
    removed = []
    for tool in (tools or {4: Iptables(4), 6: Iptables(6)}).values():
        try:
            table = tool.listing()
        except RuntimeFailure:
            if tool.family == 6:
                continue  # no IPv6 in this kernel: nothing was installed
            raise
        lines = removal(deployment, table)
        if lines:
            tool.restore(lines)
            removed += [f"{tool.name} {line}" for line in owned(table, deployment)]
    return removed

"""The firewall rules that seal session containers in (pure: no I/O).

Docker's session network keeps containers apart (no inter-container traffic)
and lets them out through NAT. It does not stop a container from reaching the
host it runs on, the cloud's metadata service, or anything else the host can
reach. These rules do, on the two paths a container's packet can take:

- to one of the host's own addresses (the bridge's gateway, the host's public
  address, another bridge's gateway): delivered locally, through INPUT, never
  FORWARD. ``SANDMAN-IN-<deployment>``, jumped to from INPUT for packets from
  the session bridge, lets through replies to connections the host opened (the
  gateway and docker-proxy reaching sshd) and DNS to the resolvers, and rejects
  the rest.
- anywhere else: forwarded. ``SANDMAN-FWD-<deployment>``, jumped to from
  DOCKER-USER (the hook Docker runs before its own forwarding rules and never
  flushes), lets through replies and DNS, rejects other sessions, link-local
  and metadata addresses, then applies the egress setting.

The chains only reject or RETURN: what they let through is still judged by the
host's and Docker's own rules (an ACCEPT here would skip Docker's isolation of
networks from each other). They reject rather than drop, so a refused ``pip
install`` fails at once instead of hanging.

Rules are written exactly as ``iptables -S`` prints them, so a listing compares
with the plan line by line, and a repair is one ``iptables-restore --noflush``
transaction: a chain is never seen half-written.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sandman.runtime.egress import Egress, Network

Family = Literal[4, 6]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Table = dict[str, list[str]]  # chain -> its rules (``-S`` lines less ``-A <chain> ``)

CHAIN_PREFIX = "SANDMAN-"
INPUT_PREFIX = "SANDMAN-IN-"
FORWARD_PREFIX = "SANDMAN-FWD-"

ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
REJECT: dict[Family, str] = {
    4: "-j REJECT --reject-with icmp-admin-prohibited",
    6: "-j REJECT --reject-with icmp6-adm-prohibited",
}
# What IPv6 on the bridge cannot work without: router solicitations, neighbour
# solicitations and advertisements (the host answering for its gateway address).
NEIGHBOUR_DISCOVERY = (133, 135, 136)

# Sealed whatever the egress setting says: link-local (AWS, GCP, Azure and
# Oracle serve instance metadata and credentials at 169.254.169.254), Alibaba
# Cloud's metadata address, and AWS's IPv6 one.
SEALED: dict[Family, tuple[Network, ...]] = {
    4: (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("100.100.100.200/32")),
    6: (ipaddress.ip_network("fe80::/10"), ipaddress.ip_network("fd00:ec2::254/128")),
}

# What Docker's embedded DNS forwards to when the host names no usable resolver.
DOCKER_DEFAULT_DNS: tuple[Address, ...] = tuple(
    ipaddress.ip_address(a)
    for a in ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")
)

_DEPLOYMENT = re.compile(r"^[0-9a-z]{1,16}$")  # chain names stay under iptables' 29
_TARGET = re.compile(r"(?:^|\s)-j (\S+)")


@dataclass(frozen=True)
class Seal:
    """What sealing one deployment's session network depends on."""

    deployment: str
    network: str  # the Docker network's name, for people reading the rules
    bridge: str  # its bridge interface on the host
    egress: Egress
    resolvers: tuple[Address, ...]  # where DNS may go: what Docker's embedded DNS asks


@dataclass(frozen=True)
class Rule:
    chain: str
    spec: str

    def __str__(self) -> str:
        return f"-A {self.chain} {self.spec}"


@dataclass(frozen=True)
class Plan:
    """One family's rules: Sandman's chains with their rules in order, and the jumps
    from the host's chains into them."""

    family: Family
    chains: tuple[tuple[str, tuple[str, ...]], ...]
    jumps: tuple[Rule, ...]

    @property
    def chain_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.chains)

    def lines(self) -> list[str]:
        """As ``iptables -S`` lists them."""
        lines = [str(jump) for jump in self.jumps]
        for name, specs in self.chains:
            lines.append(f"-N {name}")
            lines.extend(str(Rule(name, spec)) for spec in specs)
        return lines


def chain_names(deployment: str) -> tuple[str, str]:
    """The deployment's (input, forward) chains: its own, so removing them touches
    no rule of Docker's, the host's or another deployment's."""
    if not _DEPLOYMENT.match(deployment):
        raise ValueError(f"a deployment id for chain names must match {_DEPLOYMENT.pattern}")
    return INPUT_PREFIX + deployment, FORWARD_PREFIX + deployment


def seal_plan(seal: Seal, family: Family, forward_parent: str = "DOCKER-USER") -> Plan:
    """The rules that seal ``seal.bridge`` for one address family.

    ``forward_parent`` is DOCKER-USER where Docker manages that family's rules;
    for IPv6 it often does not, and FORWARD itself is hooked instead.
    """
    input_chain, forward_chain = chain_names(seal.deployment)
    reject = REJECT[family]
    width = 32 if family == 4 else 128
    dns = [
        f"-d {resolver}/{width} -p {protocol} -m {protocol} --dport 53 -j RETURN"
        for resolver in seal.resolvers
        if resolver.version == family
        for protocol in ("udp", "tcp")
    ]
    inbound = [ESTABLISHED]
    if family == 6:
        inbound += [
            f"-p ipv6-icmp -m icmp6 --icmpv6-type {kind} -j RETURN" for kind in NEIGHBOUR_DISCOVERY
        ]
    inbound += [*dns, reject]
    forward = [
        ESTABLISHED,
        *dns,
        f"-o {seal.bridge} {reject}",  # other sessions, even if the network allowed it
        *(f"-d {network} {reject}" for network in SEALED[family]),
    ]
    if seal.egress.mode != "allow":
        forward += [f"-d {n} -j RETURN" for n in seal.egress.networks if n.version == family]
        forward.append(reject)
    tag = f'-m comment --comment "sandman deployment={seal.deployment} network={seal.network}"'
    return Plan(
        family,
        ((input_chain, tuple(inbound)), (forward_chain, tuple(forward))),
        (
            Rule("INPUT", f"-i {seal.bridge} {tag} -j {input_chain}"),
            Rule(forward_parent, f"-i {seal.bridge} {tag} -j {forward_chain}"),
        ),
    )


def parse_listing(text: str) -> Table:
    """``iptables -S`` of one table as {chain: [rules]} (built-in and own chains)."""
    table: Table = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] in ("-P", "-N"):
            table.setdefault(parts[1], [])
        elif len(parts) == 3 and parts[0] == "-A":
            table.setdefault(parts[1], []).append(parts[2])
    return table


def _target(spec: str) -> str:
    match = _TARGET.search(spec)
    return match.group(1) if match else ""


def _in_front(spec: str, specs: list[str]) -> bool:
    """Present once, with nothing but Sandman's own jumps before it: no rule of the
    host's can accept a session's packet before Sandman has looked at it."""
    if specs.count(spec) != 1:
        return False
    return all(_target(s).startswith(CHAIN_PREFIX) for s in specs[: specs.index(spec)])


def repair(plan: Plan, table: Table) -> list[str]:
    """``iptables-restore --noflush`` lines that make ``table`` hold ``plan``; none
    when it already does. A declared chain is emptied first, so its rules are
    replaced in the same transaction."""
    declarations, commands = [], []
    for name, specs in plan.chains:
        if table.get(name) != list(specs):
            declarations.append(f":{name} - [0:0]")
            commands += [str(Rule(name, spec)) for spec in specs]
    ours = set(plan.chain_names)
    for chain, rules in table.items():  # jumps to a former bridge, or from a former hook
        for spec in rules:
            if _target(spec) in ours and Rule(chain, spec) not in plan.jumps:
                commands.append(f"-D {chain} {spec}")
    for jump in plan.jumps:
        rules = table.get(jump.chain, [])
        if not _in_front(jump.spec, rules):
            commands += [f"-D {jump.chain} {jump.spec}"] * rules.count(jump.spec)
            commands.append(f"-I {jump.chain} 1 {jump.spec}")
    return declarations + commands


def removal(deployment: str, table: Table) -> list[str]:
    """``iptables-restore --noflush`` lines that remove the deployment's chains and
    every jump into them, and nothing else."""
    ours = [name for name in chain_names(deployment) if name in table]
    lines = [
        f"-D {chain} {spec}"
        for chain, specs in table.items()
        if chain not in ours
        for spec in specs
        if _target(spec) in ours
    ]
    return lines + [f"-F {name}" for name in ours] + [f"-X {name}" for name in ours]


def restore_script(lines: Iterable[str]) -> str:
    return "*filter\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"


def deployments(table: Table) -> list[str]:
    """The deployments with chains in this table."""
    found = set()
    for chain in table:
        for prefix in (INPUT_PREFIX, FORWARD_PREFIX):
            if chain.startswith(prefix):
                found.add(chain.removeprefix(prefix))
    return sorted(found)


def owned(table: Table, deployment: str | None = None) -> list[str]:
    """Sandman's lines in a listing (one deployment's, or every deployment's): the
    jumps into its chains, then the chains with their rules."""
    ids = [deployment] if deployment is not None else deployments(table)
    ours = [name for d in ids for name in chain_names(d) if name in table]
    lines = [
        str(Rule(chain, spec))
        for chain, specs in table.items()
        if chain not in ours
        for spec in specs
        if _target(spec) in ours
    ]
    for name in ours:
        lines.append(f"-N {name}")
        lines.extend(str(Rule(name, spec)) for spec in table[name])
    return lines


def bridge_name(attrs: Mapping[str, Any]) -> str:
    """The host interface of a Docker bridge network (``docker network inspect``)."""
    named = (attrs.get("Options") or {}).get("com.docker.network.bridge.name")
    return str(named) if named else f"br-{str(attrs['Id'])[:12]}"


def has_ipv6(attrs: Mapping[str, Any]) -> bool:
    configs = (attrs.get("IPAM") or {}).get("Config") or []
    return bool(attrs.get("EnableIPv6")) or any(":" in (c.get("Subnet") or "") for c in configs)


def nameservers(resolv_conf: str) -> list[Address]:
    found = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:  # a zone (fe80::1%eth0) names the interface, not the address
                found.append(ipaddress.ip_address(words[1].split("%", 1)[0]))
            except ValueError:
                continue
    return found


def host_resolvers(resolv_conf: str, systemd_resolv_conf: str | None = None) -> tuple[Address, ...]:
    """Where Docker's embedded DNS (127.0.0.11, inside each container) forwards
    queries, from the container's own network namespace: the host's nameservers;
    systemd-resolved's upstreams where the host names only its stub (127.0.0.53);
    Docker's defaults where no usable one is left. Loopback ones are dropped: a
    container cannot reach the host's loopback."""
    servers = nameservers(resolv_conf)
    if servers and all(s.is_loopback for s in servers) and systemd_resolv_conf is not None:
        servers = nameservers(systemd_resolv_conf)
    servers = [s for s in servers if not s.is_loopback]
    return tuple(dict.fromkeys(servers)) or DOCKER_DEFAULT_DNS

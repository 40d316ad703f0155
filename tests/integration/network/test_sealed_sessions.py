"""From inside real session containers: the host, link-local addresses and other
sessions are out of reach, egress follows SANDMAN_EGRESS with DNS kept, replies
to the host's own connections still arrive, and the rules are listed and removed
by deployment.

Traffic goes only to the host itself, to containers these tests start and to
network namespaces they create; every "closed" has a control showing the same
place open from the host or from an unsealed session.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool
from tests.integration.conftest import Harness, remove_deployment_containers
from tests.integration.network.places import (
    PROBE,
    HostListener,
    Namespace,
    host_addresses,
    link_local,
    namespace,
    outside,
    parse_probe,
    probe_here,
)

from sandman.runtime.base import SESSION_LABEL, SSHD_PORT
from sandman.runtime.docker.firewall import bridge_name, owned, parse_listing

SERVICE = 8080  # what the namespaces serve, besides DNS on 53


@dataclass
class Session:
    harness: Harness
    container: Any

    @property
    def _network(self) -> dict[str, Any]:
        name = self.harness.core.settings.network_name
        found: dict[str, Any] = self.container.attrs["NetworkSettings"]["Networks"][name]
        return found

    def address(self, version: int = 4) -> str:
        return str(self._network["IPAddress" if version == 4 else "GlobalIPv6Address"])

    def gateway(self, version: int = 4) -> str:
        return str(self._network["Gateway" if version == 4 else "IPv6Gateway"])

    def probe(self, targets: list[str]) -> dict[str, str]:
        user = self.container.attrs["Config"]["User"]
        argv = ["python3", "-c", PROBE, *targets]
        result = self.harness.core.runtime.exec(self.container.id, argv, user, 120)
        assert result.exit_code == 0, result.output
        return parse_probe(result.output)


def start(harness: Harness, user: str) -> Session:
    """A session; its creation already proves the host reaches its sshd (readiness)."""
    response = harness.create(user, gpu_count=0)
    assert response.status_code == 201, response.text
    session_id = response.json()["session_id"]
    (container,) = [c for c in harness.containers() if c.labels[SESSION_LABEL] == session_id]
    return Session(harness, container)


def all_open(results: dict[str, str]) -> bool:
    return all(r == "open" for r in results.values())


def all_closed(results: dict[str, str]) -> bool:
    return all(r.startswith("closed") for r in results.values())


@pytest.fixture
def sandman(
    make_harness: Callable[..., Harness], docker_client: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Harness]]:
    """A Sandman on a session network of its own (or a given one), so settings such as
    egress or sealing off apply to its sessions alone; its networks go afterwards."""
    networks: list[str] = []
    made: list[Harness] = []

    def make(network: str | None = None, ipv6: bool = False, **settings: Any) -> Harness:
        if network is None:
            network = f"smt-net-{uuid.uuid4().hex[:6]}"
            networks.append(network)
            if ipv6:  # Sandman creates IPv4 networks; an admin may give it this one
                prefix = f"fd{random.getrandbits(40):010x}"
                subnet = f"{prefix[:4]}:{prefix[4:8]}:{prefix[8:]}::/64"
                docker_client.networks.create(
                    network,
                    driver="bridge",
                    enable_ipv6=True,
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]),
                    options={"com.docker.network.bridge.enable_icc": "false"},
                )
        harness = make_harness(network_name=network, **settings)
        made.append(harness)
        return harness

    yield make
    failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    for harness in made:  # before the network can go; make_harness ends the rest
        remove_deployment_containers(harness.core.deployment_id, failed)
    for name in networks:
        for network in docker_client.networks.list(names=[name]):
            if network.name == name:
                network.remove()


@pytest.fixture
def listener() -> Iterator[HostListener]:
    found = HostListener()
    yield found
    found.close()


@pytest.fixture(scope="module")
def world() -> Iterator[Namespace]:
    """A stand-in for the outside world: two addresses of a benchmarking network."""
    with namespace(outside(), hosts=[2, 130], ports=[SERVICE, 53]) as found:
        yield found


def test_a_session_reaches_no_address_of_the_host(
    sandman: Callable[..., Harness], listener: HostListener
) -> None:
    sealed = start(sandman(), "hostsealed")
    control = start(sandman(seal_network=False), "hostopen")
    everywhere = sorted({sealed.gateway(), *host_addresses(4)})
    before = listener.accepted
    results = sealed.probe(listener.targets(everywhere))
    assert all_closed(results), results
    assert listener.accepted == before  # not one probe reached the listener
    assert all_open(control.probe(listener.targets([control.gateway(), *host_addresses(4)])))
    assert all_open(probe_here(listener.targets(["127.0.0.1", *host_addresses(4)])))


def test_a_session_on_an_ipv6_network_reaches_no_address_of_the_host(
    sandman: Callable[..., Harness], listener: HostListener, docker_client: Any
) -> None:
    sealed_harness = sandman(ipv6=True)
    sealed = start(sealed_harness, "v6sealed")
    control = start(sandman(ipv6=True, seal_network=False), "v6open")
    network = docker_client.networks.get(sealed_harness.core.settings.network_name)
    bridge_local = host_addresses(6, "link", device=bridge_name(network.attrs))
    everywhere = [
        sealed.gateway(6),
        sealed.gateway(4),
        *host_addresses(6),
        *(f"{address}%eth0" for address in bridge_local),  # the bridge, from inside
    ]
    results = sealed.probe(listener.targets(everywhere))
    assert len(results) >= 4 and all_closed(results), results
    assert all_open(control.probe(listener.targets([control.gateway(6), *host_addresses(6)])))


def test_a_link_local_address_is_unreachable(sandman: Callable[..., Harness]) -> None:
    """A metadata service of its own at a link-local address, reachable from the host
    and from an unsealed session, but not from a sealed one."""
    with namespace(link_local(), hosts=[2], ports=[80]) as metadata:
        targets = metadata.targets("tcp", 80)
        assert all_open(probe_here(targets))
        assert all_open(start(sandman(seal_network=False), "metaopen").probe(targets))
        results = start(sandman(), "metasealed").probe(targets)
        assert all_closed(results), results


def test_sessions_cannot_reach_each_other_and_the_host_still_reaches_them(
    make_harness: Callable[..., Harness],
) -> None:
    """On the shared test network, with the host connecting to each container's own
    address (as a gateway in ``network`` mode does): creation waits for that."""
    harness = make_harness(gateway_upstream="network")
    first, second = start(harness, "neighboura"), start(harness, "neighbourb")
    target = [f"tcp,{second.address()},{SSHD_PORT}"]
    assert all_open(probe_here(target))
    results = first.probe(target)
    assert all_closed(results), results


def test_egress_allow_reaches_the_outside(
    sandman: Callable[..., Harness], world: Namespace
) -> None:
    results = start(sandman(egress="allow"), "egressallow").probe(world.targets("tcp", SERVICE))
    assert all_open(results), results


def test_egress_deny_leaves_only_dns_to_the_resolvers(
    sandman: Callable[..., Harness], world: Namespace
) -> None:
    """The resolvers here are the namespaces (the host's own would be off the
    machine): one ordinary, one link-local, as some clouds' are."""
    near, far = world.addresses
    with namespace(link_local(), hosts=[2], ports=[SERVICE, 53]) as cloud:
        (resolver,) = cloud.addresses
        harness = sandman(egress="deny", dns_servers=[far, resolver])
        results = start(harness, "egressdeny").probe(
            [f"{kind},{address},53" for address in (far, resolver) for kind in ("udp", "tcp")]
            + [f"tcp,{address},{SERVICE}" for address in (near, far, resolver)]
            + [f"udp,{near},53"]
        )
    dns = {t: r for t, r in results.items() if t.endswith(",53") and near not in t}
    assert len(dns) == 4 and all_open(dns), results
    others = {t: r for t, r in results.items() if t not in dns}
    assert len(others) == 4 and all_closed(others), results


def test_egress_to_listed_networks_only(sandman: Callable[..., Harness], world: Namespace) -> None:
    near, far = world.addresses
    listed = ipaddress.ip_network(f"{near}/25", strict=False)
    assert ipaddress.ip_address(far) not in listed
    results = start(sandman(egress=str(listed)), "egresslist").probe(
        [f"tcp,{near},{SERVICE}", f"tcp,{far},{SERVICE}"]
    )
    assert results[f"tcp,{near},{SERVICE}"] == "open", results
    assert results[f"tcp,{far},{SERVICE}"].startswith("closed"), results


def iptables() -> dict[str, list[str]]:
    listing = subprocess.run(
        ["iptables", "-w", "-S"], capture_output=True, text=True, check=True
    ).stdout
    return parse_listing(listing)


def test_rules_are_listed_repaired_and_removed_by_deployment(
    sandman: Callable[..., Harness], docker_client: docker.DockerClient
) -> None:
    first = sandman()
    network = first.core.settings.network_name
    second = sandman(network=network, egress="deny")  # another deployment, same network
    ours, theirs = first.core.deployment_id, second.core.deployment_id
    bridge = bridge_name(docker_client.networks.get(network).attrs)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandman.cli", "network", *argv,
             "--data-dir", str(first.data_dir)],
            env={**os.environ, "SANDMAN_NETWORK_NAME": network},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"deployment {ours} (this deployment)" in status.stdout
    assert f"deployment {theirs}" in status.stdout and "in place" in status.stdout
    before = iptables()
    docker_rules = [
        f"{chain} {spec}"
        for chain, specs in before.items()
        for spec in specs
        if bridge in spec and "SANDMAN" not in f"{chain} {spec}"
    ]
    assert docker_rules  # Docker's own rules for the network, to be left alone
    (jump,) = [line for line in owned(before, ours) if line.startswith("-A DOCKER-USER")]

    # An engine restart that recreated DOCKER-USER drops the jump; a pass restores it.
    subprocess.run(["iptables", "-w", "-D", *shlex.split(jump)[1:]], check=True)
    assert cli("status").returncode == 1
    first.core.runtime.prepare()  # what every reconciler pass does first
    assert cli("status").returncode == 0
    assert owned(iptables(), ours) == owned(before, ours)

    removed = cli("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.count("removed ") == len(owned(before, ours))
    after = iptables()
    assert owned(after, ours) == []
    assert owned(after, theirs) == owned(before, theirs)
    kept = {f"{chain} {spec}" for chain, specs in after.items() for spec in specs}
    assert set(docker_rules) <= kept, set(docker_rules) - kept
    assert cli("status").returncode == 1

"""The Sealer around the iptables commands: installs once, repairs drift, removes
exactly one deployment's rules; and the commands' failures say what to do."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from typing import Any

import pytest
from tests.fakes.iptables import DOCKER, NO_DOCKER, FakeIptables

from sandman.errors import ConfigurationError, RuntimeFailure
from sandman.runtime.docker.firewall import owned
from sandman.runtime.docker.iptables import Iptables, Sealer, unseal
from sandman.runtime.egress import parse_egress

NETWORK = {
    "Name": "worknet",
    "Id": "0123456789abcdef0123",
    "Options": {"com.docker.network.bridge.enable_icc": "false"},
    "IPAM": {"Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]},
}
IPV6 = {**NETWORK, "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": "fd5a::/64"}]}}
RESOLVERS = (ipaddress.ip_address("10.255.255.53"),)


def sealer(
    deployment: str = "d1", egress: str = "allow", v6: str = NO_DOCKER
) -> tuple[Sealer, FakeIptables, FakeIptables]:
    four, six = FakeIptables(4), FakeIptables(6, v6)
    found = Sealer(
        deployment, parse_egress(egress), tools={4: four, 6: six}, resolvers=lambda: RESOLVERS
    )
    return found, four, six


def test_seals_once_then_only_checks(caplog: pytest.LogCaptureFixture) -> None:
    found, four, six = sealer()
    caplog.set_level(logging.INFO)
    found.seal(NETWORK)
    assert len(four.restores) == 1 and six.restores == []  # no IPv6 on this network
    assert "sealed off" in caplog.text
    found.seal(NETWORK)
    assert len(four.restores) == 1 and four.listings == 2
    assert all(not s.repairs for s in found.statuses(NETWORK))


def test_drift_is_repaired_and_said(caplog: pytest.LogCaptureFixture) -> None:
    found, four, _ = sealer()
    found.seal(NETWORK)
    four.table["DOCKER-USER"] = ["-j RETURN"]  # DOCKER-USER recreated by a restarted engine
    found.seal(NETWORK)
    assert len(four.restores) == 2
    assert "had changed" in caplog.text
    assert all(not s.repairs for s in found.statuses(NETWORK))


def test_ipv6_networks_are_sealed_in_both_families_and_unsealed_when_gone() -> None:
    found, four, six = sealer(egress="deny")
    found.seal(IPV6)
    assert len(four.restores) == 1 and len(six.restores) == 1
    assert "-A INPUT" in " ".join(owned(six.table, "d1"))
    assert any(line.startswith("-A FORWARD ") for line in owned(six.table, "d1"))
    found.seal(NETWORK)  # the network now has no IPv6: its rules go
    assert owned(six.table, "d1") == []


def test_dns_servers_given_win_over_the_hosts() -> None:
    four = FakeIptables(4)
    given = (ipaddress.ip_address("192.0.2.53"),)
    found = Sealer("d1", parse_egress("deny"), given, {4: four, 6: FakeIptables(6)}, lambda: ())
    found.seal(NETWORK)
    assert "-d 192.0.2.53/32" in " ".join(owned(four.table))


def test_unseal_removes_one_deployment_and_leaves_the_rest() -> None:
    first, four, six = sealer("d1")
    first.seal(IPV6)
    second = Sealer("d2", parse_egress("allow"), tools={4: four, 6: six}, resolvers=lambda: ())
    second.seal(IPV6)
    removed = unseal("d1", {4: four, 6: six})
    assert removed and all("d1" in line for line in removed)
    assert owned(four.table, "d1") == [] and owned(six.table, "d1") == []
    assert owned(four.table, "d2") and owned(six.table, "d2")
    assert unseal("d1", {4: four, 6: six}) == []
    assert four.table["FORWARD"] == FakeIptables(4, DOCKER).table["FORWARD"]


def test_commands_take_the_lock_and_restore_without_flushing() -> None:
    calls: list[tuple[list[str], str | None]] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((argv, kwargs.get("input")))
        return subprocess.CompletedProcess(argv, 0, DOCKER, "")

    tool = Iptables(6, run=run)
    tool._binary = "/usr/sbin/ip6tables"
    assert "DOCKER-USER" in tool.listing()
    tool.restore(["-F SANDMAN-IN-d1"])
    assert calls == [
        (["/usr/sbin/ip6tables", "-w", "-t", "filter", "-S"], None),
        (["/usr/sbin/ip6tables-restore", "-w", "--noflush"], "*filter\n-F SANDMAN-IN-d1\nCOMMIT\n"),
    ]


def run_saying(code: int, stderr: str) -> Any:
    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, code, "", stderr)

    return run


def test_failures_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = Iptables(4, run=run_saying(4, "iptables v1.8.9 (nf_tables): Permission denied"))
    tool._binary = "/usr/sbin/iptables"
    with pytest.raises(ConfigurationError, match="SANDMAN_SEAL_NETWORK=false"):
        tool.listing()
    tool = Iptables(4, run=run_saying(2, "Bad argument `x'"))
    tool._binary = "/usr/sbin/iptables"
    with pytest.raises(RuntimeFailure, match="Bad argument"):
        tool.restore(["-A X x"])
    monkeypatch.setattr("shutil.which", lambda *_a, **_k: None)
    with pytest.raises(ConfigurationError, match="apt-get install iptables"):
        _ = Iptables(6).binary


def test_rules_that_cannot_be_installed_stop_sandman() -> None:
    found, four, _ = sealer()

    def refuse(lines: list[str]) -> None:
        raise RuntimeFailure("iptables-restore: line 3 failed")

    four.restore = refuse  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="could not seal the session network worknet"):
        found.seal(NETWORK)

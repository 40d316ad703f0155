"""The sealing rules, their repair and removal, compared line by line."""

from __future__ import annotations

import ipaddress

import pytest
from tests.fakes.iptables import DOCKER, apply

from sandman.runtime.docker.firewall import (
    DOCKER_DEFAULT_DNS,
    Seal,
    bridge_name,
    chain_names,
    deployments,
    has_ipv6,
    host_resolvers,
    owned,
    parse_listing,
    removal,
    repair,
    restore_script,
    seal_plan,
)
from sandman.runtime.egress import parse_egress

REJECT = "-j REJECT --reject-with icmp-admin-prohibited"
TAG = '-m comment --comment "sandman deployment=d1 network=worknet"'
RESOLVER = ipaddress.ip_address("10.255.255.53")


def seal(egress: str = "allow", *resolvers: str, deployment: str = "d1") -> Seal:
    return Seal(
        deployment,
        "worknet",
        "br-0123456789ab",
        parse_egress(egress),
        tuple(ipaddress.ip_address(r) for r in resolvers) or (RESOLVER,),
    )


def installed(listing: str, *restores: list[str]) -> str:
    """A listing after these restores, as ``iptables -S`` would print it."""
    table = parse_listing(listing)
    for lines in restores:
        table = apply(table, lines)
    chains = [f"-N {chain}" for chain in table]
    return "\n".join(chains + [f"-A {c} {spec}" for c, specs in table.items() for spec in specs])


def test_allow_seals_the_host_link_local_and_other_sessions_and_lets_the_rest_out() -> None:
    assert seal_plan(seal("allow"), 4).lines() == [
        f"-A INPUT -i br-0123456789ab {TAG} -j SANDMAN-IN-d1",
        f"-A DOCKER-USER -i br-0123456789ab {TAG} -j SANDMAN-FWD-d1",
        "-N SANDMAN-IN-d1",
        "-A SANDMAN-IN-d1 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A SANDMAN-IN-d1 -d 10.255.255.53/32 -p udp -m udp --dport 53 -j RETURN",
        "-A SANDMAN-IN-d1 -d 10.255.255.53/32 -p tcp -m tcp --dport 53 -j RETURN",
        f"-A SANDMAN-IN-d1 {REJECT}",
        "-N SANDMAN-FWD-d1",
        "-A SANDMAN-FWD-d1 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A SANDMAN-FWD-d1 -d 10.255.255.53/32 -p udp -m udp --dport 53 -j RETURN",
        "-A SANDMAN-FWD-d1 -d 10.255.255.53/32 -p tcp -m tcp --dport 53 -j RETURN",
        f"-A SANDMAN-FWD-d1 -o br-0123456789ab {REJECT}",
        f"-A SANDMAN-FWD-d1 -d 169.254.0.0/16 {REJECT}",
        f"-A SANDMAN-FWD-d1 -d 100.100.100.200/32 {REJECT}",
    ]


def test_deny_lets_out_nothing_but_dns_to_the_resolvers() -> None:
    forward = dict(seal_plan(seal("deny", "169.254.169.253"), 4).chains)["SANDMAN-FWD-d1"]
    assert forward[1:3] == (
        "-d 169.254.169.253/32 -p udp -m udp --dport 53 -j RETURN",  # before link-local
        "-d 169.254.169.253/32 -p tcp -m tcp --dport 53 -j RETURN",
    )
    assert forward[-1] == REJECT and forward[-2] == f"-d 100.100.100.200/32 {REJECT}"


def test_a_list_lets_out_only_its_networks_after_the_sealed_ones() -> None:
    forward = dict(seal_plan(seal("10.20.0.0/16,192.0.2.10,fd00:1::/64"), 4).chains)
    assert forward["SANDMAN-FWD-d1"][-4:] == (
        f"-d 100.100.100.200/32 {REJECT}",
        "-d 10.20.0.0/16 -j RETURN",
        "-d 192.0.2.10/32 -j RETURN",
        REJECT,
    )


def test_ipv6_keeps_neighbour_discovery_and_hooks_forward_where_docker_does_not() -> None:
    plan = seal_plan(seal("fd00:1::/64", "2001:db8::53", "10.0.0.2"), 6, forward_parent="FORWARD")
    reject6 = "-j REJECT --reject-with icmp6-adm-prohibited"
    chains = dict(plan.chains)
    assert chains["SANDMAN-IN-d1"] == (
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN",
        "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN",
        "-p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN",
        "-d 2001:db8::53/128 -p udp -m udp --dport 53 -j RETURN",
        "-d 2001:db8::53/128 -p tcp -m tcp --dport 53 -j RETURN",
        reject6,
    )
    assert chains["SANDMAN-FWD-d1"][-5:] == (
        f"-o br-0123456789ab {reject6}",
        f"-d fe80::/10 {reject6}",
        f"-d fd00:ec2::254/128 {reject6}",
        "-d fd00:1::/64 -j RETURN",
        reject6,
    )
    assert plan.jumps[1].chain == "FORWARD"


def test_repair_installs_everything_then_nothing_once_in_place() -> None:
    plan = seal_plan(seal(), 4)
    lines = repair(plan, parse_listing(DOCKER))
    assert lines[:2] == [":SANDMAN-IN-d1 - [0:0]", ":SANDMAN-FWD-d1 - [0:0]"]
    assert lines[-2:] == [
        f"-I INPUT 1 -i br-0123456789ab {TAG} -j SANDMAN-IN-d1",
        f"-I DOCKER-USER 1 -i br-0123456789ab {TAG} -j SANDMAN-FWD-d1",
    ]
    after = installed(DOCKER, lines)
    assert repair(plan, parse_listing(after)) == []
    assert restore_script(["-F X"]) == "*filter\n-F X\nCOMMIT\n"


def test_repair_replaces_a_changed_chain_and_a_jump_to_a_former_bridge() -> None:
    old = seal("deny")
    old = Seal(old.deployment, old.network, "br-oldoldoldold", old.egress, old.resolvers)
    before = installed(DOCKER, repair(seal_plan(old, 4), parse_listing(DOCKER)))
    plan = seal_plan(seal("allow"), 4)
    lines = repair(plan, parse_listing(before))
    stale = f"-i br-oldoldoldold {TAG}"
    assert f"-D INPUT {stale} -j SANDMAN-IN-d1" in lines
    assert f"-D DOCKER-USER {stale} -j SANDMAN-FWD-d1" in lines
    assert repair(plan, parse_listing(installed(before, lines))) == []


def test_a_host_rule_before_the_jump_moves_the_jump_back_in_front() -> None:
    plan = seal_plan(seal(), 4)
    sealed = installed(DOCKER, repair(plan, parse_listing(DOCKER)))
    table = parse_listing(sealed)
    table["INPUT"].insert(0, "-i br+ -j ACCEPT")  # a host firewall inserting its own rule
    jump = f"-i br-0123456789ab {TAG} -j SANDMAN-IN-d1"
    assert repair(plan, table) == [f"-D INPUT {jump}", f"-I INPUT 1 {jump}"]


def test_two_deployments_share_the_front_without_fighting() -> None:
    first, second = seal_plan(seal(), 4), seal_plan(seal(deployment="d2"), 4)
    both = installed(DOCKER, repair(first, parse_listing(DOCKER)))
    both = installed(both, repair(second, parse_listing(both)))
    assert repair(first, parse_listing(both)) == []
    assert repair(second, parse_listing(both)) == []
    assert deployments(parse_listing(both)) == ["d1", "d2"]


def test_removal_takes_exactly_one_deployments_chains_and_jumps() -> None:
    first, second = seal_plan(seal(), 4), seal_plan(seal(deployment="d2"), 4)
    both = installed(DOCKER, repair(first, parse_listing(DOCKER)))
    both = installed(both, repair(second, parse_listing(both)))
    lines = removal("d1", parse_listing(both))
    assert lines == [
        f"-D INPUT -i br-0123456789ab {TAG} -j SANDMAN-IN-d1",
        f"-D DOCKER-USER -i br-0123456789ab {TAG} -j SANDMAN-FWD-d1",
        "-F SANDMAN-IN-d1",
        "-F SANDMAN-FWD-d1",
        "-X SANDMAN-IN-d1",
        "-X SANDMAN-FWD-d1",
    ]
    left = parse_listing(installed(both, lines))
    only_second = installed(DOCKER, repair(second, parse_listing(DOCKER)))
    assert left == parse_listing(only_second)  # Docker's rules and d2's, untouched
    assert owned(left) == second.lines() and deployments(left) == ["d2"]
    assert removal("d3", left) == []


def test_owned_lists_one_deployment_as_its_plan() -> None:
    plan = seal_plan(seal(), 4)
    table = parse_listing(installed(DOCKER, repair(plan, parse_listing(DOCKER))))
    assert owned(table, "d1") == plan.lines()


@pytest.mark.parametrize("deployment", ["", "UPPER", "a" * 17, "a b"])
def test_deployment_ids_must_fit_a_chain_name(deployment: str) -> None:
    with pytest.raises(ValueError):
        chain_names(deployment)


def test_bridge_and_ipv6_of_a_network() -> None:
    network = {"Id": "0123456789abcdef", "Options": {}, "IPAM": {"Config": [{"Subnet": "a/16"}]}}
    assert bridge_name(network) == "br-0123456789ab"
    assert bridge_name({**network, "Options": {"com.docker.network.bridge.name": "sm0"}}) == "sm0"
    assert not has_ipv6(network)
    assert has_ipv6({**network, "IPAM": {"Config": [{"Subnet": "fd5a::/64"}]}})


def test_resolvers_are_what_dockers_embedded_dns_forwards_to() -> None:
    plain = "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
    assert [str(a) for a in host_resolvers(plain)] == ["10.0.0.2", "fe80::1"]
    stub = "nameserver 127.0.0.53\noptions edns0\n"
    upstream = "nameserver 169.254.169.253\n"
    assert [str(a) for a in host_resolvers(stub, upstream)] == ["169.254.169.253"]
    assert host_resolvers(stub) == DOCKER_DEFAULT_DNS
    assert host_resolvers("") == DOCKER_DEFAULT_DNS

"""One family's filter table in memory, for unit tests of the sealing rules: it
answers ``-S`` listings and applies ``iptables-restore --noflush`` lines the way
iptables does, with no root and no kernel."""

from __future__ import annotations

from sandman.runtime.docker.firewall import Family, Table, parse_listing
from sandman.runtime.docker.iptables import Iptables

DOCKER = """-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER
-N DOCKER-USER
-A FORWARD -j DOCKER-USER
-A FORWARD -o br-0123456789ab -j DOCKER
-A FORWARD -i br-0123456789ab -o br-0123456789ab -j DROP
-A DOCKER-USER -j RETURN
"""  # what Docker installs for one isolated network (iptables -S)

NO_DOCKER = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"  # ip6tables, typically


def apply(table: Table, lines: list[str]) -> Table:
    """``table`` after an ``iptables-restore --noflush`` of ``lines``."""
    table = {chain: list(specs) for chain, specs in table.items()}
    for line in lines:
        op, chain, *rest = line.split(" ", 2)
        if op.startswith(":"):
            table[op[1:]] = []  # declared: created, or emptied
        elif op == "-A":
            table[chain].append(rest[0])
        elif op == "-I":
            table[chain].insert(int(rest[0].split(" ", 1)[0]) - 1, rest[0].split(" ", 1)[1])
        elif op == "-D":
            table[chain].remove(rest[0])
        elif op == "-F":
            table[chain] = []
        elif op == "-X":
            assert not any(s.endswith(f"-j {chain}") for v in table.values() for s in v)
            del table[chain]
        else:
            raise AssertionError(f"not a restore line: {line}")
    return table


class FakeIptables(Iptables):
    def __init__(self, family: Family, listing: str = DOCKER) -> None:
        super().__init__(family)
        self.table = parse_listing(listing)
        self.restores: list[list[str]] = []
        self.listings = 0

    def listing(self) -> Table:
        self.listings += 1
        return {chain: list(specs) for chain, specs in self.table.items()}

    def restore(self, lines: list[str]) -> None:
        self.restores.append(lines)
        self.table = apply(self.table, lines)

"""Where sessions run: the contract (``base``) and its implementations."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandman.config import Settings
    from sandman.runtime.base import SessionRuntime


def make_runtime(settings: Settings, deployment_id: str) -> SessionRuntime:
    """The runtime ``settings.runtime`` names, configured from the settings; what it
    installs on the host (firewall rules) carries ``deployment_id``."""
    if settings.runtime == "docker":
        import ipaddress

        from sandman.runtime.docker import DockerRuntime
        from sandman.runtime.docker.files import HostFiles
        from sandman.runtime.docker.iptables import Sealer

        sealer = None
        if settings.seal_network:
            sealer = Sealer(
                deployment_id,
                settings.egress_policy,
                tuple(ipaddress.ip_address(a) for a in settings.dns_servers),
            )
        else:
            logging.getLogger(__name__).warning(
                "SANDMAN_SEAL_NETWORK=false: sessions can reach this host, its cloud metadata "
                "service and whatever the host reaches"
            )
        return DockerRuntime(
            HostFiles(settings.data_dir, settings.effective_workspace_root),
            network=settings.network_name,
            bind_address=settings.ssh_bind_address,
            upstream=settings.gateway_upstream,
            sealer=sealer,
        )
    if settings.runtime == "kubernetes":
        from sandman.runtime.kubernetes.client import kubernetes_runtime

        return kubernetes_runtime(settings, deployment_id)
    raise ValueError(f"unknown runtime {settings.runtime!r}")

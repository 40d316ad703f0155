"""Where sessions run: the contract (``base``) and its implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandman.config import Settings
    from sandman.runtime.base import SessionRuntime


def make_runtime(settings: Settings) -> SessionRuntime:
    """The runtime ``settings.runtime`` names, configured from the settings."""
    if settings.runtime == "docker":
        from sandman.runtime.docker import DockerRuntime
        from sandman.runtime.docker.files import HostFiles

        return DockerRuntime(
            HostFiles(settings.data_dir, settings.effective_workspace_root),
            network=settings.network_name,
            bind_address=settings.ssh_bind_address,
            upstream=settings.gateway_upstream,
        )
    raise ValueError(f"unknown runtime {settings.runtime!r}")

"""The Docker runtime: a pure spec translator and a thin backend around the SDK."""

from sandman.runtime.docker.backend import DockerRuntime

__all__ = ["DockerRuntime"]

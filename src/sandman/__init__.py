"""Sandman: per-user GPU containers with a MIG slice, a persistent workspace and SSH."""

__version__ = "0.1.0"

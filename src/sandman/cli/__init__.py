"""The ``sandman`` command: the server, image building and an admin client."""

from sandman.cli.main import app, main

__all__ = ["app", "main"]

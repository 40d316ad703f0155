"""Serving a ``Sandman`` in this process, for benchmarks that measure the API's own
work (over the fake runtime, so no engine time is counted)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from sandman.api.app import create_app
from sandman.core import Sandman


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(core: Sandman, port: int) -> uvicorn.Server:
    """uvicorn on 127.0.0.1:``port`` in a thread, once it accepts requests."""
    config = uvicorn.Config(
        create_app(core, run_background=False), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    return server

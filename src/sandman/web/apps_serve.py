"""Serving the API and the apps origin from one process, on two listeners.

Two uvicorn servers share one event loop. Neither installs its own signal
handlers (each would take them from the other); one handler stops both, and a
second signal stops them without waiting for open connections.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Generator, Sequence
from contextlib import contextmanager

import uvicorn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SharedLoopServer(uvicorn.Server):
    """A uvicorn server that leaves signals to whoever runs it beside others."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_together(servers: Sequence[uvicorn.Server]) -> None:
    """Run ``servers`` until a signal, or until any of them stops (then all do)."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()  # one stopped (a failed start, say): the others follow
        await asyncio.gather(*tasks)
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


def run_together(servers: Sequence[uvicorn.Server]) -> None:
    asyncio.run(serve_together(servers))

"""What the apps proxy does around the data path: it starts an app on first open,
counts activity for idle reclaim, and watches JupyterLab's kernels.

- **Start on demand.** The first request for an app of a session runs
  ``sandman-apps start NAME`` in the container as the session's user (through the
  runtime's ``exec``, on a worker thread); "started" is remembered per session
  and app, and forgotten when the app stops answering, so the next open starts it
  again. An environment without the app, or an app that fails to start, is a 503
  that says so.
- **Activity.** Traffic through the proxy touches the session
  (``SessionService.touch``), at most once per ``TOUCH_EVERY`` per session.
- **Busy kernels.** A cell running with the browser closed is activity too:
  every ``KERNEL_POLL`` the sessions with JupyterLab started are asked for their
  kernels, and one in ``execution_state`` ``busy`` touches its session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sandman.environments.apps import JUPYTERLAB, LAUNCHER, App
from sandman.errors import SandmanError
from sandman.runtime.base import SessionRuntime
from sandman.web.apps_access import AppsSession

log = logging.getLogger(__name__)

TOUCH_EVERY = 30.0  # seconds between two touches of one session
KERNEL_POLL = 60.0  # seconds between two looks at JupyterLab's kernels
START_TIMEOUT = 60.0  # what ``sandman-apps start`` may take (it waits for the app)
READY_WAIT = 20.0  # how long a started app may take to accept connections
NOT_FOUND_EXIT = (126, 127)  # the shell's "cannot run" and "not found"
NOT_OFFERED_EXIT = 2  # the launcher's "not installed in this environment"


class AppUnavailable(Exception):
    """The app cannot be had in this session: not offered, or it did not start (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------- pure parts
def launch_argv(app: App, session_id: str, apps_origin: str) -> list[str]:
    """``sandman-apps start``: the app's base path comes from the session id, and the
    origin is one the app accepts in ``Origin``."""
    return [LAUNCHER, "start", app.name, "--session", session_id, "--origin", apps_origin]


def start_refusal(app: App, exit_code: int | None, output: str) -> str | None:
    """Why ``sandman-apps start`` did not start the app, for the user; None if it did."""
    if exit_code == 0:
        return None
    tail = " ".join(output.strip().splitlines()[-3:])[:300]
    if exit_code is None:
        return f"{app.title} did not start within {START_TIMEOUT:.0f}s; try again"
    if exit_code in NOT_FOUND_EXIT:
        return (
            f"this session's environment offers no web apps ({LAUNCHER} is missing): "
            "start a session with an environment that offers "
            f"{app.title} (e.g. jupyter)"
        )
    if exit_code == NOT_OFFERED_EXIT:
        return f"this session's environment does not offer {app.title}: {tail}"
    return f"{app.title} did not start: {tail or f'exit {exit_code}'}"


def kernels_busy(kernels: Any) -> bool:
    """Whether JupyterLab's ``GET api/kernels`` lists a kernel that is running code."""
    if not isinstance(kernels, list):
        return False
    return any(isinstance(k, dict) and k.get("execution_state") == "busy" for k in kernels)


class Touches:
    """Rate-limits activity: ``due(session_id)`` is true at most once per ``every``."""

    def __init__(self, every: float = TOUCH_EVERY, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}

    def due(self, session_id: str) -> bool:
        now = self.clock()
        last = self._last.get(session_id)
        if last is not None and now - last < self.every:
            return False
        if len(self._last) > 100_000:
            self._last.clear()
        self._last[session_id] = now
        return True


@dataclass(frozen=True)
class Started:
    session: AppsSession
    app: App
    upstream: tuple[str, int]


# ---------------------------------------------------------------------- I/O
class AppsControl:
    """Starts apps on demand, remembers which run, and reports activity."""

    def __init__(
        self,
        runtime: SessionRuntime,
        touch: Callable[[str], None],
        address: Callable[[AppsSession, App], tuple[str, int]],
        apps_origin: str,
        touch_every: float = TOUCH_EVERY,
    ) -> None:
        self.runtime = runtime
        self.apps_origin = apps_origin
        self.touch_session = touch
        self.address = address
        self.touches = Touches(touch_every)
        self.started: dict[tuple[str, str], Started] = {}
        self._starting: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def ensure(self, session: AppsSession, app: App) -> tuple[str, int]:
        """The app's address, once it runs: started now if this process has not seen
        it run (one start at a time per session and app)."""
        if not session.running:
            raise AppUnavailable(f"session {session.id} is not running")
        address = self.address(session, app)
        key = (session.id, app.name)
        if key in self.started:
            return address
        lock = self._starting.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.started:
                return address
            await self._start(session, app)
            await wait_listening(address, READY_WAIT)
            self.started[key] = Started(session, app, address)
        return address

    async def _start(self, session: AppsSession, app: App) -> None:
        if session.user is None:
            raise AppUnavailable(f"session {session.id} has no user to run {app.title} as")
        try:
            result = await asyncio.to_thread(
                self.runtime.exec,
                session.container,
                launch_argv(app, session.id, self.apps_origin),
                session.user,
                START_TIMEOUT,
            )
        except SandmanError as exc:
            raise AppUnavailable(f"{app.title} could not be started: {exc.message}") from exc
        refusal = start_refusal(app, result.exit_code, result.output)
        if refusal is not None:
            log.info("session %s: %s did not start: %s", session.id, app.name, result.output)
            raise AppUnavailable(refusal)
        log.info("session %s: %s started", session.id, app.name)

    def forget(self, session_id: str, app: App) -> None:
        """The app stopped answering: the next open starts it again."""
        self.started.pop((session_id, app.name), None)

    def seen(self, session_id: str) -> None:
        """Traffic for the session: touch it, if one is due, off the event loop."""
        if not self.touches.due(session_id):
            return
        task = asyncio.get_running_loop().create_task(self._touch(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, session_id: str) -> None:
        try:
            await asyncio.to_thread(self.touch_session, session_id)
        except Exception:
            log.exception("could not record activity of session %s", session_id)

    async def watch_kernels(
        self,
        client: httpx.AsyncClient,
        auth: Callable[[str, App], dict[str, str]],
        still_running: Callable[[str], bool],
    ) -> None:
        """One look at the kernels of every session with JupyterLab started: a busy
        one touches its session; a session no longer running is forgotten."""
        for key, started in list(self.started.items()):
            session_id = started.session.id
            if not await asyncio.to_thread(still_running, session_id):
                self.started.pop(key, None)
                continue
            if started.app != JUPYTERLAB:
                continue
            host, port = started.upstream
            url = f"http://{host}:{port}/s/{session_id}/{JUPYTERLAB.path}/api/kernels"
            try:
                answer = await client.get(url, headers=auth(session_id, JUPYTERLAB), timeout=10)
                busy = answer.status_code == 200 and kernels_busy(answer.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.debug("session %s: no kernel states: %s", session_id, exc)
                continue
            if busy:
                await self._touch(session_id)


async def wait_listening(address: tuple[str, int], timeout: float) -> None:
    """Wait until something accepts connections at ``address`` (a launcher may return
    before its app listens); ``AppUnavailable`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout=2)
        except (OSError, TimeoutError):
            if time.monotonic() >= deadline:
                raise AppUnavailable(
                    f"the app started but does not answer at port {address[1]} after {timeout:.0f}s"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        writer.close()
        return

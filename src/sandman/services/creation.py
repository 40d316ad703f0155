"""Session creation on its own bounded pool, never on the threads that serve reads.

A create holds a worker for as long as the session takes to answer SSH (up to
``start_timeout``). The pool has ``create_workers`` threads and as many slots;
a create waits up to ``create_wait`` for a slot and is then refused with
``Busy`` (503 and ``Retry-After``), so a burst of creates queues briefly or is
told to come back, and ``/healthz`` and the reads keep answering.

One pool job reserves and then launches, so a session that was reserved is
always launched (or failed) even when the caller stops waiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress

from sandman.errors import Busy
from sandman.services.requests import SessionRequest
from sandman.services.sessions import CreatedSession, Reservation, SessionService

log = logging.getLogger(__name__)


class CreationPool:
    def __init__(self, sessions: SessionService, workers: int, wait: float) -> None:
        self.sessions = sessions
        self.workers = workers
        self.wait = wait
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sandman-create")
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        # Told of every create once it is over: (seconds, error code or None).
        self.result_hooks: list[Callable[[float, str | None], None]] = []
        self._start_threads()

    def _start_threads(self) -> None:
        """Start every worker now: a thread started later would be started from the
        event loop, which then waits for it, and under load that wait is long."""
        ready = threading.Barrier(self.workers + 1)
        for _ in range(self.workers):
            self._pool.submit(ready.wait)
        ready.wait()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._slots:
            self._slots[loop] = asyncio.Semaphore(self.workers)
        return self._slots[loop]

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(min(self.wait, 10.0)))

    async def create(self, request: SessionRequest, wait_ready: bool = True) -> CreatedSession:
        """The created session: once its sshd answers, or (``wait_ready=False``) once its
        row and grants are committed, while it goes on starting in the pool."""
        slots = self._semaphore()
        asked = time.monotonic()
        try:
            if slots.locked():  # wait only when no worker is free (a zero wait refuses then)
                await asyncio.wait_for(slots.acquire(), timeout=self.wait)
            else:
                await slots.acquire()
        except TimeoutError:
            self._finished(asked, "busy")
            raise Busy(
                f"all {self.workers} session starters are busy and none came free in "
                f"{self.wait:g}s; retry shortly",
                retry_after=self.retry_after,
            ) from None
        loop = asyncio.get_running_loop()
        reserved: Future[Reservation] = Future()
        try:
            done = self._pool.submit(self._reserve_and_launch, request, reserved)
        except BaseException:
            slots.release()
            raise

        def release(_: Future[CreatedSession]) -> None:
            with suppress(RuntimeError):  # the loop has closed: nothing waits any more
                loop.call_soon_threadsafe(slots.release)

        done.add_done_callback(release)
        reservation = await asyncio.shield(asyncio.wrap_future(reserved))
        if not wait_ready:
            return CreatedSession(reservation.session, reservation.private_key, reservation.notes)
        return await asyncio.shield(asyncio.wrap_future(done))

    def launch(self, reservation: Reservation) -> Future[CreatedSession]:
        """Launch a reservation made elsewhere (a queued request the queue promoted)
        on the pool's threads; it is counted as a create like any other."""
        started = time.monotonic()

        def run() -> CreatedSession:
            try:
                created = self.sessions.launch(reservation)
            except BaseException as exc:
                self._finished(started, getattr(exc, "code", "internal_error"))
                raise
            self._finished(started, None)
            return created

        return self._pool.submit(run)

    def _reserve_and_launch(
        self, request: SessionRequest, reserved: Future[Reservation]
    ) -> CreatedSession:
        started = time.monotonic()
        try:
            try:
                reservation = self.sessions.reserve(request)
            except BaseException as exc:
                reserved.set_exception(exc)
                raise
            reserved.set_result(reservation)
            created = self.sessions.launch(reservation)
        except BaseException as exc:
            self._finished(started, getattr(exc, "code", "internal_error"))
            raise
        self._finished(started, None)
        return created

    def _finished(self, started: float, code: str | None) -> None:
        seconds = time.monotonic() - started
        for hook in self.result_hooks:
            try:
                hook(seconds, code)
            except Exception:
                log.exception("create hook %r failed", hook)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

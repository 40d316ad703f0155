"""A queued request is started or cancelled, never both, whoever races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.domain import SessionStatus
from sandman.gpu.types import GpuRequest
from sandman.services.requests import SessionRequest


def test_promote_and_cancel_race_has_one_winner(tmp_path: Path) -> None:
    core = fake_core(tmp_path, FakeRuntime(), gpu_topology="a100-40gb-x1")
    try:
        sessions = core.sessions
        for attempt in range(20):
            held = sessions.create(SessionRequest("ann", gpu=GpuRequest(mig_profile="7g.40gb")))
            queued = sessions.reserve(
                SessionRequest(f"u{attempt}", gpu=GpuRequest(mig_profile="1g.5gb"), queue=True)
            ).session
            assert queued.status == SessionStatus.QUEUED
            sessions.end(held.session.id, SessionStatus.DELETED, "room")
            with ThreadPoolExecutor(2) as pool:
                promoted = pool.submit(sessions.promote, queued.id)
                cancelled = pool.submit(sessions.cancel_queued, queued.id, "race")
                reservation, was_cancelled = promoted.result(), cancelled.result()
            assert (reservation is not None) != was_cancelled
            final = sessions.get(queued.id)
            if reservation is not None:
                assert final.status == SessionStatus.STARTING
                assert sessions.claims(), "a started request holds its slices"
                sessions.launch(reservation)
                sessions.end(queued.id, SessionStatus.DELETED, "next")
            else:
                assert final.status == SessionStatus.CANCELLED and final.gpu_uuid is None
            assert sessions.claims() == []
    finally:
        core.stop()

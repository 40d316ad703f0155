"""Restoring an ended session through the API over the fake runtime: what it takes
from the old session, the tmux commands run as the user, and the refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_quotas_api import user_token

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.environments.state import SessionState, TmuxWindow
from sandman.store.models import SessionStateRow, utcnow


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def core(tmp_path: Path, runtime: FakeRuntime) -> Iterator[Sandman]:
    made = fake_core(tmp_path, runtime, gpu_topology="a100-40gb-x1")
    yield made
    made.stop()


@pytest.fixture
def api(core: Sandman) -> Iterator[TestClient]:
    with TestClient(create_app(core, run_background=False)) as client:
        yield client


def keep_state(core: Sandman, session_id: str, user: str, state: SessionState) -> None:
    with core.db.transaction() as db:
        db.merge(
            SessionStateRow(
                session_id=session_id, user_id=user, captured_at=utcnow(), state=state.as_json()
            )
        )


def test_a_restored_session_is_like_the_old_one_and_gets_its_tmux_back(
    api: TestClient, core: Sandman, runtime: FakeRuntime
) -> None:
    ann = user_token(api, "ann", team="ml")
    body = {"mig_profile": "3g.20gb", "ttl_minutes": 90, "cpus": 0.5, "labels": {"run": "a"}}
    old = api.post("/api/v1/sessions", json=body, headers=ann).json()
    api.delete(f"/api/v1/sessions/{old['id']}", headers=ann)
    state = SessionState((TmuxWindow("work", 0, "shell", "/workspace/proj"),), ("a.ipynb",))
    keep_state(core, old["id"], "ann", state)
    runtime.exec_log.clear()

    made = api.post("/api/v1/sessions", json={"restore": "latest"}, headers=ann)
    assert made.status_code == 201, made.text
    new = made.json()
    assert (new["mig_profile"], new["ttl_minutes"], new["cpus"]) == ("3g.20gb", 90, 0.5)
    assert new["team"] == "ml"
    assert new["labels"] == {"run": "a", "restored_from": old["id"]}
    assert any("tmux attach -t work" in n and "a.ipynb" in n for n in new["notes"])
    argv = [entry[1] for entry in runtime.exec_log if entry[1][0] == "tmux"]
    assert argv == [
        ["tmux", "new-session", "-d", "-s", "work", "-n", "shell", "-c", "/workspace/proj"]
    ]
    users = {entry[2] for entry in runtime.exec_log if entry[1][0] == "tmux"}
    uid = core.accounts.directory.get("ann").uid
    assert users == {f"{uid}:{uid}"}  # as the user, never root


def test_restore_refuses_what_is_not_the_callers_or_still_active(api: TestClient) -> None:
    ann = user_token(api, "ann")
    ben = user_token(api, "ben")
    assert api.post("/api/v1/sessions", json={"restore": "latest"}, headers=ann).status_code == 404
    running = api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb"}, headers=ann).json()
    active = api.post("/api/v1/sessions", json={"restore": running["id"]}, headers=ann)
    assert active.status_code == 409
    api.delete(f"/api/v1/sessions/{running['id']}", headers=ann)
    others = api.post("/api/v1/sessions", json={"restore": running["id"]}, headers=ben)
    assert others.status_code == 404
    unknown = "00000000-0000-0000-0000-000000000000"
    missing = api.post("/api/v1/sessions", json={"restore": unknown}, headers=ann)
    assert missing.status_code == 404
    assert api.get("/api/v1/sessions", headers=ben).json() == []
    admin_made = api.post(
        "/api/v1/sessions", json={"user_id": "ann", "restore": running["id"]}, headers=ADMIN
    )
    assert admin_made.status_code == 201, admin_made.text

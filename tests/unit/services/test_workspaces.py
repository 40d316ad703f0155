"""Workspace quotas through the service, on the fake runtime: which quota a session's
workspace gets, when a quota may change, and when a workspace may be migrated."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from tests.fakes.runtime import FakeRuntime

from sandman.config import Settings
from sandman.domain import SessionStatus
from sandman.errors import Conflict, InvalidRequest, NotFound
from sandman.runtime.base import WorkspaceUsage
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService
from sandman.services.workspaces import WorkspaceService
from sandman.sizes import GIB, MIB
from sandman.store.database import Database


@pytest.fixture
def workspaces(
    settings: Settings, db: Database, runtime: FakeRuntime, service: SessionService
) -> WorkspaceService:
    return WorkspaceService(settings, db, runtime, service.ensure_user)


def _quota_launched(runtime: FakeRuntime, user_id: str) -> int | None:
    (container,) = [c for c in runtime.containers.values() if c.launch.workspace.user_id == user_id]
    return container.launch.workspace.quota_bytes


def test_a_session_gets_the_default_quota_or_the_users_own(
    service: SessionService, workspaces: WorkspaceService, runtime: FakeRuntime
) -> None:
    service.create(SessionRequest(user_id="alice"))
    assert _quota_launched(runtime, "alice") == 50 * GIB
    workspaces.set_quota("bob", 3 * GIB)  # before bob has a workspace
    service.create(SessionRequest(user_id="bob"))
    assert _quota_launched(runtime, "bob") == 3 * GIB
    assert workspaces.get("bob").quota_bytes == 3 * GIB


def test_a_user_without_a_workspace_gets_a_quota_of_their_own(
    workspaces: WorkspaceService, runtime: FakeRuntime
) -> None:
    found = workspaces.set_quota("carol", 100 * MIB)
    assert (found.quota_bytes, found.used_bytes, found.storage, found.own_quota) == (
        100 * MIB,
        None,
        None,
        True,
    )
    assert runtime.resized == []  # nothing to resize yet
    with pytest.raises(NotFound):
        workspaces.get("nemo")


def test_a_quota_grows_while_the_session_runs(
    service: SessionService, workspaces: WorkspaceService, runtime: FakeRuntime
) -> None:
    service.create(SessionRequest(user_id="alice"))
    found = workspaces.set_quota("alice", 60 * GIB)
    assert runtime.resized == [("alice", 60 * GIB, True)]
    assert (found.quota_bytes, found.storage, found.own_quota) == (60 * GIB, "image", True)


def test_a_quota_shrinks_only_with_no_session_and_never_below_what_is_held(
    service: SessionService, workspaces: WorkspaceService, runtime: FakeRuntime
) -> None:
    created = service.create(SessionRequest(user_id="alice"))
    runtime.workspaces["alice"] = replace(runtime.workspaces["alice"], used_bytes=2 * GIB)
    with pytest.raises(Conflict, match="end the session"):
        workspaces.set_quota("alice", 10 * GIB)
    service.end(created.session.id, SessionStatus.DELETED, "test")
    with pytest.raises(Conflict, match="holds 2G"):
        workspaces.set_quota("alice", GIB)
    assert workspaces.get("alice").quota_bytes == 50 * GIB  # refusals change nothing
    assert not workspaces.get("alice").own_quota
    assert workspaces.set_quota("alice", 10 * GIB).quota_bytes == 10 * GIB
    assert runtime.resized[-1] == ("alice", 10 * GIB, False)


def test_quotas_refused_out_of_range(workspaces: WorkspaceService) -> None:
    for wrong in (0, 10 * MIB, 17 * 2**40):
        with pytest.raises(InvalidRequest, match="between 64M"):
            workspaces.set_quota("alice", wrong)
    with pytest.raises(InvalidRequest):
        workspaces.set_quota("../etc", GIB)


def test_with_quotas_off_workspaces_are_plain_and_quotas_refused(
    settings: Settings, db: Database, runtime: FakeRuntime, service: SessionService
) -> None:
    off = settings.model_copy(update={"workspace_quota": None})
    service.settings = off
    workspaces = WorkspaceService(off, db, runtime, service.ensure_user)
    service.create(SessionRequest(user_id="alice"))
    assert _quota_launched(runtime, "alice") is None
    with pytest.raises(Conflict, match="quotas are off"):
        workspaces.set_quota("alice", GIB)
    found = workspaces.get("alice")
    assert (found.quota_bytes, found.storage) == (None, "directory")
    assert workspaces.summaries(["alice"]) == {"alice": {"quota_bytes": None, "used_bytes": None}}


def test_migration_waits_for_the_session_to_end(
    service: SessionService, workspaces: WorkspaceService, runtime: FakeRuntime
) -> None:
    runtime.workspaces["alice"] = WorkspaceUsage("directory", None, None)  # from before quotas
    created = service.create(SessionRequest(user_id="alice"))
    assert workspaces.get("alice").quota_bytes == 50 * GIB  # what it gets once migrated
    with pytest.raises(Conflict, match="end it before migrating"):
        workspaces.migrate("alice")
    service.end(created.session.id, SessionStatus.DELETED, "test")
    assert workspaces.migrate("alice") == "alice: moved"
    assert runtime.migrated == [("alice", 50 * GIB)]
    assert workspaces.migrate("alice") is None  # nothing left to move
    assert workspaces.get("alice").storage == "image"


def test_sessions_answers_carry_each_users_quota_and_use(
    service: SessionService, workspaces: WorkspaceService, runtime: FakeRuntime
) -> None:
    workspaces.set_quota("bob", 2 * GIB)
    service.create(SessionRequest(user_id="alice"))
    service.create(SessionRequest(user_id="bob"))
    runtime.workspaces["alice"] = replace(runtime.workspaces["alice"], used_bytes=5 * MIB)
    assert workspaces.summaries(["alice", "bob", "alice"]) == {
        "alice": {"quota_bytes": 50 * GIB, "used_bytes": 5 * MIB},
        "bob": {"quota_bytes": 2 * GIB, "used_bytes": 0},
    }


def test_start_up_restores_workspaces_and_logs_warnings(
    workspaces: WorkspaceService, runtime: FakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.workspace_warnings = ["images promise 2T"]
    with caplog.at_level(logging.INFO):
        workspaces.restore()
    assert runtime.calls["restore_workspaces"] == 1
    assert "images promise 2T" in caplog.text and "50G each" in caplog.text


def test_release_is_refused_while_a_session_runs(
    service: SessionService, workspaces: WorkspaceService
) -> None:
    created = service.create(SessionRequest(user_id="alice"))
    with pytest.raises(Conflict):
        workspaces.release("alice")
    service.end(created.session.id, SessionStatus.DELETED, "test")
    assert workspaces.release("alice") is True

"""The capacity view and the layout advice through the API, on one A100-40GB made of
seven static 1g.5gb instances: every request's outcome lands in the demand log,
refused and queued demand shows per profile, and the advice names the layout that
would have served the refused 3g requests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_accounts_api import make_user

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.gpu.catalogue import is_valid_layout
from sandman.services.requests import SessionRequest
from sandman.store.models import DemandRecord


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    made = fake_core(tmp_path, FakeRuntime(), gpu_topology="a100-40gb-7x1g")
    yield made
    made.stop()


@pytest.fixture
def api(core: Sandman) -> Iterator[TestClient]:
    with TestClient(create_app(core, run_background=False)) as client:
        yield client


def ask(api: TestClient, headers: dict[str, str], **body: Any) -> int:
    response = api.post("/api/v1/sessions", json=body, headers=headers)
    return response.status_code


def demand(api: TestClient) -> dict[str, dict[str, str]]:
    """ann holds a 1g; ben's 3g is refused (no such instance); cat's 3g queues; dan's
    1g starts; eve is refused by a quota."""
    people = {name: make_user(api, name) for name in ("ann", "ben", "cat", "dan", "eve")}
    assert ask(api, people["ann"], mig_profile="1g.5gb", ttl_minutes=60) == 201
    assert ask(api, people["ben"], mig_profile="3g.20gb", ttl_minutes=120) == 503
    assert ask(api, people["cat"], mig_profile="3g.20gb", ttl_minutes=60, queue=True) == 202
    assert ask(api, people["dan"], ttl_minutes=30) == 201  # the default profile, 1g.5gb
    quota = api.put("/api/v1/quotas/user/eve", json={"max_slices": 0}, headers=ADMIN)
    assert quota.status_code == 200, quota.text
    assert ask(api, people["eve"], mig_profile="1g.5gb") == 403
    return people


def test_every_outcome_is_logged_with_what_was_asked(api: TestClient, core: Sandman) -> None:
    demand(api)
    with core.db.read() as db:
        rows = {r.user_id: r for r in db.query(DemandRecord)}
    assert {u: r.outcome for u, r in rows.items()} == {
        "ann": "started",
        "ben": "refused",
        "cat": "queued",
        "dan": "started",
        "eve": "refused",
    }
    assert rows["ben"].profile == "3g.20gb" and rows["ben"].slices == 3
    assert rows["ben"].ttl_minutes == 120 and "no free 3g.20gb" in (rows["ben"].reason or "")
    assert rows["dan"].profile == "1g.5gb" and rows["dan"].ttl_minutes == 30
    assert "(max_slices)" in (rows["eve"].reason or "")
    assert rows["ann"].priority == "normal" and rows["ann"].reason is None


def test_the_capacity_view_shows_refused_and_queued_demand(api: TestClient) -> None:
    demand(api)
    response = api.get("/api/v1/capacity?days=7", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    rows = {row["profile"]: row for row in body["profiles"]}
    one, three = rows["1g.5gb"], rows["3g.20gb"]
    assert one["capacity_instances"] == 7 and one["capacity_slices"] == 7
    assert one["peak_slices"] == 2  # ann's and dan's at once
    assert one["requests"] == {"started": 2, "queued": 0, "refused": 1}
    assert one["refused_by_quota"] == 1
    assert three["capacity_instances"] == 0 and three["peak_slices"] == 0
    assert three["requests"] == {"started": 0, "queued": 1, "refused": 1}
    assert three["asked_slice_hours"] == {"started": 0, "queued": 3, "refused": 6}
    assert body["total_slices"] == 7 and body["peak_slices"] == 2
    [line] = body["advice"]
    assert line.startswith("A100-40GB x1 (static): the layout ")


def test_the_advice_names_a_valid_layout_that_serves_the_3g_requests(api: TestClient) -> None:
    demand(api)
    response = api.get("/api/v1/gpus/advice", headers=ADMIN)
    assert response.status_code == 200, response.text
    [advice] = response.json()["advice"]
    assert advice["model"] == "A100-40GB" and advice["gpus"] == 1
    assert advice["current"] == "7x1g.5gb"
    assert "3g.20gb" in advice["layout"]
    assert is_valid_layout("A100-40GB", [tuple(p) for p in advice["placements"]])
    assert advice["slice_hours"] > advice["current_slice_hours"] > 0
    assert advice["gain_percent"] > 0
    assert advice["candidates"] > 20 and advice["top"][0]["layout"] == advice["layout"]
    assert advice["line"].startswith(f"A100-40GB x1 (static): the layout {advice['layout']}")


def test_operators_read_capacity_users_do_not(api: TestClient) -> None:
    otto = make_user(api, "otto", role="operator")
    uma = make_user(api, "uma")
    assert api.get("/api/v1/capacity", headers=otto).status_code == 200
    assert api.get("/api/v1/gpus/advice", headers=otto).status_code == 200
    for path in ("/api/v1/capacity", "/api/v1/gpus/advice"):
        refused = api.get(path, headers=uma)
        assert refused.status_code == 403 and "capacity.read" in refused.json()["error"]
    assert api.get("/api/v1/capacity?days=0", headers=otto).status_code == 400


def test_a_failing_log_never_fails_a_create(api: TestClient, core: Sandman) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("no GPUs today")

    core.demand.devices = broken
    core.demand._cached = None
    assert ask(api, make_user(api, "ann"), mig_profile="1g.5gb") == 201
    with core.db.read() as db:
        assert db.query(DemandRecord).count() == 0


def test_old_requests_are_pruned(core: Sandman) -> None:
    core.demand.record(SessionRequest(user_id="ann"), "refused", "no room")
    now = core.demand.clock()
    core.demand.clock = lambda: now + timedelta(days=91)
    assert core.demand.prune() == 1
    assert core.demand.prune() == 0

"""Environments through the API: who reads and manages them, and sessions that
start from one (its image, its allowed teams, its apps' URLs, the apps secret)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.environments.apps import SECRET_FILE, apps_secret, load_apps_key

APPS_URL = "http://apps.example:8081"


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def core(tmp_path: Path, runtime: FakeRuntime) -> Iterator[Sandman]:
    core = fake_core(tmp_path, runtime, apps_url=APPS_URL, default_mig_profile=None)
    yield core
    core.stop()


@pytest.fixture
def api(core: Sandman) -> Iterator[TestClient]:
    with TestClient(create_app(core, run_background=False)) as client:
        yield client


def user(api: TestClient, user_id: str, team: str | None = None, role: str = "user") -> Any:
    body: dict[str, Any] = {"user_id": user_id}
    if team:
        api.post("/api/v1/teams", json={"name": team}, headers=ADMIN)
        body["default_team"] = team
    assert api.post("/api/v1/users", json=body, headers=ADMIN).status_code == 201
    if team:
        api.put(f"/api/v1/teams/{team}/members/{user_id}", json={"role": "member"}, headers=ADMIN)
    if role != "user":
        api.patch(f"/api/v1/users/{user_id}", json={"role": role}, headers=ADMIN)
    token = api.post("/api/v1/tokens", json={"name": "t", "user_id": user_id}, headers=ADMIN)
    return {"Authorization": f"Bearer {token.json()['token']}"}


def names(api: TestClient, headers: dict[str, str]) -> list[str]:
    response = api.get("/api/v1/environments", headers=headers)
    assert response.status_code == 200, response.text
    return [row["name"] for row in response.json()]


def test_everyone_reads_the_built_ins(api: TestClient) -> None:
    ann = user(api, "ann")
    assert names(api, ann) == ["base", "jupyter", "pytorch", "tensorflow"]
    jupyter = api.get("/api/v1/environments/jupyter", headers=ann).json()
    assert jupyter == {
        "name": "jupyter",
        "image": "sandman-jupyter:latest",
        "description": jupyter["description"],
        "apps": ["shell", "jupyterlab", "vscode"],
        "default_profile": None,
        "allowed_teams": [],
        "builtin": True,
    }
    assert api.get("/api/v1/environments/nope", headers=ann).status_code == 404


def test_admins_and_operators_manage_users_do_not(api: TestClient) -> None:
    ann = user(api, "ann")
    otto = user(api, "otto", role="operator")
    body = {"name": "cuda", "image": "reg.local/cuda-ws:12", "apps": ["jupyterlab"]}
    assert api.post("/api/v1/environments", json=body, headers=ann).status_code == 403
    created = api.post("/api/v1/environments", json=body, headers=otto)
    assert created.status_code == 201, created.text
    assert created.json()["apps"] == ["shell", "jupyterlab"]
    assert not created.json()["builtin"]
    again = api.post("/api/v1/environments", json=body, headers=ADMIN)
    assert again.status_code == 409
    changed = api.patch("/api/v1/environments/cuda", json={"description": "CUDA 12"}, headers=otto)
    assert changed.json()["description"] == "CUDA 12"
    assert changed.json()["image"] == "reg.local/cuda-ws:12"
    bad = api.patch("/api/v1/environments/cuda", json={"apps": ["rstudio"]}, headers=otto)
    assert bad.status_code == 400 and "apps" in bad.json()["error"]
    assert api.delete("/api/v1/environments/cuda", headers=ann).status_code == 403
    assert api.delete("/api/v1/environments/cuda", headers=otto).status_code == 200
    assert api.delete("/api/v1/environments/cuda", headers=otto).status_code == 404
    assert api.delete("/api/v1/environments/base", headers=otto).status_code == 409


def test_a_restricted_environment_is_seen_and_used_only_by_its_teams(api: TestClient) -> None:
    ann = user(api, "ann", team="vision")
    ben = user(api, "ben", team="nlp")
    patched = api.patch(
        "/api/v1/environments/jupyter", json={"allowed_teams": ["vision"]}, headers=ADMIN
    )
    assert patched.status_code == 200 and patched.json()["builtin"]
    assert "jupyter" in names(api, ann) and "jupyter" not in names(api, ben)
    assert "jupyter" in names(api, ADMIN)
    assert api.get("/api/v1/environments/jupyter", headers=ben).status_code == 404
    refused = api.post("/api/v1/sessions", json={"environment": "jupyter"}, headers=ben)
    assert refused.status_code == 403
    assert "environment 'jupyter' is for teams vision" in refused.json()["error"]
    started = api.post("/api/v1/sessions", json={"environment": "jupyter"}, headers=ann)
    assert started.status_code == 201, started.text
    # Deleting the built-in's row gives it back its defaults: open to all again.
    assert api.delete("/api/v1/environments/jupyter", headers=ADMIN).status_code == 200
    assert "jupyter" in names(api, ben)


def test_a_session_starts_from_its_environment_and_lists_its_apps(
    api: TestClient, core: Sandman, runtime: FakeRuntime
) -> None:
    ann = user(api, "ann")
    created = api.post("/api/v1/sessions", json={"environment": "jupyter"}, headers=ann)
    assert created.status_code == 201, created.text
    body = created.json()
    sid = body["id"]
    assert body["image"] == "sandman-jupyter:latest"
    assert body["environment"] == "jupyter"
    assert body["apps"] == {
        "jupyterlab": f"{APPS_URL}/s/{sid}/lab/",
        "vscode": f"{APPS_URL}/s/{sid}/code/",
    }
    assert api.get(f"/api/v1/sessions/{sid}", headers=ann).json()["apps"] == body["apps"]
    (launched,) = [c.launch for c in runtime.containers.values()]
    (secret,) = [f for f in launched.files if f.path == SECRET_FILE]
    assert secret.content == apps_secret(load_apps_key(core.settings.data_dir), sid)
    assert secret.mode == 0o600 and secret.owned_by_user


def test_base_is_the_default_and_offers_no_web_apps(api: TestClient) -> None:
    ann = user(api, "ann")
    created = api.post("/api/v1/sessions", json={}, headers=ann)
    assert created.status_code == 201, created.text
    assert created.json()["environment"] == "base"
    assert created.json()["image"] == "sandman-workspace:latest"
    assert created.json()["apps"] == {}


def test_image_and_environment_together_are_400(api: TestClient) -> None:
    ann = user(api, "ann")
    both = {"environment": "jupyter", "image": "sandman-jupyter:latest"}
    response = api.post("/api/v1/sessions", json=both, headers=ann)
    assert response.status_code == 400
    assert "not both" in response.json()["error"]
    unknown = api.post("/api/v1/sessions", json={"environment": "rstudio"}, headers=ann)
    assert unknown.status_code == 400 and "unknown environment" in unknown.json()["error"]


def test_an_environments_image_is_allowed_without_allowed_images(api: TestClient) -> None:
    ann = user(api, "ann")
    created = api.post("/api/v1/sessions", json={"image": "sandman-pytorch:latest"}, headers=ann)
    assert created.status_code == 201, created.text
    assert created.json()["environment"] == "pytorch"


def test_an_environments_default_profile_is_used_when_none_is_asked(api: TestClient) -> None:
    ann = user(api, "ann")
    api.patch("/api/v1/environments/jupyter", json={"default_profile": "1g.5gb"}, headers=ADMIN)
    created = api.post("/api/v1/sessions", json={"environment": "jupyter"}, headers=ann)
    assert created.status_code == 201, created.text
    assert created.json()["mig_profile"] == "1g.5gb"


def test_a_restored_session_comes_back_in_its_environment(api: TestClient) -> None:
    ann = user(api, "ann")
    first = api.post("/api/v1/sessions", json={"environment": "jupyter"}, headers=ann).json()
    assert api.delete(f"/api/v1/sessions/{first['id']}", headers=ann).status_code == 200
    again = api.post("/api/v1/sessions", json={"restore": "latest"}, headers=ann)
    assert again.status_code == 201, again.text
    assert again.json()["environment"] == "jupyter"
    assert again.json()["image"] == "sandman-jupyter:latest"

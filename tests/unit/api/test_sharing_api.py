"""A session on a shared GPU through the API: ``"shared": true`` in, ``gpu_share`` out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core

from sandman.api.app import create_app

SESSIONS = "/api/v1/sessions"


@pytest.fixture
def shared_api(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    core = fake_core(tmp_path, runtime, gpu_topology="l4-x2-shared", default_mig_profile=None)
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


def test_a_shared_session_reads_its_share(shared_api: TestClient) -> None:
    created = shared_api.post(SESSIONS, json={"user_id": "alice", "shared": True}, headers=HEADERS)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["gpu_share"] == 0.25 and body["mig_profile"] is None
    assert any("time-sliced GPU: no memory isolation" in n for n in body["notes"])
    read = shared_api.get(f"{SESSIONS}/{body['session_id']}", headers=HEADERS).json()
    assert read["gpu_share"] == 0.25
    [listed] = shared_api.get(SESSIONS, headers=HEADERS).json()
    assert listed["gpu_share"] == 0.25

    gpus = shared_api.get("/api/v1/gpus", headers=HEADERS).json()["gpus"]
    assert gpus[0]["sharing"]["replicas_held"] == 1 and gpus[0]["sharing"]["replicas"] == 4
    assert gpus[1]["sharing"]["mode"] == "mps" and gpus[1]["sharing"]["replicas_held"] == 0


def test_an_unshared_session_has_no_share(shared_api: TestClient) -> None:
    body = shared_api.post(
        SESSIONS, json={"user_id": "bob", "gpu_count": 1}, headers=HEADERS
    ).json()
    assert body["gpu_share"] is None


def test_shared_with_another_gpu_field_is_400_naming_both(shared_api: TestClient) -> None:
    response = shared_api.post(
        SESSIONS, json={"user_id": "carol", "shared": True, "gpu_count": 1}, headers=HEADERS
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert "invalid_request" in response.text and "gpu_count, shared" in response.text, error


def test_shared_where_no_gpu_is_shared_is_400(api: TestClient) -> None:
    response = api.post(SESSIONS, json={"user_id": "dave", "shared": True}, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert "no GPU on this machine is shared" in response.text

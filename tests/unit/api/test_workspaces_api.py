"""``/users/{user_id}/workspace`` over a fake runtime: validation, status codes, and
the quota in sessions' answers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS

GIB = 2**30


def _put(api: TestClient, user: str, body: Any, prefix: str = "/api/v1") -> Any:
    return api.put(f"{prefix}/users/{user}/workspace", json=body, headers=HEADERS)


def test_a_quota_for_a_user_with_no_workspace_yet(api: TestClient) -> None:
    assert api.get("/api/v1/users/alice/workspace", headers=HEADERS).json()["code"] == ("not_found")
    response = _put(api, "alice", {"quota_bytes": 2 * GIB})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user_id": "alice",
        "quota_bytes": 2 * GIB,
        "used_bytes": None,
        "storage": None,
        "own_quota": True,
    }
    # also without the prefix, as every route
    got = api.get("/users/alice/workspace", headers=HEADERS)
    assert got.status_code == 200 and got.json()["quota_bytes"] == 2 * GIB
    assert _put(api, "alice", {"quota_bytes": 3 * GIB}, prefix="").json()["quota_bytes"] == (
        3 * GIB
    )
    # a whole number written as a float is a whole number (JSON Schema's integer)
    assert _put(api, "alice", {"quota_bytes": 4.0 * GIB}).json()["quota_bytes"] == 4 * GIB


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"quota_bytes": -1}, "greater than or equal"),
        ({"quota_bytes": 1024}, "greater than or equal"),
        ({"quota_bytes": 2**45}, "less than or equal"),
        ({"quota_bytes": "1g"}, "whole number"),
        ({"quota_bytes": GIB + 0.5}, "whole number"),
        ({"quota_bytes": True}, "whole number"),
        ({"quota_bytes": None}, "whole number"),
        ({}, "quota_bytes"),
        ({"quota_bytes": GIB, "owner": "x"}, "owner"),
    ],
)
def test_quotas_refused_with_a_reason(api: TestClient, body: Any, why: str) -> None:
    response = _put(api, "alice", body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request" and why in response.json()["error"]


def test_user_names_are_checked(api: TestClient) -> None:
    assert _put(api, "Alice", {"quota_bytes": GIB}).status_code == 400
    assert _put(api, "root", {"quota_bytes": GIB}).status_code == 400
    assert api.get("/api/v1/users/Alice/workspace", headers=HEADERS).status_code == 400


def test_sessions_carry_their_workspace_quota_and_a_shrink_below_use_is_409(
    api: TestClient, runtime: FakeRuntime
) -> None:
    created = api.post("/api/v1/sessions", json={"user_id": "alice"}, headers=HEADERS).json()
    assert created["workspace_quota"] == {"quota_bytes": 50 * GIB, "used_bytes": 0}
    runtime.workspaces["alice"] = replace(runtime.workspaces["alice"], used_bytes=3 * GIB)
    listed = api.get("/api/v1/sessions", headers=HEADERS).json()
    assert listed[0]["workspace_quota"] == {"quota_bytes": 50 * GIB, "used_bytes": 3 * GIB}
    grown = _put(api, "alice", {"quota_bytes": 60 * GIB})
    assert grown.status_code == 200 and grown.json()["storage"] == "image"
    one = api.get(f"/api/v1/sessions/{created['session_id']}", headers=HEADERS).json()
    assert one["workspace_quota"]["quota_bytes"] == 60 * GIB
    refused = _put(api, "alice", {"quota_bytes": 2 * GIB})
    assert refused.status_code == 409 and refused.json()["code"] == "conflict"
    assert "holds 3G" in refused.json()["error"]
    shrink_live = _put(api, "alice", {"quota_bytes": 10 * GIB})
    assert shrink_live.status_code == 409 and "end the session" in shrink_live.json()["error"]


def test_the_routes_document_their_errors(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]["/api/v1/users/{user_id}/workspace"]
    assert {"400", "401", "404", "500"} <= set(paths["get"]["responses"])
    assert {"400", "401", "409", "500", "503"} <= set(paths["put"]["responses"])
    body = api.get("/openapi.json").json()["components"]["schemas"]["WorkspaceQuotaBody"]
    assert body["properties"]["quota_bytes"]["minimum"] == 64 * 2**20

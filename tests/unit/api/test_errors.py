"""One error shape: every documented code is produced by some route, with its status
and headers, and the OpenAPI document says so."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS

from sandman.accounting.rates import Rates
from sandman.errors import ERROR_CODES, RuntimeFailure
from sandman.store.models import utcnow

# Codes documented before any route can produce them, and the issue that adds one.
NOT_YET_PRODUCED: dict[str, str] = {}


def _create(api: TestClient, user: str, **body: Any) -> httpx.Response:
    return api.post("/api/v1/sessions", json={"user_id": user, **body}, headers=HEADERS)


def _check(response: httpx.Response, code: str) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    extra = {"eta"} if code == "capacity_exhausted" else set()
    assert set(body) - extra == {"error", "code"}, body
    assert body["code"] == code and response.status_code == ERROR_CODES[code], body
    assert body["error"] and isinstance(body["error"], str)
    return body


def test_every_documented_code_is_produced(api: TestClient, runtime: FakeRuntime) -> None:
    seen: set[str] = set()

    def expect(response: httpx.Response, code: str) -> httpx.Response:
        _check(response, code)
        seen.add(code)
        return response

    expect(_create(api, "Not A Name"), "invalid_request")
    expect(api.get("/api/v1/sessions?limit=0", headers=HEADERS), "invalid_request")
    unauthenticated = expect(api.get("/api/v1/sessions"), "unauthenticated")
    assert unauthenticated.headers["WWW-Authenticate"] == "Bearer"
    expect(api.get("/api/v1/sessions/no-such-session", headers=HEADERS), "not_found")
    expect(api.get("/api/v1/no-such-endpoint", headers=HEADERS), "not_found")
    refused = expect(api.put("/api/v1/sessions", headers=HEADERS), "method_not_allowed")
    assert set(refused.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert _create(api, "alice").status_code == 201
    expect(_create(api, "alice"), "conflict")
    quota = api.put("/api/v1/quotas/user/erin", json={"max_slices": 0}, headers=HEADERS)
    assert quota.status_code == 200, quota.text
    over = expect(_create(api, "erin", mig_profile="1g.5gb"), "quota_exceeded")
    assert "user erin: uses 0 of 0 slices; this request needs 1" in over.json()["error"]
    # A spent budget: a whole A100 for an hour at 7 an hour against a budget of 1.
    core = api.app.state.sandman  # type: ignore[attr-defined]
    core.budgets.rates = core.usage.rates = Rates(per_gpu={"A100-40GB": 7.0})
    assert api.post("/api/v1/teams", json={"name": "broke"}, headers=HEADERS).status_code == 201
    budget = {"amount": 1, "action": "block-new"}
    assert api.put("/api/v1/budgets/team/broke", json=budget, headers=HEADERS).status_code == 200
    fay = _create(api, "fay", team="broke", mig_profile="1g.5gb")
    assert fay.status_code == 201, fay.text
    an_hour_on = utcnow() + timedelta(hours=8)  # a 1g costs 1 an hour
    core.budgets.clock = lambda: an_hour_on
    spent = expect(_create(api, "gus", team="broke", mig_profile="1g.5gb"), "budget_exhausted")
    assert "team broke's budget" in spent.json()["error"]
    api.delete(f"/api/v1/sessions/{fay.json()['id']}", headers=HEADERS)

    reader = api.post(
        "/api/v1/tokens",
        json={"name": "reader", "scopes": ["read"], "user_id": "alice"},
        headers=HEADERS,
    ).json()["token"]
    expect(api.delete("/api/v1/sessions", headers={"Authorization": f"Bearer {reader}"}),
           "forbidden")  # fmt: skip
    for i in range(7):  # the seven 1g.5gb instances of the simulated A100
        assert _create(api, f"gpu{i}", mig_profile="1g.5gb").status_code == 201
    full = expect(_create(api, "gpu7", mig_profile="1g.5gb"), "capacity_exhausted")
    assert "1g.5gb" in full.json()["error"]

    runtime.unreachable = True
    down = expect(_create(api, "bob"), "engine_unavailable")
    assert int(down.headers["Retry-After"]) >= 1
    runtime.unreachable = False

    runtime.start_error = RuntimeFailure("the engine refused")
    expect(_create(api, "carol"), "internal_error")
    runtime.start_error = None

    runtime.start_gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(_create, api, f"held{i}") for i in range(2)]
        deadline = time.monotonic() + 10
        while runtime.calls["start"] < 12 and time.monotonic() < deadline:
            time.sleep(0.01)  # 10 earlier starts, then both starters held
        assert runtime.calls["start"] == 12
        busy = expect(_create(api, "dave"), "busy")
        assert int(busy.headers["Retry-After"]) >= 1
        runtime.start_gate.set()
        assert [f.result().status_code for f in held] == [201, 201]

    assert seen == set(ERROR_CODES) - set(NOT_YET_PRODUCED)


def test_the_openapi_document_lists_errors_with_their_schema(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    error_schema = document["components"]["schemas"]["ErrorOut"]
    assert set(error_schema["properties"]["code"]["enum"]) == set(ERROR_CODES)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            if path.startswith("/api/v1/"):
                for status in ("401", "500"):
                    assert status in responses, (method, path, status)
                    schema = responses[status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}
    create = document["paths"]["/api/v1/sessions"]["post"]["responses"]
    assert {"201", "202", "400", "401", "409", "500", "503"} <= set(create)
    assert "Retry-After" in create["503"]["headers"]
    assert "404" in document["paths"]["/api/v1/sessions/{session_id}"]["get"]["responses"]

"""``/healthz`` says which part is down but not why, except to the admin; ``/docs``
works with no network (its assets come from the installed package)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS


def test_health_names_components_and_keeps_reasons_for_the_admin(
    api: TestClient, runtime: FakeRuntime
) -> None:
    healthy = api.get("/healthz")
    assert healthy.status_code == 200
    assert healthy.json()["components"] == {"database": "ok", "runtime": "ok"}
    runtime.unreachable = True
    api.app.state.sandman.health._last = None  # type: ignore[attr-defined]  # no cached result
    anonymous = api.get("/healthz")
    assert anonymous.status_code == 503
    body = anonymous.json()
    assert body["status"] == "degraded" and body["components"]["runtime"] == "down"
    assert "reasons" not in body and "does not answer" not in anonymous.text
    admin = api.get("/healthz", headers=HEADERS).json()
    assert any("runtime: the fake engine does not answer" in r for r in admin["reasons"])


def test_docs_load_their_assets_from_this_server(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources)
    for source in sources:
        asset = api.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100, source
    assert api.get("/redoc").status_code == 404  # not offered: its assets are not shipped

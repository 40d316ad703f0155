"""Notification channels and Alertmanager's webhook through the API: who may set
whose channels, what is shown of a webhook URL, and the webhook's own secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_accounts_api import core_of, make_user

from sandman.api.app import create_app
from sandman.observe.notify_channels import Notice

ALERTS_TOKEN = "alerts-secret-0123456789"
SLACK = "https://hooks.slack.com/services/T0/B0/TOPSECRET"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    core = fake_core(tmp_path, FakeRuntime(), alerts_token=ALERTS_TOKEN)
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


@pytest.fixture
def people(api: TestClient) -> dict[str, dict[str, str]]:
    return {
        "alice": make_user(api, "alice", email="alice@example.org"),
        "bob": make_user(api, "bob"),
        "otto": make_user(api, "otto", role="operator"),
        "ada": make_user(api, "ada", role="admin"),
    }


def test_a_user_sets_their_own_and_no_one_elses(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    alice = people["alice"]
    before = api.get("/api/v1/users/alice/notifications", headers=alice)
    assert before.status_code == 200
    assert before.json() == {
        "user_id": "alice",
        "webhook": None,
        "email": "alice@example.org",
        "terminal": True,
        "own": False,
        "updated_at": None,
    }
    body = {"webhook": {"url": SLACK, "format": "slack"}, "email": "a@example.org"}
    put = api.put("/api/v1/users/alice/notifications", json=body, headers=alice)
    assert put.status_code == 200, put.text
    assert put.json()["webhook"] == {"url": "https://hooks.slack.com/...", "format": "slack"}
    assert put.json()["own"] and put.json()["terminal"]
    assert "TOPSECRET" not in api.get("/api/v1/users/alice/notifications", headers=alice).text
    for method in ("get", "put", "delete"):
        kwargs = {"json": body} if method == "put" else {}
        refused = getattr(api, method)("/api/v1/users/bob/notifications", headers=alice, **kwargs)
        assert refused.status_code == 403, (method, refused.text)


def test_operators_set_anyones_but_not_an_admins_or_the_defaults(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    otto = people["otto"]
    body = {"email": "bob@example.org", "terminal": False}
    assert api.put("/api/v1/users/bob/notifications", json=body, headers=otto).status_code == 200
    assert api.get("/api/v1/users/ada/notifications", headers=otto).status_code == 200
    assert api.put("/api/v1/users/ada/notifications", json=body, headers=otto).status_code == 403
    assert api.get("/api/v1/notifications/defaults", headers=otto).status_code == 403
    assert api.put("/api/v1/notifications/defaults", json={}, headers=otto).status_code == 403
    assert api.get("/api/v1/users/carol/notifications", headers=otto).status_code == 404


def test_sending_the_shown_url_back_keeps_the_secret(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    alice = people["alice"]
    body = {"webhook": {"url": SLACK, "format": "slack"}}
    api.put("/api/v1/users/alice/notifications", json=body, headers=alice)
    shown = api.get("/api/v1/users/alice/notifications", headers=alice).json()
    shown_body = {"webhook": shown["webhook"], "email": None, "terminal": False}
    again = api.put("/api/v1/users/alice/notifications", json=shown_body, headers=alice)
    assert again.status_code == 200
    kept = core_of(api).notifications.for_delivery("alice")
    assert kept.webhook is not None and kept.webhook.url == SLACK and not kept.terminal
    assert api.delete("/api/v1/users/alice/notifications", headers=alice).status_code == 204
    assert not api.get("/api/v1/users/alice/notifications", headers=alice).json()["own"]


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data", "http://localhost:9093/x", "http://[::1]/"],
)
def test_refused_webhook_urls(api: TestClient, people: dict[str, dict[str, str]], url: str) -> None:
    put = api.put(
        "/api/v1/users/alice/notifications",
        json={"webhook": {"url": url}},
        headers=people["alice"],
    )
    assert put.status_code == 400, put.text


def test_admins_set_the_defaults(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    body = {
        "admins": {"webhook": {"url": SLACK, "format": "teams"}, "email": "ops@example.org"},
        "users": {"email": False, "terminal": True},
    }
    put = api.put("/api/v1/notifications/defaults", json=body, headers=people["ada"])
    assert put.status_code == 200, put.text
    got = api.get("/api/v1/notifications/defaults", headers=ADMIN).json()
    assert got["admins"] == {
        "webhook": {"url": "https://hooks.slack.com/...", "format": "teams"},
        "email": "ops@example.org",
    }
    assert got["users"] == {"webhook": None, "email": False, "terminal": True}
    assert api.get("/api/v1/users/alice/notifications", headers=ADMIN).json()["email"] is None
    assert (
        api.put("/api/v1/notifications/defaults", json=body, headers=people["alice"]).status_code
        == 403
    )
    records = core_of(api).audit.query(action="notification.defaults")
    assert records and "TOPSECRET" not in json.dumps([r.detail for r in records])


PAYLOAD = {
    "version": "4",
    "groupKey": '{}:{alertname="SandmanDown"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "sandman",
    "groupLabels": {"alertname": "SandmanDown"},
    "commonLabels": {"alertname": "SandmanDown"},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "SandmanDown", "severity": "critical", "audience": "admins"},
            "annotations": {"summary": "Sandman does not answer"},
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "abc",
        }
    ],
}


def test_the_alerts_webhook_wants_its_own_secret(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    queued: list[Notice] = []
    core_of(api).alerts.submit = lambda notice: queued.append(notice) or True
    url = "/api/v1/alerts/webhook"
    assert api.post(url, json=PAYLOAD).status_code == 401
    assert api.post(url, json=PAYLOAD, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.post(url, json=PAYLOAD, headers=ADMIN).status_code == 401  # a user's is not it
    good = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
    answer = api.post(url, json=PAYLOAD, headers=good)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"alerts": 1, "notices": 1}
    assert [(n.user_id, n.subject, n.severity) for n in queued] == [
        (None, "Sandman does not answer", "critical")
    ]
    assert api.post("/alerts/webhook", json=PAYLOAD, headers=good).status_code == 200
    assert api.post(url, json={"alerts": "no"}, headers=good).status_code == 400


def test_the_alerts_webhook_is_off_without_a_secret(tmp_path: Path) -> None:
    core = fake_core(tmp_path, FakeRuntime())
    try:
        with TestClient(create_app(core, run_background=False)) as client:
            answer = client.post(
                "/api/v1/alerts/webhook", json=PAYLOAD, headers={"Authorization": "Bearer x"}
            )
        assert answer.status_code == 403
        assert "SANDMAN_ALERTS_TOKEN" in answer.json()["error"]
    finally:
        core.stop()

"""A session's cost reaches its team's and project's usage report as soon as it ends,
on a real server with a real container, and the CSV export reads back as a table."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable

import httpx
from tests.integration.support import HEADERS, Server


def test_a_sessions_cost_is_in_its_team_and_project_report_once_it_ends(
    server: Callable[..., Server],
) -> None:
    sandman = server(gpu_topology="a100-40gb-x1", gpu_rates="A100-40GB=7", currency="EUR")
    sandman.start()
    api = f"{sandman.url}/api/v1"
    assert httpx.post(f"{api}/teams", json={"name": "vision"}, headers=HEADERS).status_code == 201
    project = {"name": "seg", "team": "vision"}
    assert httpx.post(f"{api}/projects", json=project, headers=HEADERS).status_code == 201
    made = sandman.create("ua", mig_profile="7g.40gb", team="vision", project="seg")
    assert made.status_code == 201, made.text
    time.sleep(2)
    ended = httpx.delete(
        f"{api}/sessions/{made.json()['session_id']}", headers=HEADERS, timeout=60
    ).json()["session"]
    assert ended["status"] == "deleted"
    began = ended["created_at"]
    held = time.monotonic()

    def usage(group_by: str, fmt: str = "json") -> httpx.Response:
        return httpx.get(
            f"{api}/usage",
            params={"group_by": group_by, "period": "day", "format": fmt},
            headers=HEADERS,
            timeout=30,
        )

    team = [r for r in usage("team").json()["rows"] if r["kind"] == "usage"]
    project_rows = [r for r in usage("project").json()["rows"] if r["kind"] == "usage"]
    print(f"in the reports {time.monotonic() - held:.2f}s after the session ended ({began})")
    assert [r["group"] for r in team] == ["vision"]
    assert [r["group"] for r in project_rows] == ["seg"]
    # A whole A100 at 7 EUR an hour for the seconds it was held (to the second).
    seconds = team[0]["gpu_hours"] * 3600
    assert 2 <= seconds <= 60, team
    assert abs(team[0]["cost"] - 7 * team[0]["gpu_hours"]) < 1e-4  # both rounded
    assert project_rows[0]["cost"] == team[0]["cost"]

    table = list(csv.DictReader(io.StringIO(usage("team", "csv").text)))
    assert {"period", "kind", "group", "gpu_hours", "cost", "currency"} <= set(table[0])
    assert [r["group"] for r in table if r["kind"] == "usage"] == ["vision"]
    assert {r["currency"] for r in table} == {"EUR"}
    kinds = {r["kind"] for r in table}
    assert {"usage", "discount", "idle"} <= kinds

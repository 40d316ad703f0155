"""A researcher serves themselves on the real engine, gateway and OpenSSH client:
their token starts their session, they log in, the login is on record; another
user cannot reach it; disabling them cuts the connection and keeps the workspace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.conftest import Harness
from tests.integration.support import ssh, write_key


def token_for(harness: Harness, user_id: str) -> dict[str, str]:
    made = harness.client.post("/api/v1/users", json={"user_id": user_id}, headers=harness.headers)
    assert made.status_code == 201, made.text
    minted = harness.client.post(
        "/api/v1/tokens", json={"name": "laptop", "user_id": user_id}, headers=harness.headers
    )
    assert minted.status_code == 201, minted.text
    return {"Authorization": f"Bearer {minted.json()['token']}"}


def test_a_user_runs_their_own_session_and_is_disabled(harness: Harness, tmp_path: Path) -> None:
    ria = token_for(harness, "ria")
    sam = token_for(harness, "sam")
    created = harness.client.post("/api/v1/sessions", json={}, headers=ria)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["user_id"] == "ria"
    key = write_key(tmp_path, session["ssh_private_key"])

    written = ssh(session, key, "echo kept > /workspace/notes.txt && id -un")
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == "ria"
    logins = harness.client.get(
        "/api/v1/audit", params={"action": "gateway.login"}, headers=harness.headers
    ).json()
    assert [(r["actor"], r["target"]) for r in logins] == [("ria", session["session_id"])]

    # Another user neither sees nor ends it.
    path = f"/api/v1/sessions/{session['id']}"
    assert harness.client.get(path, headers=sam).status_code == 404
    assert harness.client.delete(path, headers=sam).status_code == 404

    held = subprocess.Popen(
        ["ssh", "-p", str(session["ssh_port"]), "-i", str(key), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known'}",
         f"ria@{session['ssh_host']}", "echo started; sleep 120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert held.stdout is not None and held.stdout.readline().strip() == "started"
    disabled = harness.client.delete("/api/v1/users/ria", headers=harness.headers)
    assert disabled.status_code == 200
    _, stderr = held.communicate(timeout=30)
    assert held.returncode != 0 and "disabled" in stderr

    ended = harness.client.get(f"/api/v1/sessions/{session['id']}", headers=harness.headers).json()
    assert ended["status"] == "deleted" and ended["end_reason"] == "the account was disabled"
    assert harness.client.get("/api/v1/me", headers=ria).status_code == 401
    assert (harness.core.workspace_root / "ria" / "notes.txt").read_text() == "kept\n"
    assert not harness.containers()
    assert harness.core.audit.verify().ok

"""``exec`` on the Docker runtime: a command runs in the session as its user, and a
command that hangs is cut off at its timeout instead of holding the caller."""

from __future__ import annotations

import time

import pytest
from tests.integration.conftest import Harness

from sandman.errors import RuntimeFailure


def test_exec_runs_as_the_user_and_is_cut_off_at_its_timeout(harness: Harness) -> None:
    response = harness.create("execuser", gpu_count=0)
    assert response.status_code == 201, response.text
    session = harness.client.get(
        f"/api/v1/sessions/{response.json()['session_id']}", headers=harness.headers
    ).json()
    runtime = harness.core.runtime
    containers = harness.containers()
    (container,) = containers
    user = container.attrs["Config"]["User"]

    result = runtime.exec(container.id, ["sh", "-c", "id -un; echo $HOME; pwd"], user, 10)
    assert result.exit_code == 0 and not result.timed_out
    assert result.output.split() == ["execuser", "/workspace", "/workspace"]

    failed = runtime.exec(container.id, ["sh", "-c", "echo oops >&2; exit 3"], user, 10)
    assert failed.exit_code == 3 and "oops" in failed.output

    started = time.monotonic()
    hung = runtime.exec(container.id, ["sleep", "60"], user, 1)
    assert hung.timed_out and hung.exit_code is None
    assert time.monotonic() - started < 15
    assert session["status"] == "running"

    harness.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=harness.headers)
    with pytest.raises(RuntimeFailure):
        runtime.exec(container.id, ["true"], user, 5)

"""State restore with a real container: a session with a tmux session and an open
notebook ends by TTL; the restored session has both back."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.integration.conftest import Harness

from sandman.store.models import utcnow

WORKSPACE = {
    "data": {
        "notebook:analysis.ipynb": {"data": {"path": "analysis.ipynb", "factory": "Notebook"}}
    },
    "metadata": {"id": "default"},
}


def test_a_restored_session_has_its_tmux_and_notebook_back(make_harness) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = make_harness()
    core = harness.core
    old = harness.create("rita", ttl_minutes=5)
    assert old.status_code == 201, old.text
    first = old.json()
    uid = core.accounts.directory.get("rita").uid
    user = f"{uid}:{uid}"

    def run(container: str, script: str) -> str:
        result = core.runtime.exec(container, ["sh", "-c", script], user, 10)
        assert result.exit_code == 0, result.output
        return result.output

    run(
        first["container_id"],
        "mkdir -p /workspace/proj/runs ~/.jupyter/lab/workspaces && "
        "tmux new-session -d -s work -n shell -c /workspace/proj && "
        "tmux new-window -d -t work: -n train -c /workspace/proj/runs && "
        f"printf '%s' '{json.dumps(WORKSPACE)}' "
        "> ~/.jupyter/lab/workspaces/default-37a8.jupyterlab-workspace",
    )
    # The TTL runs out: the reaper ends it (its state captured as it stops).
    later = utcnow() + timedelta(minutes=6)
    core.sessions.clock = lambda: later
    core.reaper.sweep()
    core.sessions.clock = utcnow
    ended = harness.client.get(f"/api/v1/sessions/{first['id']}", headers=harness.headers).json()
    assert ended["status"] == "expired"

    again = harness.create("rita", restore="latest")
    assert again.status_code == 201, again.text
    second = again.json()
    assert second["labels"]["restored_from"] == first["id"]
    assert any(
        "analysis.ipynb" in note and "tmux attach -t work" in note for note in second["notes"]
    )
    windows = run(
        second["container_id"],
        "tmux list-windows -t work -F '#{window_name} #{pane_current_path}'",
    )
    assert windows.split("\n")[:2] == ["shell /workspace/proj", "train /workspace/proj/runs"]
    kept = run(second["container_id"], "ls ~/.jupyter/lab/workspaces")
    assert "default-37a8.jupyterlab-workspace" in kept  # JupyterLab reopens it from here

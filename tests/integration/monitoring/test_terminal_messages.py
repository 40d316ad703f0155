"""A notice written to the open terminals of a session's user, in a real container
through the real gateway and OpenSSH client: the session has no capabilities, so the
write runs as the user and reaches the terminals sshd handed them, with escape
sequences taken out."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.conftest import Harness
from tests.integration.support import Terminal, write_key

from sandman.observe.notify_channels import Channels
from sandman.observe.terminal import write_to_terminals

pytestmark = pytest.mark.integration


def test_a_notice_reaches_the_users_open_terminal(harness: Harness, tmp_path: Path) -> None:
    created = harness.create("tess")
    assert created.status_code == 201, created.text
    session = created.json()
    key = write_key(tmp_path, session["ssh_private_key"], name="tess")
    core = harness.core
    row = core.sessions.get(session["id"])
    uid = core.accounts.directory.get("tess").uid
    user = f"{uid}:{uid}"
    container = row.container_id or row.container_name
    assert write_to_terminals(core.runtime, container, user, "s", "t") == 0  # none open yet

    terminal = Terminal(session, key)
    try:
        terminal.wait_for("tess@")  # the prompt: sshd has handed the user a terminal
        written = write_to_terminals(
            core.runtime, container, user, "GPU 0 is hot", "Save your work.\x1b[2J now"
        )
        assert written == 1
        terminal.wait_for("*** Sandman: GPU 0 is hot ***")
        terminal.wait_for("Save your work.[2J now")  # the escape character was dropped
        assert "\x1b[2J" not in terminal.output

        # The same through the notifier, as the idle reclaim and alerts send it.
        core.notifications.set_user("tess", Channels(terminal=True), actor="test")
        core.notifier.notify("tess", session["id"], "Idle warning", "Reclaimed in 10 min.")
        assert core.notifier.flush(30)
        terminal.wait_for("*** Sandman: Idle warning ***")
    finally:
        terminal.close()

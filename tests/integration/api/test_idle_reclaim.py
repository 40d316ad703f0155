"""Idle reclaim on real containers through the real gateway and OpenSSH client, with
timeouts of seconds: an idle session is warned in its open terminal and reclaimed;
a computing session with no connection is kept while a silent connection's is
reclaimed; ``sandman-keepalive`` keeps a session.

The sweep runs by hand every second (the harness starts no background loops),
as does the gateway's report of traffic (``idle_check_interval``). A second is
short for a CPU sample: looking inside costs the container about 1.5% of a core
then (at the default 30 s, under 0.1%).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Harness
from tests.integration.support import Terminal, ssh, write_key

from sandman.image.build import image_is_current

FAST = {"idle_check_interval": "1s"}
KEEPALIVE_SOURCE = Path(__file__).parents[3] / "src/sandman/image/files/sandman-keepalive"


def sweep_until(
    harness: Harness, done: Callable[[], bool], timeout: float, every: float = 1.0
) -> float:
    """Sweep until ``done``; returns the seconds it took."""
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < timeout, "the sweep did not get there in time"
        harness.core.idle.sweep()
        time.sleep(every)
    return time.monotonic() - began


def status(harness: Harness, session_id: str) -> dict[str, Any]:
    found: dict[str, Any] = harness.client.get(
        f"/api/v1/sessions/{session_id}", headers=harness.headers
    ).json()
    return found


def started(harness: Harness, user: str, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    created = harness.create(user)
    assert created.status_code == 201, created.text
    session = created.json()
    return session, write_key(tmp_path, session["ssh_private_key"], name=user)


def test_an_idle_session_is_warned_in_its_terminal_and_reclaimed(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    harness = make_harness(idle_timeout="8s", idle_warnings="5s", **FAST)
    session, key = started(harness, "ivy", tmp_path)
    sid = session["session_id"]
    terminal = Terminal(session, key)
    try:
        terminal.wait_for("Idle:    reclaimed after 8 s without activity")  # the banner
        took = sweep_until(harness, lambda: status(harness, sid)["status"] != "running", 40)
        ended = status(harness, sid)
        assert ended["status"] == "idle", ended
        assert ended["end_reason"].startswith("idle for "), ended
        assert "idle timeout 8 s" in ended["end_reason"]
        assert 6 <= took <= 20, took
        terminal.wait_for(f"session {sid} ended: idle for")  # the gateway cut it, saying why
        output = terminal.output
        assert f"Sandman session {sid} is idle: reclaimed in" in output  # the 5 s warning
        assert "sandman-keepalive" in output and "/workspace is kept" in output
        assert f"Sandman session {sid} was reclaimed: idle" in output  # written before it went
        assert terminal.close() != 0
        assert harness.containers() == []
    finally:
        terminal.close()


def test_a_computing_session_is_kept_and_a_silent_connection_is_not(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    harness = make_harness(idle_timeout="6s", idle_warnings="none", **FAST)
    busy, busy_key = started(harness, "jon", tmp_path)
    silent, silent_key = started(harness, "kim", tmp_path)
    # A job left running with nobody connected (as in a detached tmux).
    job = ssh(busy, busy_key, "nohup sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &")
    assert job.returncode == 0, job.stderr
    held = subprocess.Popen(  # connected, but nothing moves and nothing computes
        ["ssh", "-p", str(silent["ssh_port"]), "-i", str(silent_key), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "kim@127.0.0.1", "sleep 120"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)  # logged in
        began = time.monotonic()
        sweep_until(harness, lambda: status(harness, silent["session_id"])["status"] == "idle", 30)
        assert time.monotonic() - began >= 4
        _, stderr = held.communicate(timeout=20)
        assert held.returncode != 0 and "ended: idle for" in stderr
        sweep_until(harness, lambda: time.monotonic() - began > 12, 20)  # two timeouts
        kept = status(harness, busy["session_id"])
        assert kept["status"] == "running", kept
    finally:
        if held.poll() is None:
            held.kill()


def test_sandman_keepalive_keeps_a_session(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    harness = make_harness(idle_timeout="6s", idle_warnings="none", **FAST)
    session, key = started(harness, "lea", tmp_path)
    sid = session["session_id"]
    # The image's command once it is built from this recipe; the same script meanwhile.
    command, script = ("sandman-keepalive 12s", None)
    if not image_is_current():
        command, script = ("sh -s 12s", KEEPALIVE_SOURCE.read_text())
    known = key.with_suffix(".known")
    known.write_text(f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n")
    kept = subprocess.run(
        ["ssh", "-p", str(session["ssh_port"]), "-i", str(key), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", f"{session['user_id']}@127.0.0.1", command],
        input=script, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert kept.returncode == 0, kept.stderr
    assert "Sandman counts this session as in use until" in kept.stdout
    began = time.monotonic()
    sweep_until(harness, lambda: time.monotonic() - began > 9, 20)  # past the timeout
    assert status(harness, sid)["status"] == "running"
    sweep_until(harness, lambda: status(harness, sid)["status"] != "running", 30)
    assert status(harness, sid)["status"] == "idle"
    assert time.monotonic() - began >= 15  # in use for 12 s, then idle for 6 s

"""The portal in a real browser: Debian's Chromium driven headless by Playwright,
against ``sandman serve`` on the real Docker engine, logging in through a real
OpenID provider.

A user logs in with single sign-on, starts a session from the portal, sees it
running with its countdown, copies the SSH command and ends it; the admin's GPU
page shows the MIG layout with that session in its slot; another user does not
see it. Screenshots of the main pages go to ``$SANDMAN_TEST_ARTIFACTS/portal/``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.support import HEADERS, Server
from tests.integration.web.conftest import (
    CHROMIUM,
    ROOT,
    SETUP_STAMP,
    artifacts_dir,
    log_in,
    wire_sso,
)

pytestmark = pytest.mark.integration

SESSION_ID = re.compile(r"/ui/sessions/([0-9a-f-]{36})")
STARTED = 180_000  # ms for a real container to come up


@pytest.fixture
def portal(server: Callable[..., Server], tmp_path: Path) -> Iterator[tuple[Server, Any]]:
    found = server(gpu_topology="a100-40gb-7x1g", default_mig_profile="1g.5gb")
    provider = wire_sso(found, tmp_path)
    try:
        found.start()
        yield found, provider
    finally:
        provider.stop()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(artifacts_dir("portal") / f"{name}.png"), full_page=True)


def test_portal_end_to_end(portal: tuple[Server, Any], chromium: Any) -> None:
    server, _ = portal
    url = server.url
    bob = log_in(chromium, url, "bob")
    shot(bob, "home")
    bob.select_option("#profile", "1g.5gb")
    bob.fill("input[name=ttl_minutes]", "30")
    bob.click("#start-form button[type=submit]")
    bob.wait_for_load_state()
    if bob.locator("#private-key").count():  # no key of his own: one is made, shown once
        assert "PRIVATE KEY" in bob.locator("#private-key").inner_text()
        bob.click("text=Go to the session")
    bob.wait_for_url(SESSION_ID)
    found = SESSION_ID.search(bob.url)
    assert found is not None
    session_id = found.group(1)
    # htmx refreshes the status every 5 s (a string predicate would need unsafe-eval).
    bob.locator("#status", has_text=re.compile(r"^running$")).wait_for(timeout=STARTED)
    countdown = bob.locator("#countdown")
    first = countdown.inner_text()
    assert re.fullmatch(r"\d+m \d\ds", first), first
    bob.wait_for_timeout(1500)
    assert countdown.inner_text() != first  # it counts down in the page
    command = bob.locator("#ssh-command").inner_text()
    assert command.startswith("ssh ") and "bob@" in command
    bob.click("#copy-ssh")
    bob.wait_for_selector("#copy-ssh[data-copied=true]")
    assert bob.evaluate("navigator.clipboard.readText()") == command
    shot(bob, "session")

    # The admin's GPU page: the session in its MIG slot, with its user.
    alice = log_in(chromium, url, "alice")
    alice.goto(f"{url}/ui/gpus")
    slot = alice.locator(f'.slot[data-session="{session_id}"]')
    slot.wait_for()
    assert "1g.5gb" in slot.inner_text() and "bob" in slot.inner_text()
    shot(alice, "gpus")
    alice.goto(f"{url}/ui/sessions")
    assert alice.locator(f'tr[data-session="{session_id}"]').count() == 1
    shot(alice, "sessions")
    for name in ("queue", "people", "costs", "audit"):
        alice.goto(f"{url}/ui/{name}")
        shot(alice, name)

    # Another user sees none of it.
    erin = log_in(chromium, url, "erin")
    assert session_id not in erin.content()
    answer = erin.goto(f"{url}/ui/sessions/{session_id}")
    assert answer is not None and answer.status == 404
    erin.goto(f"{url}/ui/gpus")
    assert erin.locator("[data-session]").count() == 0

    # Bob ends it.
    bob.on("dialog", lambda dialog: dialog.accept())
    bob.click("#end-session")
    bob.wait_for_url(f"{url}/ui/")
    assert "ended" in bob.locator(".flash").inner_text()
    ended = httpx.get(f"{url}/api/v1/sessions/{session_id}", headers=HEADERS, timeout=30)
    assert ended.json()["status"] == "deleted"


def test_setup_installs_chromium() -> None:
    """scripts/setup.sh --for-tests is what puts Chromium here (CI runs it)."""
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "chromium" in script
    if SETUP_STAMP.exists():
        assert shutil.which("chromium") or CHROMIUM.exists()

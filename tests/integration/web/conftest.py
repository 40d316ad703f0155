"""What the browser tests share: Debian's Chromium driven headless by Playwright,
logging in through single sign-on, and screenshots saved as artifacts.

Screenshots go under ``$SANDMAN_TEST_ARTIFACTS`` (default ``test-artifacts/`` at
the repository root, which git ignores), one folder per test module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[3]
SETUP_STAMP = ROOT / ".venv" / ".sandman-chromium"  # scripts/setup.sh --for-tests


def browser_or_skip() -> Any:
    """Playwright's sync API, or a skip when this machine was never set up for the
    browser tests; once setup has run, a missing piece is a failure, not a skip."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian's chromium package)")
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("the playwright package (the dev extras)")
        sync_api = None
    if missing:
        reason = f"missing {' and '.join(missing)}: run scripts/setup.sh --for-tests"
        if SETUP_STAMP.exists():
            pytest.fail(f"set up for the browser tests, yet {reason}")
        pytest.skip(reason)
    return sync_api


def artifacts_dir(name: str) -> Path:
    """Where a test module's screenshots go: ``$SANDMAN_TEST_ARTIFACTS/<name>``."""
    root = Path(os.environ.get("SANDMAN_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_in(browser: Any, url: str, account: str) -> Any:
    """A fresh browser context logged in as ``account`` through single sign-on."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    page.goto(f"{url}/ui/")
    assert "/ui/login" in page.url
    page.click("#sso-login")
    page.fill("input[name=login]", account)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if not page.url.startswith(url):  # the provider's consent
        page.click("button[type=submit]")
    page.wait_for_url(f"{url}/ui/**")
    assert page.locator("#who").inner_text().startswith(account)
    return page


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    return browser_or_skip()


@pytest.fixture
def chromium(playwright_api: Any) -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


def wire_sso(found: Any, tmp_path: Path) -> Any:
    """Start the test OpenID provider for ``found`` (a ``Server`` not yet started) and
    point its settings at it; the caller stops the provider."""
    from tests.integration.oidc.conftest import GROUP_MAP, USERS
    from tests.integration.oidc.harness import CLIENT_ID, CLIENT_SECRET, start_provider

    provider = start_provider(tmp_path, [f"{found.url}/auth/callback"], USERS)
    group_map = tmp_path / "groups.yaml"
    group_map.write_text(GROUP_MAP)
    found.env.update(
        SANDMAN_PUBLIC_URL=found.url,
        SANDMAN_OIDC_ISSUER=provider.issuer,
        SANDMAN_OIDC_CLIENT_ID=CLIENT_ID,
        SANDMAN_OIDC_CLIENT_SECRET=CLIENT_SECRET,
        SANDMAN_OIDC_GROUP_MAP=str(group_map),
    )
    return provider

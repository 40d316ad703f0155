"""JupyterLab and VS Code from the portal, in a real browser: Debian's Chromium driven
headless by Playwright, against ``sandman serve`` with its apps origin on the real
Docker engine, logging in through a real OpenID provider.

A user logs in with single sign-on, starts a ``jupyter`` session from the portal's
form, opens JupyterLab from the session page (the one-time handshake to the apps
origin, ``localhost`` where the portal is ``127.0.0.1``), creates a notebook and
runs a cell that writes a file to ``/workspace`` and prints a value; the file is in
the container's workspace. VS Code, opened the same way, lists that file in its
explorer. Another user is refused the same URLs (401 without the apps origin's
cookie, even when logged in to the portal; 404 with her own token), and the portal
will not hand her a code for them. The admin's GPU page shows the session in its
MIG slot. Screenshots go to ``$SANDMAN_TEST_ARTIFACTS/portal-apps/``.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import remove_deployment_containers
from tests.integration.support import HEADERS, Server, free_port
from tests.integration.web.conftest import artifacts_dir, log_in, wire_sso

from sandman.image.build import image_exists
from sandman.image.recipes import environment_image

pytestmark = pytest.mark.integration

SESSION_ID = re.compile(r"/ui/sessions/([0-9a-f-]{36})")
STARTED = 180_000  # ms for a real container to come up
APP_LOAD = 240_000  # ms for an app's first page: started on demand, then its bundles


@pytest.fixture
def apps_portal(
    server: Callable[..., Server],
    docker_client: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Server]:
    """``sandman serve`` with single sign-on and an apps origin of its own port, on a
    session network of its own (the shared test network may be removed under it by
    another test run's teardown once it looks unused)."""
    assert image_exists(environment_image("jupyter")), "sandman-jupyter:latest is not built"
    network = f"smt-net-{uuid.uuid4().hex[:6]}"
    found = server(
        network_name=network,
        gpu_topology="a100-40gb-7x1g",
        default_mig_profile="1g.5gb",
        apps_listen=f"127.0.0.1:{free_port()}",
        memory="2g",  # JupyterLab, a kernel and code-server side by side
        cpus="1.5",
    )
    provider = wire_sso(found, tmp_path)
    try:
        found.start()
        yield found
    finally:
        provider.stop()
        found.stop()
        if (found.data_dir / "sandman.db").exists():  # its containers, then the network
            failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
            if failed:  # beside the screenshots: tmp_path may be pruned by later runs
                log = artifacts_dir("portal-apps") / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.log"
                shutil.copyfile(found.data_dir / "serve.log", log)
            remove_deployment_containers(found.deployment(), show_logs=failed)
        for made in docker_client.networks.list(names=[network]):
            if made.name == network:
                made.remove()


class Shots:
    """Screenshots of named pages; on a failure, of every page still open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pages: list[Any] = []
        self.stamp = time.strftime("%Y%m%d-%H%M%S")  # failures of runs apart stay apart

    def take(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)

    def open(self, page: Any) -> Any:
        self.pages.append(page)
        return page

    def failed(self) -> None:
        for number, page in enumerate(self.pages):
            try:
                if not page.is_closed():
                    page.screenshot(path=str(self.folder / f"failed-{self.stamp}-{number}.png"))
            except Exception:  # the browser may be what failed
                pass


def open_app(session_page: Any, button: str) -> Any:
    """Click an app's button on the session page (a form posted to a new tab)."""
    with session_page.context.expect_page() as opened:
        session_page.click(button)
    page = opened.value
    page.set_default_timeout(APP_LOAD)
    return page


def test_jupyterlab_and_vscode_from_the_portal(
    apps_portal: Server, chromium: Any, docker_client: Any
) -> None:
    url = apps_portal.url
    apps = apps_portal.env.get("SANDMAN_APPS_URL") or (
        "http://localhost:" + apps_portal.env["SANDMAN_APPS_LISTEN"].rsplit(":", 1)[1]
    )
    assert not apps.startswith(url)  # another origin: the portal's cookies stay home
    shots = Shots(artifacts_dir("portal-apps"))
    try:
        run_through(url, apps, chromium, docker_client, shots)
    except BaseException:
        shots.failed()
        raise


def run_through(url: str, apps: str, chromium: Any, docker_client: Any, shots: Shots) -> None:
    bob = shots.open(log_in(chromium, url, "bob"))
    shots.take(bob, "home")
    bob.select_option("#start-form select[name=environment]", "jupyter")
    bob.select_option("#profile", "1g.5gb")
    bob.fill("input[name=ttl_minutes]", "30")
    bob.click("#start-form button[type=submit]")
    bob.wait_for_load_state()
    if bob.locator("#private-key").count():  # no key of his own: one is made, shown once
        bob.click("text=Go to the session")
    bob.wait_for_url(SESSION_ID)
    found = SESSION_ID.search(bob.url)
    assert found is not None
    sid = found.group(1)
    # htmx refreshes the status every 5 s; a failed start says why on the page.
    settled = re.compile(r"^(running|failed|deleted)$")
    bob.locator("#status", has_text=settled).wait_for(timeout=STARTED)
    status = bob.locator("#session-status").inner_text()
    assert bob.locator("#status").inner_text() == "running", status
    assert bob.locator("#open-jupyterlab").is_visible()
    assert bob.locator("#open-vscode").is_visible()
    shots.take(bob, "session")
    session = httpx.get(f"{url}/api/v1/sessions/{sid}", headers=HEADERS, timeout=30).json()
    assert session["environment"] == "jupyter", session
    container = docker_client.containers.get(session["container_name"])

    # JupyterLab, through the handshake: the portal's one-time code, traded on the
    # apps origin for its own cookie, then the lab itself.
    lab_url = f"{apps}/s/{sid}/lab/"
    lab = shots.open(open_app(bob, "#open-jupyterlab"))
    lab.wait_for_url(f"{lab_url}**")
    assert "code=" not in lab.url  # the code is spent and gone from the address
    lab.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    notebook = lab.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    # The kernel's state in the status bar: "Idle" only once a kernel is connected
    # (the toolbar's indicator says idle before there is any kernel at all).
    lab.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for()
    name = f"from-lab-{secrets.token_hex(4)}.txt"
    value = secrets.randbelow(10**9)
    notebook.locator(".jp-Cell .cm-content").first.click()
    lab.keyboard.insert_text(
        f"import pathlib; pathlib.Path('/workspace/{name}').write_text('{value}'); "
        f"print('value:', {value} * 2)"
    )
    lab.keyboard.press("Shift+Enter")
    output = notebook.locator(".jp-OutputArea-output", has_text=f"value: {value * 2}")
    output.wait_for(timeout=60_000)
    shots.take(lab, "jupyterlab")

    # The file is in the session's workspace, written as the user.
    listed = container.exec_run(["stat", "-c", "%U %s", f"/workspace/{name}"])
    assert listed.exit_code == 0, listed.output
    read = container.exec_run(["cat", f"/workspace/{name}"])
    assert read.exit_code == 0 and read.output.decode() == str(value), read.output
    assert listed.output.decode().split() == ["bob", str(len(str(value)))], listed.output

    # VS Code, the same way: the workspace's files in its explorer.
    code_url = f"{apps}/s/{sid}/code/"
    code = shots.open(open_app(bob, "#open-vscode"))
    code.wait_for_url(f"{code_url}**")
    explorer = code.locator(".explorer-folders-view")
    explorer.locator(".monaco-list-row", has_text=name).wait_for()
    assert explorer.locator(".monaco-list-row", has_text=re.compile(r"\.ipynb$")).count() >= 1
    shots.take(code, "vscode")

    # The admin's GPU page: the session in its MIG slot, with its user.
    alice = shots.open(log_in(chromium, url, "alice"))
    alice.goto(f"{url}/ui/gpus")
    slot = alice.locator(f'.slot[data-session="{sid}"]')
    slot.wait_for()
    assert "1g.5gb" in slot.inner_text() and "bob" in slot.inner_text()
    shots.take(alice, "gpus")

    # Another user: her portal login is no login on the apps origin (401), her own
    # token is refused as for an unknown session (404), and the portal will not
    # hand her a code for his apps.
    erin = shots.open(log_in(chromium, url, "erin"))
    for target in (lab_url, f"{lab_url}lab", code_url):
        refused = erin.goto(target)
        assert refused is not None and refused.status == 401, (target, refused)
    erin.goto(f"{url}/ui/tokens")
    erin.fill("#new-token-form input[name=name]", "apps")
    erin.click("#new-token-form button[type=submit]")
    token = erin.locator("#new-token").inner_text().strip()
    assert token
    csrf = erin.locator("#new-token-form input[name=csrf_token]").get_attribute("value")
    for target in (lab_url, f"{lab_url}api/contents", code_url):
        refused = erin.request.get(target, headers={"Authorization": f"Bearer {token}"})
        assert refused.status == 404, (target, refused.status, refused.text())
    for app in ("jupyterlab", "vscode"):
        handshake = erin.request.post(
            f"{url}/ui/sessions/{sid}/apps/{app}", form={"csrf_token": csrf}, max_redirects=0
        )
        assert handshake.status == 404, (app, handshake.status, handshake.text())
    anonymous = chromium.new_context().new_page()
    refused = anonymous.goto(lab_url)
    assert refused is not None and refused.status == 401
    anonymous.context.close()
    # ...while Bob's own cookie still lets him in.
    assert lab.request.get(f"{lab_url}api/contents/{name}").status == 200

    # Bob ends it; the container goes.
    bob.bring_to_front()
    bob.on("dialog", lambda dialog: dialog.accept())
    bob.click("#end-session")
    bob.wait_for_url(f"{url}/ui/")
    ended = httpx.get(f"{url}/api/v1/sessions/{sid}", headers=HEADERS, timeout=30)
    assert ended.json()["status"] == "deleted"
    assert not docker_client.containers.list(all=True, filters={"id": container.id})

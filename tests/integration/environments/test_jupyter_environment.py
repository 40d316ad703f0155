"""The jupyter environment on a real engine: a session started from it runs
JupyterLab and VS Code (code-server) on demand through ``sandman-apps``, as its
user; both refuse requests without the session's apps secret."""

from __future__ import annotations

import httpx
from tests.integration.conftest import Harness

from sandman.environments.apps import (
    JUPYTERLAB,
    VSCODE,
    app_auth_headers,
    apps_secret,
    load_apps_key,
)
from sandman.image.build import image_exists
from sandman.image.recipes import environment_image


def test_jupyterlab_and_vscode_start_on_demand_and_need_the_secret(make_harness) -> None:  # type: ignore[no-untyped-def]
    assert image_exists(environment_image("jupyter")), (
        "run `make test` (scripts/setup.sh --for-tests builds sandman-jupyter:latest)"
    )
    harness: Harness = make_harness(memory="1g")
    core = harness.core
    created = harness.create("jess", environment="jupyter")
    assert created.status_code == 201, created.text
    session = created.json()
    sid, ip = session["id"], session["container_ip"]
    assert session["environment"] == "jupyter"
    assert set(session["apps"]) == {"jupyterlab", "vscode"}
    uid = core.accounts.directory.get("jess").uid
    as_user = f"{uid}:{uid}"
    secret = apps_secret(load_apps_key(harness.data_dir), sid)

    def apps(*argv: str) -> str:
        result = core.runtime.exec(session["container_id"], ["sandman-apps", *argv], as_user, 120)
        assert result.exit_code == 0, result.output
        return result.output

    apps("start", "jupyterlab")
    status = f"http://{ip}:{JUPYTERLAB.port}/s/{sid}/lab/api/status"
    with httpx.Client(timeout=30) as client:
        allowed = client.get(status, headers=app_auth_headers(JUPYTERLAB, secret))
        assert allowed.status_code == 200, allowed.text
        client.cookies.clear()  # Jupyter's login cookie would let the next ones in
        assert client.get(status).status_code == 403
        assert client.get(status, headers={"Authorization": "token wrong"}).status_code == 403
        assert "running" in apps("status", "jupyterlab")
        assert "is running" in apps("start", "jupyterlab")  # a second start finds it

        apps("start", "vscode")
        root = f"http://{ip}:{VSCODE.port}/"
        client.cookies.clear()
        refused = client.get(root)
        assert refused.status_code == 302 and refused.headers["location"].endswith("login")
        opened = client.get(root + "?folder=/workspace", headers=app_auth_headers(VSCODE, secret))
        assert opened.status_code == 200, opened.text
        assert "workbench" in opened.text

    urls = apps("url")
    assert f"http://127.0.0.1:8888/s/{sid}/lab/?token={secret}" in urls
    assert f"(password: {secret})" in urls

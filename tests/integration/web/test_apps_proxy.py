"""The apps origin on a real engine: a jupyter session's JupyterLab through the
proxy (HTTP, the handshake, a kernel's WebSocket channel running code) and VS
Code's page; another user is refused."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx
from tests.integration.conftest import Harness
from tests.unit.web.conftest import ServerThread
from websockets.sync.client import connect

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Scope
from sandman.image.build import image_exists
from sandman.image.recipes import environment_image
from sandman.web.apps_app import create_apps_app


def execute(code: str, session: str) -> dict[str, object]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "username": "test",
            "session": session,
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False},
        "channel": "shell",
        "buffers": [],
    }


def test_jupyterlab_through_the_apps_origin(make_harness: Callable[..., Harness]) -> None:
    assert image_exists(environment_image("jupyter")), "sandman-jupyter:latest is not built"
    listener = ServerThread()
    url = f"http://127.0.0.1:{listener.port}"
    harness = make_harness(memory="1g", apps_url=url)
    core = harness.core
    for user in ("jess", "mallory"):
        core.accounts.directory.create(user, UserChanges())
    tokens = {
        user: core.credentials.create_token(user, "t", frozenset(Scope), None, "test")[1]
        for user in ("jess", "mallory")
    }
    created = harness.create("jess", environment="jupyter")
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    listener.start(create_apps_app(core))
    try:
        lab = f"{url}/s/{sid}/lab/"
        jess = {"Authorization": f"Bearer {tokens['jess']}"}
        with httpx.Client(timeout=120) as client:
            assert client.get(lab + "api/status").status_code == 401
            other = {"Authorization": f"Bearer {tokens['mallory']}"}
            assert client.get(lab + "api/status", headers=other).status_code == 404
            status = client.get(lab + "api/status", headers=jess)  # starts JupyterLab
            assert status.status_code == 200, status.text

            opened = harness.client.post(
                f"/api/v1/sessions/{sid}/apps/jupyterlab/open", headers=jess
            )
            assert opened.status_code == 200, opened.text
            page = client.get(opened.json()["url"], follow_redirects=True)
            assert page.status_code == 200 and "JupyterLab" in page.text, page.text[:500]

            kernel = client.post(lab + "api/kernels", headers=jess, json={"name": "python3"})
            assert kernel.status_code == 201, kernel.text
            channels = f"{lab}api/kernels/{kernel.json()['id']}/channels".replace("http", "ws")
            with connect(channels, additional_headers=jess, origin=url) as ws:  # type: ignore[arg-type]
                ws.send(json.dumps(execute("print(6 * 7)", uuid.uuid4().hex)))
                seen = []
                for _ in range(50):
                    message = json.loads(ws.recv(timeout=60))
                    if message["msg_type"] == "stream":
                        seen.append(message["content"]["text"])
                    if message["msg_type"] == "execute_reply":
                        break
                assert "42\n" in seen, seen

            code = client.get(f"{url}/s/{sid}/code/?folder=/workspace", headers=jess)
            assert code.status_code == 200, code.text[:500]
            assert "workbench" in code.text
    finally:
        listener.stop()

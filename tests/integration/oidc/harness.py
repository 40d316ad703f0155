"""A real OpenID provider (npm's ``oidc-provider`` on Node.js), Sandman served by
uvicorn, and a "browser": an HTTP client with a cookie jar that follows redirects
and fills in the provider's login and consent forms."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import uvicorn
from fastapi import FastAPI
from tests.integration.support import free_port

PROVIDER_DIR = Path(__file__).parent / "provider"
CLIENT_ID = "sandman-test"
CLIENT_SECRET = "sandman-test-secret"


def provider_modules() -> Path:
    """The node_modules ``scripts/setup.sh --for-tests`` builds for this lockfile."""
    given = os.environ.get("SANDMAN_OIDC_PROVIDER_MODULES")
    if given:
        return Path(given)
    lock = (PROVIDER_DIR / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(lock).hexdigest()[:16]
    return cache / "sandman" / "oidc-provider" / key / "node_modules"


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def netloc(self) -> str:
        return urlsplit(self.issuer).netloc

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_provider(
    workdir: Path, redirect_uris: list[str], users: dict[str, dict[str, Any]]
) -> Provider:
    modules = provider_modules()
    assert (modules / "oidc-provider").is_dir(), (
        f"no oidc-provider in {modules}: run scripts/setup.sh --for-tests"
    )
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = workdir / "provider.json"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "issuer": issuer,
                "client": {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": redirect_uris,
                },
                "users": users,
            }
        )
    )
    log = workdir / "provider.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "server.mjs"), str(config)],
            env={**os.environ, "OIDC_PROVIDER_MODULES": str(modules)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    provider = Provider(issuer, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the provider exited:\n{provider.output()}"
        try:
            found = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2)
            if found.status_code == 200:
                return provider
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    provider.stop()
    raise AssertionError(f"the provider did not answer:\n{provider.output()}")


class Served:
    """An ASGI app on 127.0.0.1 in a thread, so the provider can redirect to it."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn stopped"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", ""), values.get("method", "get").lower()))
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1].fields[values["name"]] = values.get("value", "")


def forms_of(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


class Browser:
    """One person's browser: its own cookies, following every redirect, and filling
    in the provider's forms (login as ``account``, then consent)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.http = httpx.Client(follow_redirects=False, timeout=30)
        self.visited: list[str] = []

    def close(self) -> None:
        self.http.close()

    def drive(self, url: str, account: str, stop_at: str | None = None) -> httpx.Response:
        """Go to ``url`` and on until a page that is not a redirect or a provider's
        form; ``stop_at``: stop before requesting a URL that starts with it."""
        response = self.http.get(url)
        for _ in range(30):
            self.visited.append(str(response.url))
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if stop_at is not None and target.startswith(stop_at):
                    return response
                response = self.http.get(target)
                continue
            forms = forms_of(response.text) if response.status_code == 200 else []
            if response.url.netloc.decode() != self.provider.netloc or not forms:
                return response
            form = forms[0]
            fields = dict(form.fields)
            if fields.get("prompt") == "login":
                fields.update(login=account, password="any")
            response = self.http.post(urljoin(str(response.url), form.action), data=fields)
        raise AssertionError(f"too many steps: {self.visited[-5:]}")

    def login(self, sandman: str, account: str, next_path: str | None = None) -> httpx.Response:
        query = f"?next={next_path}" if next_path else ""
        return self.drive(f"{sandman}/auth/login{query}", account)

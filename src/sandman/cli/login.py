"""``sandman login`` and ``sandman logout``: a personal token through single sign-on.

The CLI listens on 127.0.0.1 (a random port) and opens Sandman's ``/auth/login``
in the browser; after the provider's login, Sandman sends the browser back to
that listener with a one-time code, which the CLI exchanges for the token with a
verifier only it knows (like PKCE). So the token never appears in a URL, the
browser's history or another program's reach.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import typer
from rich.console import Console

from sandman.accounts.oidc import challenge_of
from sandman.accounts.tokens import same_secret
from sandman.cli import credentials

console = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8080"
PAGE = (
    "<!doctype html><meta charset=utf-8><title>Sandman</title>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p>"
)


class LoginFailed(Exception):
    """Why ``sandman login`` got no token, for a person."""


@dataclass(frozen=True)
class LoggedIn:
    url: str
    user_id: str
    token: str
    token_id: str
    expires_at: str | None
    saved_to: Path


class _Listener:
    """The loopback end of the login: waits for one ``/callback`` with our state."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.done = threading.Event()
        self.code: str | None = None
        self.error: str | None = None
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.handle(self)

            def log_message(self, *args: Any) -> None:
                """Quiet: the request line holds the one-time code."""

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if parts.path != "/callback" or not same_secret(query.get("state", ""), self.state):
            self._answer(request, 404, "Not this login", "This is not the login sandman waits for.")
            return
        if "code" in query:
            self.code = query["code"]
            self._answer(request, 200, "Logged in", "Back to the terminal: you can close this.")
        else:
            self.error = query.get("error") or "the login failed"
            self._answer(request, 403, "Login refused", self.error)
        self.done.set()

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, title: str, text: str) -> None:
        from html import escape

        body = PAGE.format(title=escape(title), text=escape(text)).encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        request.wfile.write(body)

    def __enter__(self) -> _Listener:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def login_url(url: str, port: int, state: str, challenge: str) -> str:
    query = urlencode({"cli_port": port, "cli_state": state, "cli_challenge": challenge})
    return f"{url.rstrip('/')}/auth/login?{query}"


def login_flow(
    url: str,
    open_browser: Callable[[str], object],
    timeout: float = 300.0,
    hostname: str | None = None,
    http: httpx.Client | None = None,
) -> LoggedIn:
    """Log in at ``url`` through its provider; the token is saved (mode 0600).

    ``open_browser`` gets the URL to open (the tests drive the provider with it).
    """
    url = url.rstrip("/")
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    with _Listener(state) as listener:
        open_browser(login_url(url, listener.port, state, challenge_of(verifier)))
        if not listener.done.wait(timeout):
            raise LoginFailed(f"no login came back within {timeout:.0f} seconds")
    if listener.code is None:
        raise LoginFailed(f"Sandman refused the login: {listener.error}")
    body = {"code": listener.code, "verifier": verifier, "hostname": hostname or _hostname()}
    client = http or httpx.Client(timeout=30.0)
    try:
        response = client.post(f"{url}/auth/cli/token", json=body)
    except httpx.HTTPError as exc:
        raise LoginFailed(f"cannot reach Sandman at {url}: {exc}") from None
    finally:
        if http is None:
            client.close()
    answer = response.json() if response.content else {}
    if response.status_code != 200:
        raise LoginFailed(f"Sandman refused the token: {answer.get('error', response.text)}")
    saved = credentials.save(url, answer["token"], answer["token_id"])
    return LoggedIn(
        url, answer["user_id"], answer["token"], answer["token_id"], answer["expires_at"], saved
    )


def _hostname() -> str:
    return socket.gethostname() or "unknown"


def _default_url() -> str:
    saved = credentials.load()
    return os.environ.get("SANDMAN_URL") or (saved[0] if saved else DEFAULT_URL)


def _open(url: str, browser: bool) -> None:
    console.print(f"Log in at:\n\n    {url}\n")
    if browser and webbrowser.open(url):
        console.print("(opened in your browser)")


def login_command(
    url: Annotated[
        str | None, typer.Option("--url", help="Sandman's address (default: SANDMAN_URL)")
    ] = None,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the login in a browser")
    ] = True,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for the login")] = 300,
) -> None:
    """Log in through single sign-on; later commands use the token it saves."""
    target = url or _default_url()
    try:
        done = login_flow(target, lambda link: _open(link, browser), timeout=timeout)
    except LoginFailed as exc:
        console.print(f"[red]sandman login: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"Logged in to {done.url} as {done.user_id}; token saved to {done.saved_to} "
        f"(expires {done.expires_at or 'never'})."
    )


def logout_command() -> None:
    """Revoke the saved token at Sandman and forget it here."""
    saved = credentials.load()
    if saved is None:
        console.print("not logged in")
        return
    url, token = saved
    token_id = credentials.token_id()
    if token_id is not None:
        try:
            response = httpx.delete(
                f"{url}/api/v1/tokens/{token_id}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30.0,
            )
            if response.status_code >= 400 and response.status_code != 401:
                console.print(f"[yellow]could not revoke the token: {response.text}[/yellow]")
        except httpx.HTTPError as exc:
            console.print(f"[yellow]could not reach {url} to revoke the token: {exc}[/yellow]")
    credentials.forget()
    console.print(f"logged out of {url}")

"""The contract between a session's web apps and Sandman's apps proxy.

An environment may offer JupyterLab and VS Code in the browser (code-server). They
run inside the session container, as the session's user, started on demand by the
proxy (``sandman-apps start NAME``, run through the runtime's ``exec``), and listen
on fixed ports on all the container's addresses: the session network (where the
proxy reaches them) and 127.0.0.1 (so ``ssh -L`` through the gateway works too).

Every request to an app must carry the session's **apps secret**; the proxy adds
it, and the user can read it inside the session (``sandman-apps url`` prints the
local URLs with it), so nobody else on the host or in another container can use
the apps. The secret is derived, never stored: HMAC-SHA256 of the session id
under a key of Sandman's data directory. It reaches the container as the file
``SECRET_FILE`` (mode 0600, owned by the session's uid) in the read-only
directory Sandman binds at ``/etc/sandman/ssh``.

On the apps origin (``SANDMAN_APPS_URL``) the proxy serves
``/s/{session_id}/{path}/`` for each app (``upstream_path`` says what to ask the
app for).

What the proxy sends, per request (HTTP and WebSocket upgrades alike):

* **JupyterLab** (port 8888, started with ``ServerApp.base_url=/s/{id}/lab/``): the
  whole path, and ``Authorization: token <secret>`` (``app_auth_headers``).
  Jupyter Server 2 skips its XSRF check for token-authenticated requests, so the
  proxy must itself refuse cross-site requests (its cookie ``SameSite``, the
  ``Origin`` of WebSockets and unsafe methods). ``Host`` and ``Origin`` must agree
  (both the apps origin's, or both rewritten to the app's own address): Jupyter
  compares a WebSocket's ``Origin`` with ``Host``.
  It runs with ``trust_xheaders`` (``X-Forwarded-Proto``/``-For`` are believed)
  and ``allow_remote_access``; ``sandman-apps start jupyterlab --origin URL`` also
  sets ``allow_origin`` to the apps origin, for a proxy that rewrites ``Host``.
* **VS Code** (code-server, port 8889, ``--auth password`` with
  ``HASHED_PASSWORD=code_server_password_hash(secret)``): the path without the base
  path (code-server's URLs are relative), a ``/s/{id}/code`` without its slash
  redirected to ``/s/{id}/code/`` (relative links need it), and the cookie
  ``code-server-session=<that hash>`` merged into ``Cookie``
  (``app_auth_headers``). code-server checks a WebSocket's ``Origin`` against
  ``Forwarded: host=``, else ``X-Forwarded-Host``, else ``Host``: they must agree
  as for JupyterLab; ``--origin URL`` adds the apps origin to ``--trusted-origins``.
  Without the cookie it redirects to its login page, whose password is the secret
  itself.

Over ``ssh -L`` the user opens ``http://127.0.0.1:8888/s/{id}/lab/?token=<secret>``
and ``http://127.0.0.1:8889/`` (password: the secret); ``sandman-apps url`` prints
both.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

SECRET_FILE = "/etc/sandman/ssh/apps_token"
LAUNCHER = "/usr/local/bin/sandman-apps"  # start NAME | status NAME | url
KEY_FILE = "apps_key"  # in Sandman's data directory


@dataclass(frozen=True)
class App:
    name: str  # the API's key and the launcher's argument
    path: str  # its prefix under /s/{session_id}/
    port: int  # where it listens in the container
    title: str


JUPYTERLAB = App("jupyterlab", "lab", 8888, "JupyterLab")
VSCODE = App("vscode", "code", 8889, "VS Code")
APPS: dict[str, App] = {app.name: app for app in (JUPYTERLAB, VSCODE)}
BY_PATH: dict[str, App] = {app.path: app for app in APPS.values()}


def base_path(session_id: str, app: App) -> str:
    """The path the app is served under on the apps origin: ``/s/{id}/lab/``."""
    return f"/s/{session_id}/{app.path}/"


def apps_secret(key: bytes, session_id: str) -> str:
    """The session's apps secret: the same for the proxy and the container, stored
    nowhere (a function of Sandman's key and the session id)."""
    return hmac.new(key, f"apps:{session_id}".encode(), hashlib.sha256).hexdigest()


def load_apps_key(data_dir: Path) -> bytes:
    """Sandman's apps key: 32 random bytes kept (as hex) in ``data_dir/apps_key``,
    mode 0600, made once; every process sharing the data directory reads the same
    (the file appears whole or not at all: written aside, then linked in place)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_bytes(32).hex() + "\n")
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            aside.unlink()
    return bytes.fromhex(path.read_text().strip())


def app_auth_headers(app: App, secret: str) -> dict[str, str]:
    """The request headers that carry the apps secret to ``app``.

    JupyterLab takes it as its token (``Authorization: token``), for HTTP and
    WebSockets alike; VS Code as code-server's session cookie (``vscode_auth_headers``).
    """
    if app == VSCODE:
        return vscode_auth_headers(secret)
    return {"Authorization": f"token {secret}"}


def vscode_auth_headers(secret: str) -> dict[str, str]:
    """code-server's session cookie: the launcher gives code-server the SHA-256 of the
    secret as ``HASHED_PASSWORD``, and code-server takes a cookie equal to it (the
    proxy merges it into the browser's cookies)."""
    return {"Cookie": f"code-server-session={hashlib.sha256(secret.encode()).hexdigest()}"}


CODE_SERVER_COOKIE = "code-server-session"


def code_server_password_hash(secret: str) -> str:
    """What the launcher gives code-server as ``HASHED_PASSWORD``: the secret's SHA-256
    in hex. code-server (4.99) takes a hash without ``$argon`` for its legacy SHA-256
    kind: its login form accepts the secret itself as the password, and it lets a
    request through when its ``code-server-session`` cookie equals this hash exactly
    (a constant-time compare, no argon2 per request)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def upstream_path(app: App, session_id: str, path: str) -> str:
    """The path to ask the app for, given the path on the apps origin (which starts
    with ``base_path``): JupyterLab is told its base path and gets the whole path;
    code-server's URLs are relative and it is served at ``/``, so it gets the rest."""
    prefix = base_path(session_id, app)
    if not path.startswith(prefix):
        raise ValueError(f"{path!r} is not under {prefix!r}")
    return path if app == JUPYTERLAB else "/" + path[len(prefix) :]

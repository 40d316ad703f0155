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
``/s/{session_id}/{path}/`` for each app; the app itself is told that base path,
so its links and WebSockets resolve under it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

SECRET_FILE = "/etc/sandman/ssh/apps_token"
LAUNCHER = "/usr/local/bin/sandman-apps"  # start NAME | status NAME | url


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

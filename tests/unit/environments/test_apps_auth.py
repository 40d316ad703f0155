"""What the apps proxy sends each app (the contract in ``environments.apps``)."""

from __future__ import annotations

import hashlib

import pytest

from sandman.environments.apps import (
    JUPYTERLAB,
    VSCODE,
    app_auth_headers,
    code_server_password_hash,
    upstream_path,
)


def test_jupyterlab_takes_the_secret_as_its_token() -> None:
    assert app_auth_headers(JUPYTERLAB, "s3cret") == {"Authorization": "token s3cret"}


def test_code_server_takes_the_hash_the_launcher_gave_it_as_its_session_cookie() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    assert code_server_password_hash("s3cret") == digest
    assert app_auth_headers(VSCODE, "s3cret") == {"Cookie": f"code-server-session={digest}"}


def test_jupyterlab_gets_the_whole_path_and_code_server_the_rest() -> None:
    assert upstream_path(JUPYTERLAB, "ab", "/s/ab/lab/api/status") == "/s/ab/lab/api/status"
    assert upstream_path(VSCODE, "ab", "/s/ab/code/static/x.js?v=1") == "/static/x.js?v=1"
    assert upstream_path(VSCODE, "ab", "/s/ab/code/") == "/"
    with pytest.raises(ValueError, match="not under"):
        upstream_path(VSCODE, "ab", "/s/other/code/")

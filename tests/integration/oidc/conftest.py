"""One OpenID provider and one Sandman (on the in-memory runtime: single sign-on
needs no containers) for the module; each test logs in with a fresh browser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.runtime import FakeRuntime
from tests.integration.oidc.harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    Browser,
    Provider,
    Served,
    start_provider,
)
from tests.integration.support import free_port
from tests.unit.api.conftest import fake_core

from sandman.api.app import create_app
from sandman.core import Sandman

GROUP_MAP = """\
groups:
  gpu-admins: {role: admin}
  ml-lab: {teams: {ml: member}}
  ml-leads: {teams: {ml: lead}}
"""

# Account id (what is typed at the provider's login form, and the subject) -> claims.
USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "preferred_username": "alice",
        "name": "Alice Admin",
        "email": "alice@example.org",
        "groups": ["gpu-admins", "unrelated"],
    },
    "bob": {"preferred_username": "bob", "groups": ["ml-lab"]},
    "carol": {"preferred_username": "Carol", "groups": ["ml-lab", "ml-leads"]},
    "sub-jdot": {"preferred_username": "j.doe", "groups": []},
    "sub-junder": {"preferred_username": "j_doe", "groups": []},
    "sub-root": {"preferred_username": "root"},
    "dave": {"preferred_username": "dave"},
    "erin": {"preferred_username": "erin", "name": "Erin Early"},
    "frank": {"preferred_username": "frank", "groups": ["ml-lab"]},
    "grace": {"preferred_username": "grace"},
    "henry": {"preferred_username": "henry"},
    "ivan": {"preferred_username": "ivan"},
}


@dataclass
class World:
    provider: Provider
    core: Sandman
    url: str

    def browser(self) -> Browser:
        return Browser(self.provider)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("sso")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = start_provider(root, [f"{url}/auth/callback"], USERS)
    group_map = root / "groups.yaml"
    group_map.write_text(GROUP_MAP)
    core = fake_core(
        root / "data",
        FakeRuntime(),
        public_url=url,
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_group_map=group_map,
    )
    served = Served(create_app(core, run_background=False), port)
    try:
        served.start()
        yield World(provider, core, url)
    finally:
        served.stop()
        core.stop()
        provider.stop()
        print(f"--- the provider's log ---\n{provider.output()}")

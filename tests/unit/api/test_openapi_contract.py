"""The OpenAPI document is a contract a generated client can trust: schemathesis
sends requests built from it (valid and invalid, and chains of calls following
the document's links) and checks every answer against it.

The one intended difference: a deleted session stays readable (with ``ended_at``
and ``end_reason``), so schemathesis' ``use_after_free`` check is off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import use_after_free
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Role, Scope
from sandman.api.app import create_app
from sandman.services.keys import generate_key_pair

# The key format the schema names: real keys, as a client would send (random base64
# is not a key, and the server rightly refuses it).
schemathesis.openapi.format(
    "openssh-public-key",
    st.builds(lambda: generate_key_pair("contract@test").public_openssh),
)


# 503s that mean "not now" (the seed's answer when no GPU is free); anything else
# from 500 up is a failure.
RETRYABLE = {"capacity_exhausted", "engine_unavailable", "busy"}


def no_internal_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """Stricter than schemathesis' own server-error check, which fails every 5xx."""
    if response.status_code < 500:
        return None
    code = response.json().get("code") if response.status_code == 503 else None
    assert code in RETRYABLE, f"{response.status_code} {response.text[:300]}"
    return True


CHECKS = {
    "additional_checks": [no_internal_error],
    "excluded_checks": [use_after_free, not_a_server_error],
}


HEADERS: dict[str, str] = {}


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The API as an admin's personal token sees it (a request may omit ``user_id``,
    which then means the caller; the bootstrap token, which is no user, must name one)."""
    core = fake_core(tmp_path_factory.mktemp("contract"), FakeRuntime(), start_timeout=2)
    core.accounts.directory.create("contract", UserChanges(role=Role.ADMIN))
    _, secret = core.credentials.create_token(
        "contract", "contract", frozenset(Scope), None, "bootstrap-admin"
    )
    HEADERS["Authorization"] = f"Bearer {secret}"
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(core, run_background=False))
    core.stop()


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_every_operation_keeps_its_contract(contract: Any, mode: GenerationMode) -> None:
    """Positive: schema-valid requests are accepted (or refused only as documented).
    Negative: schema-invalid ones are refused with a 4xx, never accepted or a 500."""
    failures: list[str] = []
    for result in contract.get_all_operations():
        operation = result.ok()

        @SETTINGS
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            case.call_and_validate(headers=HEADERS, **CHECKS)

        try:
            check()
        except Unsatisfiable:
            continue  # nothing in this operation can be made invalid (no parameters)
        except (Exception, BaseExceptionGroup) as exc:  # one report names every broken route
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_chains_of_calls_keep_the_contract(contract: Any) -> None:
    machine = contract.as_state_machine()
    machine.run(
        settings=settings(
            max_examples=10,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )

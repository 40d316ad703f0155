"""The ID token is believed only when its signature, issuer, audience, nonce, times
and access-token hash are right; and single sign-on refuses settings that cannot
work when Sandman starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import OctKey, RSAKey
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.accounts.oidc_client import signing_algorithms, verify_id_token
from sandman.errors import ConfigurationError

ISS = "https://idp.example.org"
CLIENT = "sandman"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
JWKS = {"keys": [KEY.as_dict(private=False)]}


def token(key: Any = KEY, alg: str = "RS256", kid: str = "k1", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "sub": "s1", "aud": CLIENT, "exp": now + 300, "iat": now, "nonce": "n1"}
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": kid}, claims, key, algorithms=[alg])


def verify(value: str, nonce: str = "n1", jwks: dict[str, Any] = JWKS) -> dict[str, Any]:
    return verify_id_token(value, jwks, ["RS256"], ISS, CLIENT, nonce, None)


def test_a_good_token_verifies() -> None:
    claims = verify(token(preferred_username="alice"))
    assert claims["sub"] == "s1" and claims["preferred_username"] == "alice"
    assert verify(token(aud=[CLIENT]))["sub"] == "s1"


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://evil.example.org"},
        {"aud": "another-client"},
        {"aud": ["another-client", CLIENT], "azp": "another-client"},
        {"nonce": "replayed"},
        {"nonce": None},
        {"exp": int(time.time()) - 3600},
        {"sub": None},
    ],
)
def test_a_wrong_claim_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(JoseError):
        verify(token(**changes))


def test_a_token_signed_by_another_key_is_refused() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(JoseError):
        verify(token(key=other))


def test_an_unknown_key_id_asks_for_the_keys_again() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    with pytest.raises(InvalidKeyIdError):
        verify(token(key=other, kid="k2"))


def test_a_token_signed_with_the_client_secret_is_refused() -> None:
    secret = OctKey.import_key("a-client-secret-long-enough-for-hs256!!")
    with pytest.raises(JoseError):
        verify(token(key=secret, alg="HS256"))


def test_at_hash_binds_the_access_token() -> None:
    value = token(at_hash="AAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(JoseError):
        verify_id_token(value, JWKS, ["RS256"], ISS, CLIENT, "n1", "the-access-token")


def test_only_asymmetric_algorithms_are_accepted() -> None:
    listed = {"id_token_signing_alg_values_supported": ["none", "HS256", "RS256", "ES256"]}
    assert signing_algorithms(listed) == ["RS256", "ES256"]
    assert signing_algorithms({}) == ["RS256"]
    assert signing_algorithms({"id_token_signing_alg_values_supported": ["none"]}) == ["RS256"]


# -- settings ------------------------------------------------------------------------
SSO = {
    "public_url": "https://gpu.example.org",
    "oidc_issuer": ISS,
    "oidc_client_id": CLIENT,
    "oidc_client_secret": "secret",
}


def test_single_sign_on_is_off_without_an_issuer(tmp_path: Path) -> None:
    core = fake_core(tmp_path, FakeRuntime())
    try:
        assert core.sso is None
    finally:
        core.stop()


def test_single_sign_on_as_configured(tmp_path: Path) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text("groups:\n  admins: {role: admin}\n")
    core = fake_core(tmp_path / "data", FakeRuntime(), **SSO, oidc_group_map=groups)
    try:
        assert core.sso is not None
        assert core.sso.secure_cookies  # https
        assert core.sso.client.redirect_uri == "https://gpu.example.org/auth/callback"
        assert core.sso.group_map.decides_roles
    finally:
        core.stop()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"oidc_client_id": None}, "SANDMAN_OIDC_CLIENT_ID"),
        ({"public_url": None}, "SANDMAN_PUBLIC_URL"),
        ({"public_url": "gpu.example.org"}, "SANDMAN_PUBLIC_URL"),
        ({"oidc_issuer": "idp.example.org"}, "SANDMAN_OIDC_ISSUER"),
        ({"oidc_issuer": None}, "need SANDMAN_OIDC_ISSUER"),
        ({"oidc_group_map": "missing.yaml"}, "cannot read the OIDC group map"),
        ({"oidc_group_map": "bad.yaml"}, "not one of admin"),
        ({"oidc_group_map": "broken.yaml"}, "is not YAML"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    (tmp_path / "bad.yaml").write_text("groups:\n  g: {role: superuser}\n")
    (tmp_path / "broken.yaml").write_text("groups: [unclosed\n")
    values = {**SSO, **changes}
    if isinstance(values.get("oidc_group_map"), str):
        values["oidc_group_map"] = tmp_path / values["oidc_group_map"]
    with pytest.raises(ConfigurationError, match=problem):
        fake_core(tmp_path / "data", FakeRuntime(), **values)

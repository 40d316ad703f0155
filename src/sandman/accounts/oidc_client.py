"""The OpenID provider as Sandman talks to it, through authlib: discovery (cached),
the authorization URL (code flow with PKCE, state and nonce), the code exchange,
the ID token's verification against the provider's keys, and the userinfo claims.

Only this module does network I/O for single sign-on; what the claims mean is
decided in ``sandman.accounts.oidc``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from sandman.accounts.oidc import ProviderError

log = logging.getLogger(__name__)

METADATA_TTL = 3600.0  # discovery is read again after an hour (keys and endpoints rotate)
LEEWAY = 60  # seconds of clock skew allowed on the ID token's times
TIMEOUT = 10.0


@dataclass(frozen=True)
class Identity:
    """A person the provider vouched for: ``(issuer, subject)`` and their claims (the
    verified ID token's, completed by the userinfo endpoint's)."""

    issuer: str
    subject: str
    claims: dict[str, Any]


def verify_id_token(
    id_token: str,
    jwks: dict[str, Any],
    algorithms: list[str],
    issuer: str,
    client_id: str,
    nonce: str,
    access_token: str | None,
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims, once its signature verifies with one of the provider's
    keys and its issuer, audience, nonce, expiry and ``at_hash`` are right (authlib's
    OpenID Connect rules, ``CodeIDToken``). ``InvalidKeyIdError`` when no key fits,
    so the caller can fetch the keys again."""
    token = jwt.decode(
        id_token,
        KeySet.import_key_set(cast(Any, jwks)),
        registry=JWSRegistry(algorithms=algorithms, strict_check_header=False),
    )
    claims = CodeIDToken(
        token.claims,
        token.header,
        {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
        },
        {"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    claims.validate(now=now, leeway=LEEWAY)
    return dict(claims)


def signing_algorithms(metadata: dict[str, Any]) -> list[str]:
    """What the ID token may be signed with: the provider's list, asymmetric only (an
    HMAC would be keyed with the client secret, and ``none`` is no signature)."""
    listed = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    usable = [alg for alg in listed if alg != "none" and not alg.startswith("HS")]
    return usable or ["RS256"]


class OidcClient:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        scopes: str,
        redirect_uri: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.redirect_uri = redirect_uri
        self.clock = clock
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def _client(self) -> Any:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
            scope=self.scopes,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=TIMEOUT,
        )

    async def _get_json(self, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
                response = await http.get(url, **kwargs)
        except httpx2.HTTPError as exc:
            raise ProviderError(f"the identity provider's {what} ({url}) failed: {exc}") from None
        if response.status_code != 200:
            raise ProviderError(
                f"the identity provider's {what} ({url}) answered {response.status_code}"
            )
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"the identity provider's {what} ({url}) is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderError(f"the identity provider's {what} ({url}) is not an object")
        return body

    async def metadata(self) -> dict[str, Any]:
        """The discovery document, read at most once an hour."""
        async with self._lock:
            if self._metadata is None or self.clock() - self._loaded_at > METADATA_TTL:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                found = await self._get_json(url, "discovery document")
                if found.get("issuer") != self.issuer:
                    raise ProviderError(
                        f"the discovery document at {url} names issuer {found.get('issuer')!r},"
                        f" not {self.issuer!r}: set SANDMAN_OIDC_ISSUER to the provider's issuer"
                    )
                for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(found.get(needed), str):
                        raise ProviderError(f"the discovery document at {url} has no {needed}")
                self._metadata, self._jwks, self._loaded_at = found, None, self.clock()
            return self._metadata

    async def _keys(self, again: bool = False) -> dict[str, Any]:
        metadata = await self.metadata()
        if self._jwks is None or again:
            self._jwks = await self._get_json(metadata["jwks_uri"], "key set")
        return self._jwks

    async def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        metadata = await self.metadata()
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return cast(str, url)

    async def identity(self, code: str, verifier: str, nonce: str) -> Identity:
        """Exchange the code, verify the ID token, and read the userinfo claims."""
        metadata = await self.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=verifier,
                )
        except OAuthError as exc:
            raise ProviderError(f"the identity provider refused the code: {exc}") from None
        except httpx2.HTTPError as exc:
            raise ProviderError(f"the identity provider's token endpoint failed: {exc}") from None
        id_token, access_token = token.get("id_token"), token.get("access_token")
        if not isinstance(id_token, str):
            raise ProviderError("the identity provider sent no ID token (is 'openid' a scope?)")
        claims = await self._verified(metadata, id_token, nonce, access_token)
        if access_token and isinstance(metadata.get("userinfo_endpoint"), str):
            info = await self._get_json(
                metadata["userinfo_endpoint"],
                "userinfo endpoint",
                headers={"Authorization": f"Bearer {access_token}"},
            )
            if info.get("sub") != claims["sub"]:
                raise ProviderError("the userinfo endpoint answered for another subject")
            claims = {**info, **claims}
        return Identity(self.issuer, str(claims["sub"]), claims)

    async def _verified(
        self, metadata: dict[str, Any], id_token: str, nonce: str, access_token: str | None
    ) -> dict[str, Any]:
        algorithms = signing_algorithms(metadata)
        try:
            try:
                keys = await self._keys()
                return verify_id_token(
                    id_token, keys, algorithms, self.issuer, self.client_id, nonce, access_token
                )
            except InvalidKeyIdError:  # the provider rotated its keys
                keys = await self._keys(again=True)
                return verify_id_token(
                    id_token, keys, algorithms, self.issuer, self.client_id, nonce, access_token
                )
        except JoseError as exc:
            log.warning("an ID token from %s did not verify: %r", self.issuer, exc)
            raise ProviderError(f"the ID token does not verify: {exc}") from None

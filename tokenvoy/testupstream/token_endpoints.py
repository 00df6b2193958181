"""Fake OAuth2 token endpoints for the cloud credentials: Google's JWT-bearer grant and Microsoft Entra ID.

Endpoints (served by the fake provider, see ``server.py``)
    ``POST /__testupstream/gcp/token[?expires_in=N][&error=invalid_grant]``
        Google's token endpoint for a service-account key whose ``token_uri`` points here: takes
        ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with a JWT ``assertion`` (RS256, ``iss`` the
        service account, ``aud`` Google's token URL or this one, a ``scope``), answers
        ``{"access_token","expires_in","token_type"}``.
        The signature is verified when the service account's public key is registered (``gcp_public_keys``).
        ``error=`` forces that OAuth error (400), to test a gateway whose credentials are refused.
    ``GET /{tenant}/v2.0/.well-known/openid-configuration``, ``POST /{tenant}/oauth2/v2.0/token``
        Microsoft Entra ID's tenant discovery and client-credentials grant (``client_id``, ``client_secret``,
        ``scope``), as MSAL calls them under an authority host (``AZURE_AUTHORITY_HOST=https://…``; Entra is
        HTTPS only, so serve it with TLS). The secret is checked when ``azure_clients`` names the client.
    ``GET /__testupstream/tokens``, ``DELETE /__testupstream/tokens``
        the grants issued so far (``kind``, ``client``, ``scope``, ``access_token``, ``expires_in``; never a
        secret), oldest first, so a test can prove a token was fetched once and refreshed; DELETE clears them.

Access tokens are sequential (``ya29.fake-gcp-1``, ``fake-azure-1``…) so a test can tell a refreshed one apart.
"""

from __future__ import annotations

import base64
import itertools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from tokenvoy.testupstream.http import Request, Response

GCP_TOKEN_PATH = "/__testupstream/gcp/token"
TOKENS_PATH = "/__testupstream/tokens"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
AZURE_OPENID_SUFFIX = "/v2.0/.well-known/openid-configuration"
AZURE_TOKEN_SUFFIX = "/oauth2/v2.0/token"
AZURE_SUFFIXES = (AZURE_OPENID_SUFFIX, AZURE_TOKEN_SUFFIX)
DEFAULT_EXPIRES_IN = 3599


def _json(status: int, body: Any) -> Response:
    return Response(status, orjson.dumps(body), "application/json")


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _length_required() -> Response:
    """A token request whose body came chunked: refused like every fake provider refuses one."""
    return _oauth_error(411, "invalid_request", "Length Required: send the body with content-length")


def _form(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class TokenEndpoints:
    """State of the fake token endpoints: registered keys/clients and the grants issued."""

    gcp_public_keys: dict[str, str] = field(default_factory=dict)  # client_email → PEM public key
    azure_clients: dict[str, str] = field(default_factory=dict)  # client_id → client secret
    azure_expires_in: int = DEFAULT_EXPIRES_IN
    grants: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def handles_admin(self, path: str) -> bool:
        return path in (GCP_TOKEN_PATH, TOKENS_PATH)

    def admin(self, request: Request) -> Response:
        if request.path == TOKENS_PATH:
            if request.method == "GET":
                return _json(200, {"grants": self.grants})
            if request.method == "DELETE":
                self.grants.clear()
                return Response(204, b"", None)
        elif request.path == GCP_TOKEN_PATH and request.method == "POST":
            return self.gcp_token(request)
        return _oauth_error(405, "invalid_request", f"{request.method} {request.path} is not supported")

    # -- Google ---------------------------------------------------------------------------------------

    def gcp_token(self, request: Request) -> Response:
        if request.chunked:
            return _length_required()
        query = {k: v[0] for k, v in parse_qs(request.query).items()}
        form = _form(request)
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        assertion = form.get("assertion", "")
        claims = self._gcp_claims(assertion)
        if isinstance(claims, Response):
            return claims
        audience = str(claims.get("aud", "")).split("?")[0]
        if audience != GOOGLE_TOKEN_URI and not audience.endswith(request.path):  # google-auth sends Google's
            return _oauth_error(
                400, "invalid_grant", f"Invalid JWT: audience {claims.get('aud')!r} is not this endpoint"
            )
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            return _oauth_error(400, "invalid_scope", f"Invalid scope {claims.get('scope')!r}")
        now = time.time()
        if not float(claims.get("iat", 0)) - 300 <= now <= float(claims.get("exp", 0)) + 300:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token")
        if "error" in query:
            return _oauth_error(400, query["error"], "Forced by the test (error= in the token URL)")
        expires_in = int(query.get("expires_in", DEFAULT_EXPIRES_IN))
        token = f"ya29.fake-gcp-{next(self._ids)}"
        self.grants.append(
            {
                "kind": "gcp",
                "client": claims.get("iss"),
                "scope": claims.get("scope"),
                "access_token": token,
                "expires_in": expires_in,
                "at": now,
            }
        )
        return _json(200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})

    def _gcp_claims(self, assertion: str) -> dict[str, Any] | Response:
        parts = assertion.split(".")
        if len(parts) != 3:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: not three segments")
        try:
            header = orjson.loads(_b64url(parts[0]))
            claims = orjson.loads(_b64url(parts[1]))
        except (ValueError, orjson.JSONDecodeError):
            return _oauth_error(400, "invalid_grant", "Invalid JWT: undecodable")
        if header.get("alg") != "RS256" or not isinstance(claims, dict):
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: alg {header.get('alg')!r}")
        public_key = self.gcp_public_keys.get(str(claims.get("iss")))
        if public_key is not None and not _rs256_valid(parts, public_key):
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if self.gcp_public_keys and public_key is None:
            return _oauth_error(400, "invalid_grant", f"Invalid grant: account not found ({claims.get('iss')})")
        return claims

    # -- Microsoft Entra ID ---------------------------------------------------------------------------

    def azure(self, request: Request) -> Response:
        path = request.path
        if path.endswith(AZURE_OPENID_SUFFIX) and request.method == "GET":
            tenant = path[: -len(AZURE_OPENID_SUFFIX)].rsplit("/", 1)[-1]
            base = f"https://{request.headers.get('host', 'localhost')}{path[: -len(AZURE_OPENID_SUFFIX)]}"
            return _json(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "tenant_region_scope": "NA",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                    "tenant": tenant,
                },
            )
        if path.endswith(AZURE_TOKEN_SUFFIX) and request.method == "POST":
            return self._azure_token(request, path[: -len(AZURE_TOKEN_SUFFIX)].rsplit("/", 1)[-1])
        return _oauth_error(404, "invalid_request", f"AADSTS90002: {request.method} {path} not found")

    def _azure_token(self, request: Request, tenant: str) -> Response:
        if request.chunked:
            return _length_required()
        form = _form(request)
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "AADSTS70003: only client_credentials is faked")
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_id or not secret:
            return _oauth_error(400, "invalid_request", "AADSTS900144: client_id and client_secret are required")
        known = self.azure_clients.get(client_id)
        if (known is not None and secret != known) or (self.azure_clients and known is None):
            return _oauth_error(
                401, "invalid_client", f"AADSTS7000215: Invalid client secret provided for app '{client_id}'."
            )
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return _oauth_error(400, "invalid_scope", f"AADSTS1002012: scope {scope!r} must end with /.default")
        token = f"fake-azure-{next(self._ids)}"
        self.grants.append(
            {
                "kind": "azure",
                "client": client_id,
                "tenant": tenant,
                "scope": scope,
                "access_token": token,
                "expires_in": self.azure_expires_in,
                "at": time.time(),
            }
        )
        body = {"token_type": "Bearer", "expires_in": self.azure_expires_in, "ext_expires_in": self.azure_expires_in}
        return _json(200, {**body, "access_token": token})


def _rs256_valid(parts: list[str], public_key_pem: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(_b64url(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True

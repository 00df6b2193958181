"""``GCPCredentials``: ``Authorization: Bearer`` with an OAuth2 access token for a service account.

google-auth signs a JWT-bearer grant with the key in the service-account JSON and posts it to the key's
``token_uri`` (Google's ``https://oauth2.googleapis.com/token``; tests point it at a fake). Without a
credentials file, Application Default Credentials are used (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the
metadata server). The token is fetched and refreshed by a ``TokenRefresher`` thread; requests only read it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tokenvoy.config.model import GCPCredentials
from tokenvoy.extproc.credentials.base import TokenRefresher

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_TIMEOUT_S = 10.0
REQUIRED_KEY_FIELDS = ("type", "client_email", "private_key", "token_uri")


class GCPConfigError(ValueError):
    """The service-account key cannot be used (the message names the Secret, never its content)."""


def parse_service_account(text: str, origin: str) -> dict[str, Any]:
    try:
        info = json.loads(text)
    except ValueError:
        raise GCPConfigError(f"{origin} is not JSON (expected a service-account key file)") from None
    if not isinstance(info, dict):
        raise GCPConfigError(f"{origin} is not a JSON object (expected a service-account key file)")
    missing = [name for name in REQUIRED_KEY_FIELDS if not info.get(name)]
    if missing:
        raise GCPConfigError(f"{origin} is not a service-account key: missing {', '.join(missing)}")
    if info["type"] != "service_account":
        raise GCPConfigError(f"{origin}: type is {info['type']!r}, expected 'service_account'")
    return info


def _expiry_seconds(expiry: datetime | None) -> float:
    """google-auth's expiry is a naive UTC datetime (None: no expiry given; assume Google's 1 hour)."""
    if expiry is None:
        return datetime.now(UTC).timestamp() + 3600.0
    return expiry.replace(tzinfo=UTC).timestamp()


def build(policy: str, spec: GCPCredentials) -> TokenRefresher:
    """Parse and check the key now (startup); the first token is fetched once the refresher starts."""
    import urllib3
    from google.auth.transport.urllib3 import Request

    http = Request(urllib3.PoolManager(timeout=urllib3.Timeout(total=TOKEN_TIMEOUT_S), retries=False))
    secrets: list[str] = []
    if spec.service_account is not None:
        from google.oauth2 import service_account

        info = parse_service_account(spec.service_account.read(), spec.service_account.origin)
        secrets = [info["private_key"], info.get("private_key_id", "")]
        try:
            credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, TypeError) as exc:
            raise GCPConfigError(
                f"{spec.service_account.origin}: the private key cannot be loaded ({type(exc).__name__})"
            ) from None

        def fetch() -> tuple[str, float]:
            credentials.refresh(http)
            return credentials.token, _expiry_seconds(credentials.expiry)

    else:
        default: list[Any] = []

        def fetch() -> tuple[str, float]:
            import google.auth

            if not default:
                default.append(google.auth.default(scopes=[SCOPE])[0])
            credentials = default[0]
            credentials.refresh(http)
            return credentials.token, _expiry_seconds(credentials.expiry)

    return TokenRefresher(policy, fetch, secrets=secrets)

"""``AzureCredentials``: ``Authorization: Bearer`` with a Microsoft Entra ID token for a client secret.

azure-identity's ``ClientSecretCredential`` gets the token (client-credentials grant, scope
``https://cognitiveservices.azure.com/.default``) from the authority host: Azure public cloud, or the
standard ``AZURE_AUTHORITY_HOST`` variable for sovereign clouds and tests. The authority must be https
(azure-identity refuses anything else); a private CA is trusted through ``REQUESTS_CA_BUNDLE``. Instance
discovery (a call to login.microsoftonline.com to validate the authority) is off, so only the configured
authority is contacted. A ``TokenRefresher`` thread fetches and refreshes the token; requests only read it.
"""

from __future__ import annotations

import logging

from tokenvoy.config.model import AzureCredentials
from tokenvoy.extproc.credentials.base import TokenRefresher

SCOPE = "https://cognitiveservices.azure.com/.default"
TOKEN_TIMEOUT_S = 10


class AzureConfigError(ValueError):
    """The Azure credential cannot be built (the message names the policy, never the secret)."""


def build(policy: str, spec: AzureCredentials) -> TokenRefresher:
    from azure.identity import ClientSecretCredential

    # azure-core logs every HTTP request at INFO and azure-identity each failure at WARNING: the refresher
    # logs the failure once, naming the policy.
    logging.getLogger("azure").setLevel(logging.ERROR)
    secret = spec.client_secret.read()  # ValueError naming the Secret when unreadable
    if not secret:
        raise AzureConfigError(f"{spec.client_secret.origin} is empty")
    try:
        credential = ClientSecretCredential(
            spec.tenant_id,
            spec.client_id,
            secret,
            disable_instance_discovery=True,
            connection_timeout=TOKEN_TIMEOUT_S,
            read_timeout=TOKEN_TIMEOUT_S,
            retry_total=1,
        )
    except ValueError as exc:  # an invalid tenant id or authority host; the text holds neither secret
        raise AzureConfigError(str(exc).replace(secret, "***")) from None

    def fetch() -> tuple[str, float]:
        token = credential.get_token(SCOPE)
        return token.token, float(token.expires_on)

    return TokenRefresher(policy, fetch, secrets=[secret])

"""Cloud credentials of ``BackendSecurityPolicy``: AWS SigV4, GCP service-account and Azure Entra tokens.

One module per kind, each behind the ``Signer`` interface (``base.py``), built once per policy at config
load. API keys stay static headers (``tokenvoy.extproc.runtime``); these need per-request work (SigV4) or
a token kept fresh in the background (GCP, Azure).
"""

from __future__ import annotations

from tokenvoy.apis.backend_schemas import CLOUD_POLICY_TYPES
from tokenvoy.config.model import SecurityPolicy
from tokenvoy.extproc.credentials.base import CredentialUnavailable, Signer, TokenRefresher

__all__ = ["CLOUD_POLICY_TYPES", "CredentialUnavailable", "Signer", "TokenRefresher", "build_signer"]


def build_signer(policy: SecurityPolicy) -> Signer | None:
    """The signer for a cloud policy (None for API keys). Raises ValueError naming the policy and the
    Secret when a credential cannot be loaded; nothing is fetched over the network here."""
    try:
        if policy.aws is not None:
            from tokenvoy.extproc.credentials import aws

            return aws.build(policy.ref, policy.aws)
        if policy.gcp is not None:
            from tokenvoy.extproc.credentials import gcp

            return gcp.build(policy.ref, policy.gcp)
        if policy.azure is not None:
            from tokenvoy.extproc.credentials import azure

            return azure.build(policy.ref, policy.azure)
    except ValueError as exc:
        raise ValueError(f"{policy.ref}: {exc}") from None
    return None

"""``BackendSecurityPolicy`` (Envoy AI Gateway): the credential tokenvoy signs or authenticates each
``AIServiceBackend``'s requests with (API keys, AWS, GCP, Azure)."""

from __future__ import annotations

from tokenvoy.apis.backend_schemas import API_KEY_KINDS, CREDENTIAL_KINDS
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.inert import SCOPE_ONLY
from tokenvoy.config.loader.secrets import secret_ref
from tokenvoy.config.model import (
    AWSCredentials,
    AzureCredentials,
    GCPCredentials,
    SecurityPolicy,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    f"spec.{field}.{ref}.namespace": SCOPE_ONLY
    for field, ref in (
        ("apiKey", "secretRef"),
        ("azureAPIKey", "secretRef"),
        ("anthropicAPIKey", "secretRef"),
        ("azureCredentials", "clientSecretRef"),
        ("awsCredentials", "credentialsFile.secretRef"),
        ("gcpCredentials", "credentialsFile.secretRef"),
    )
}

_API_KEY_FIELDS = {kind.policy_type: kind.spec_field for kind in API_KEY_KINDS}
_POLICY_TYPE_FIELDS = {kind.policy_type: kind.spec_field for kind in CREDENTIAL_KINDS.values()}
_SECURITY_POLICY_FIELDS = {"type", "targetRefs", "credentialOverride", *_POLICY_TYPE_FIELDS.values()}
_AWS_FIELDS = {"region", "credentialsFile", "oidcExchangeToken"}
_AWS_FILE_FIELDS = {"secretRef", "profile"}
_GCP_FIELDS = {"projectName", "region", "credentialsFile", "workloadIdentityFederationConfig"}
_AZURE_FIELDS = {"clientID", "tenantID", "clientSecretRef", "oidcExchangeToken"}

# The Secret keys Envoy AI Gateway reads for each credential (tokenvoy reads the same ones).
AWS_CREDENTIALS_KEY = "credentials"
GCP_SERVICE_ACCOUNT_KEY = "service_account.json"
AZURE_CLIENT_SECRET_KEY = "client-secret"
_OIDC_UNSUPPORTED = "OIDC token exchange is not supported by a standalone gateway; use a credentials Secret"


def read_security_policies(
    items: dict[str, Resource], secrets: dict[str, Resource], problems: Problems
) -> dict[str, SecurityPolicy]:
    """Map each targeted AIServiceBackend name to its policy."""
    by_backend: dict[str, SecurityPolicy] = {}
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        if not spec.fields(_SECURITY_POLICY_FIELDS):
            continue
        spec.unsupported(
            {"credentialOverride": "per-request credentials; the gateway signs with the policy's own credential"}
        )
        policy_type = spec["type"].string()
        if policy_type is None:
            continue
        field_name = _POLICY_TYPE_FIELDS.get(policy_type)
        if field_name is None:
            spec["type"].report(f"{policy_type!r} is not supported (supported: {', '.join(_POLICY_TYPE_FIELDS)})")
            continue
        for other in _POLICY_TYPE_FIELDS.values():
            if other != field_name and spec.get(other) is not None:
                spec[other].report(f"must not be set when spec.type is {policy_type}")
        if not spec[field_name].present:
            spec[field_name].report(f"required when spec.type is {policy_type}")
            continue
        policy = _policy(resource.name, policy_type, spec[field_name], secrets)
        if policy is None:
            continue
        for target in spec["targetRefs"].items():
            target.mapping()
            target.reference_kind("AIServiceBackend", "aigateway.envoyproxy.io")
            target_name = target["name"].string()
            if target_name:
                by_backend[target_name] = policy
    return by_backend


def _policy(name: str, policy_type: str, spec: Cursor, secrets: dict[str, Resource]) -> SecurityPolicy | None:
    """The credential of ``spec.<field of the type>``."""
    if policy_type in _API_KEY_FIELDS:
        spec.mapping()
        return SecurityPolicy(name, policy_type, api_key=secret_ref(spec["secretRef"], secrets, "apiKey"))
    if policy_type == "AWSCredentials":
        return _aws(name, spec, secrets)
    if policy_type == "GCPCredentials":
        return _gcp(name, spec, secrets)
    return _azure(name, spec, secrets)


def _aws(name: str, spec: Cursor, secrets: dict[str, Resource]) -> SecurityPolicy | None:
    if not spec.fields(_AWS_FIELDS):
        return None
    spec.unsupported({"oidcExchangeToken": _OIDC_UNSUPPORTED})
    region = spec["region"].string()
    credentials_file, profile = None, "default"
    file_spec = spec["credentialsFile"]
    if file_spec.present and file_spec.fields(_AWS_FILE_FIELDS):
        credentials_file = secret_ref(file_spec["secretRef"], secrets, AWS_CREDENTIALS_KEY)
        profile = file_spec["profile"].string(required=False) or profile
    if region is None:
        return None
    return SecurityPolicy(name, "AWSCredentials", aws=AWSCredentials(region, credentials_file, profile))


def _gcp(name: str, spec: Cursor, secrets: dict[str, Resource]) -> SecurityPolicy | None:
    if not spec.fields(_GCP_FIELDS):
        return None
    why = "Workload Identity Federation is not supported by a standalone gateway; use credentialsFile"
    spec.unsupported({"workloadIdentityFederationConfig": why})
    project = spec["projectName"].string()
    region = spec["region"].string()
    service_account = None
    file_spec = spec["credentialsFile"]
    if file_spec.present and file_spec.fields({"secretRef"}):
        service_account = secret_ref(file_spec["secretRef"], secrets, GCP_SERVICE_ACCOUNT_KEY)
    for key, value in (("projectName", project), ("region", region)):
        if value is not None and "/" in value:
            spec[key].report(f"must not contain '/', got {value!r}")
    if project is None or region is None:
        return None
    return SecurityPolicy(name, "GCPCredentials", gcp=GCPCredentials(project, region, service_account))


def _azure(name: str, spec: Cursor, secrets: dict[str, Resource]) -> SecurityPolicy | None:
    if not spec.fields(_AZURE_FIELDS):
        return None
    spec.unsupported({"oidcExchangeToken": _OIDC_UNSUPPORTED})
    client_id = spec["clientID"].string()
    tenant_id = spec["tenantID"].string()
    client_secret = None
    if not spec["clientSecretRef"].present and not spec["oidcExchangeToken"].present:
        spec["clientSecretRef"].report("required")
    elif spec["clientSecretRef"].present:
        client_secret = secret_ref(spec["clientSecretRef"], secrets, AZURE_CLIENT_SECRET_KEY)
    if client_id is None or tenant_id is None or client_secret is None:
        return None
    return SecurityPolicy(name, "AzureCredentials", azure=AzureCredentials(client_id, tenant_id, client_secret))

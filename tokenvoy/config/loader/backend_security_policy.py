"""``BackendSecurityPolicy`` (Envoy AI Gateway): the credential tokenvoy signs or authenticates each
``AIServiceBackend``'s requests with (API keys, AWS, GCP, Azure)."""

from __future__ import annotations

from tokenvoy.config.loader.cursor import (
    Problems,
    Resource,
    _check_fields,
    _list,
    _mapping,
    _reference_kind,
    _string,
    _unsupported,
)
from tokenvoy.config.loader.secrets import _secret_ref
from tokenvoy.config.model import (
    AWSCredentials,
    AzureCredentials,
    GCPCredentials,
    SecurityPolicy,
)

_API_KEY_FIELDS = {"APIKey": "apiKey", "AzureAPIKey": "azureAPIKey", "AnthropicAPIKey": "anthropicAPIKey"}
_CLOUD_FIELDS = {
    "AWSCredentials": "awsCredentials",
    "GCPCredentials": "gcpCredentials",
    "AzureCredentials": "azureCredentials",
}
_POLICY_TYPE_FIELDS = {**_API_KEY_FIELDS, **_CLOUD_FIELDS}
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


def _security_policies(
    items: dict[str, Resource], secrets: dict[str, Resource], problems: Problems
) -> dict[str, SecurityPolicy]:
    """Map each targeted AIServiceBackend name to its policy."""
    by_backend: dict[str, SecurityPolicy] = {}
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _SECURITY_POLICY_FIELDS, problems):
            continue
        _unsupported(
            resource,
            spec,
            "spec",
            {"credentialOverride": "per-request credentials; the gateway signs with the policy's own credential"},
            problems,
        )
        policy_type = _string(resource, spec.get("type"), "spec.type", problems)
        if policy_type is None:
            continue
        field_name = _POLICY_TYPE_FIELDS.get(policy_type)
        if field_name is None:
            problems.add(
                resource, "spec.type", f"{policy_type!r} is not supported (supported: {', '.join(_POLICY_TYPE_FIELDS)})"
            )
            continue
        for other in _POLICY_TYPE_FIELDS.values():
            if other != field_name and spec.get(other) is not None:
                problems.add(resource, f"spec.{other}", f"must not be set when spec.type is {policy_type}")
        if spec.get(field_name) is None:
            problems.add(resource, f"spec.{field_name}", f"required when spec.type is {policy_type}")
            continue
        policy = _policy(resource, policy_type, field_name, secrets, problems)
        if policy is None:
            continue
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems)):
            target = _mapping(resource, target, f"spec.targetRefs[{index}]", problems)
            _reference_kind(
                resource, target, f"spec.targetRefs[{index}]", "AIServiceBackend", "aigateway.envoyproxy.io", problems
            )
            target_name = _string(resource, target.get("name"), f"spec.targetRefs[{index}].name", problems)
            if target_name:
                by_backend[target_name] = policy
    return by_backend


def _policy(
    resource: Resource, policy_type: str, field_name: str, secrets: dict[str, Resource], problems: Problems
) -> SecurityPolicy | None:
    path = f"spec.{field_name}"
    spec = resource.spec[field_name]
    if policy_type in _API_KEY_FIELDS:
        key_spec = _mapping(resource, spec, path, problems)
        api_key = _secret_ref(resource, key_spec.get("secretRef"), f"{path}.secretRef", secrets, "apiKey", problems)
        return SecurityPolicy(resource.name, policy_type, api_key=api_key)
    if policy_type == "AWSCredentials":
        if not _check_fields(resource, spec, path, _AWS_FIELDS, problems):
            return None
        _unsupported(resource, spec, path, {"oidcExchangeToken": _OIDC_UNSUPPORTED}, problems)
        region = _string(resource, spec.get("region"), f"{path}.region", problems)
        credentials_file, profile = None, "default"
        file_spec = spec.get("credentialsFile")
        if file_spec is not None and _check_fields(
            resource, file_spec, f"{path}.credentialsFile", _AWS_FILE_FIELDS, problems
        ):
            file_path = f"{path}.credentialsFile"
            credentials_file = _secret_ref(
                resource, file_spec.get("secretRef"), f"{file_path}.secretRef", secrets, AWS_CREDENTIALS_KEY, problems
            )
            profile = _string(resource, file_spec.get("profile"), f"{file_path}.profile", problems, False) or profile
        if region is None:
            return None
        return SecurityPolicy(resource.name, policy_type, aws=AWSCredentials(region, credentials_file, profile))
    if policy_type == "GCPCredentials":
        if not _check_fields(resource, spec, path, _GCP_FIELDS, problems):
            return None
        why = "Workload Identity Federation is not supported by a standalone gateway; use credentialsFile"
        _unsupported(resource, spec, path, {"workloadIdentityFederationConfig": why}, problems)
        project = _string(resource, spec.get("projectName"), f"{path}.projectName", problems)
        region = _string(resource, spec.get("region"), f"{path}.region", problems)
        service_account = None
        file_spec = spec.get("credentialsFile")
        if file_spec is not None and _check_fields(
            resource, file_spec, f"{path}.credentialsFile", {"secretRef"}, problems
        ):
            service_account = _secret_ref(
                resource,
                file_spec.get("secretRef"),
                f"{path}.credentialsFile.secretRef",
                secrets,
                GCP_SERVICE_ACCOUNT_KEY,
                problems,
            )
        for name, value in (("projectName", project), ("region", region)):
            if value is not None and "/" in value:
                problems.add(resource, f"{path}.{name}", f"must not contain '/', got {value!r}")
        if project is None or region is None:
            return None
        return SecurityPolicy(resource.name, policy_type, gcp=GCPCredentials(project, region, service_account))
    if not _check_fields(resource, spec, path, _AZURE_FIELDS, problems):
        return None
    _unsupported(resource, spec, path, {"oidcExchangeToken": _OIDC_UNSUPPORTED}, problems)
    client_id = _string(resource, spec.get("clientID"), f"{path}.clientID", problems)
    tenant_id = _string(resource, spec.get("tenantID"), f"{path}.tenantID", problems)
    client_secret = None
    if spec.get("clientSecretRef") is None and spec.get("oidcExchangeToken") is None:
        problems.add(resource, f"{path}.clientSecretRef", "required")
    elif spec.get("clientSecretRef") is not None:
        client_secret = _secret_ref(
            resource, spec["clientSecretRef"], f"{path}.clientSecretRef", secrets, AZURE_CLIENT_SECRET_KEY, problems
        )
    if client_id is None or tenant_id is None or client_secret is None:
        return None
    return SecurityPolicy(resource.name, policy_type, azure=AzureCredentials(client_id, tenant_id, client_secret))

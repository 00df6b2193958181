"""``AIServiceBackend`` (Envoy AI Gateway): a provider's API schema, its Backend, its credential and its
header/body mutations, resolved into a ``Backend``."""

from __future__ import annotations

from tokenvoy.config.loader.backend import FAKE_PROVIDER_ANNOTATION, _envoy_endpoint
from tokenvoy.config.loader.cursor import (
    _check_fields,
    _mapping,
    _Problems,
    _reference_kind,
    _Resource,
    _string,
    _unsupported,
)
from tokenvoy.config.loader.mutations import _body_mutation, _header_mutation
from tokenvoy.config.model import (
    Backend,
    SecurityPolicy,
    TLSValidation,
)

RESPONSES_API_ANNOTATION = "tokenvoy.io/responses-api"  # on an AIServiceBackend: native (default) | chat-completions


# Each schema's default ``spec.schema.prefix``: what goes before the API path the translator writes
# (``/v1`` + ``/chat/completions``; Bedrock's ``/model/{id}/converse`` and Azure's ``/openai/deployments/…``
# have none; the GCP schemas get ``/v1/projects/{project}/locations/{region}`` from their GCPCredentials).
DEFAULT_PREFIXES = {
    "OpenAI": "/v1",
    "Anthropic": "/v1",
    "AzureOpenAI": "",
    "AWSBedrock": "",
    "AWSAnthropic": "",
    "GCPVertexAI": "",
    "GCPAnthropic": "",
}
SUPPORTED_SCHEMAS = set(DEFAULT_PREFIXES)
GCP_SCHEMAS = frozenset({"GCPVertexAI", "GCPAnthropic"})  # their prefix comes from GCPCredentials


def _backends(
    items: dict[str, _Resource],
    envoy_backends: dict[str, _Resource],
    policies: dict[str, SecurityPolicy],
    problems: _Problems,
    tls: dict[str, TLSValidation] | None = None,
) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(
            resource, spec, "spec", {"schema", "backendRef", "headerMutation", "bodyMutation"}, problems
        ):
            continue
        schema = _mapping(resource, spec.get("schema"), "spec.schema", problems)
        schema_name = _string(resource, schema.get("name"), "spec.schema.name", problems)
        if schema_name is not None and schema_name not in SUPPORTED_SCHEMAS:
            problems.add(resource, "spec.schema.name", f"{schema_name!r} is not supported yet")
        backend_ref = _mapping(resource, spec.get("backendRef"), "spec.backendRef", problems)
        _reference_kind(resource, backend_ref, "spec.backendRef", "Backend", "gateway.envoyproxy.io", problems)
        _unsupported(
            resource, backend_ref, "spec.backendRef", {"port": "the port is the Backend's endpoint's"}, problems
        )
        ref_name = _string(resource, backend_ref.get("name"), "spec.backendRef.name", problems)
        endpoint = None
        fake = False
        if ref_name is not None:
            envoy_backend = envoy_backends.get(ref_name)
            if envoy_backend is None:
                problems.add(resource, "spec.backendRef.name", f"Backend/{ref_name} does not exist")
            else:
                endpoint = _envoy_endpoint(envoy_backend, (tls or {}).get(ref_name), problems)
                annotations = envoy_backend.metadata.get("annotations") or {}
                fake = (
                    isinstance(annotations, dict)
                    and str(annotations.get(FAKE_PROVIDER_ANNOTATION, "")).lower() == "true"
                )
        if schema_name is None or endpoint is None:
            continue
        prefix = schema.get("prefix") or DEFAULT_PREFIXES.get(schema_name, "")
        policy = policies.get(resource.name)
        if not schema.get("prefix") and schema_name in GCP_SCHEMAS and policy is not None and policy.gcp is not None:
            prefix = f"/v1/projects/{policy.gcp.project}/locations/{policy.gcp.region}"
        via_chat = _responses_via_chat(resource, schema_name, problems)
        backends[resource.name] = Backend(
            name=resource.name,
            schema=schema_name,
            schema_version=schema.get("version"),
            path_prefix="/" + str(prefix).strip("/") if str(prefix).strip("/") else "",
            endpoint=endpoint,
            security=policy,
            fake_provider=fake,
            header_mutation=_header_mutation(resource, spec.get("headerMutation"), "spec.headerMutation", problems),
            body_mutation=_body_mutation(resource, spec.get("bodyMutation"), "spec.bodyMutation", problems),
            responses_via_chat=via_chat,
        )
    return backends


_RESPONSES_API_MODES = ("native", "chat-completions")


def _responses_via_chat(resource: _Resource, schema: str, problems: _Problems) -> bool:
    """The AIServiceBackend's ``tokenvoy.io/responses-api`` annotation: whether ``/v1/responses`` requests reach
    it translated to Chat Completions (for an OpenAI-compatible server that lacks the Responses API)."""
    annotations = resource.metadata.get("annotations") or {}
    value = annotations.get(RESPONSES_API_ANNOTATION) if isinstance(annotations, dict) else None
    if value is None:
        return False
    mode = str(value).lower()
    field = f"metadata.annotations.{RESPONSES_API_ANNOTATION}"
    if mode not in _RESPONSES_API_MODES:
        problems.add(resource, field, f"must be native or chat-completions, got {value!r}")
        return False
    if schema not in ("OpenAI", "AzureOpenAI"):
        problems.add(resource, field, f"only OpenAI and AzureOpenAI backends choose; {schema} is always translated")
        return False
    return mode == "chat-completions"

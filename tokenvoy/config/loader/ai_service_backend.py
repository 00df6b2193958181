"""``AIServiceBackend`` (Envoy AI Gateway): a provider's API schema, its Backend, its credential and its
header/body mutations, resolved into a ``Backend``."""

from __future__ import annotations

from tokenvoy.apis.backend_schemas import BACKEND_SCHEMAS
from tokenvoy.config.loader.backend import FAKE_PROVIDER_ANNOTATION, envoy_endpoint
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.inert import SCOPE_ONLY
from tokenvoy.config.loader.mutations import body_mutation, header_mutation
from tokenvoy.config.model import (
    Backend,
    SecurityPolicy,
    TLSValidation,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {"spec.backendRef.namespace": SCOPE_ONLY}

RESPONSES_API_ANNOTATION = "tokenvoy.io/responses-api"  # on an AIServiceBackend: native (default) | chat-completions


# Each schema's default ``spec.schema.prefix``: what goes before the API path the translator writes
# (``/v1`` + ``/chat/completions``; Bedrock's ``/model/{id}/converse`` and Azure's ``/openai/deployments/…``
# have none; the GCP schemas get ``/v1/projects/{project}/locations/{region}`` from their GCPCredentials).
DEFAULT_PREFIXES = {name: schema.default_prefix for name, schema in BACKEND_SCHEMAS.items()}
SUPPORTED_SCHEMAS = set(BACKEND_SCHEMAS)
GCP_SCHEMAS = frozenset(name for name, schema in BACKEND_SCHEMAS.items() if schema.prefix_from_gcp)


def read_backends(
    items: dict[str, Resource],
    envoy_backends: dict[str, Resource],
    policies: dict[str, SecurityPolicy],
    problems: Problems,
    tls: dict[str, TLSValidation] | None = None,
) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        if not spec.fields({"schema", "backendRef", "headerMutation", "bodyMutation"}):
            continue
        schema = spec["schema"]
        schema.mapping()
        schema_name = schema["name"].string()
        if schema_name is not None and schema_name not in SUPPORTED_SCHEMAS:
            schema["name"].report(f"{schema_name!r} is not supported yet")
        backend_ref = spec["backendRef"]
        backend_ref.mapping()
        backend_ref.reference_kind("Backend", "gateway.envoyproxy.io")
        backend_ref.unsupported({"port": "the port is the Backend's endpoint's"})
        ref_name = backend_ref["name"].string()
        endpoint = None
        fake = False
        if ref_name is not None:
            envoy_backend = envoy_backends.get(ref_name)
            if envoy_backend is None:
                backend_ref["name"].report(f"Backend/{ref_name} does not exist")
            else:
                endpoint = envoy_endpoint(envoy_backend, (tls or {}).get(ref_name), problems)
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
        via_chat = _responses_via_chat(Cursor.root(resource, problems), schema_name)
        backends[resource.name] = Backend(
            name=resource.name,
            schema=schema_name,
            schema_version=schema.get("version"),
            path_prefix="/" + str(prefix).strip("/") if str(prefix).strip("/") else "",
            endpoint=endpoint,
            security=policy,
            fake_provider=fake,
            header_mutation=header_mutation(spec["headerMutation"]),
            body_mutation=body_mutation(spec["bodyMutation"]),
            responses_via_chat=via_chat,
        )
    return backends


_RESPONSES_API_MODES = ("native", "chat-completions")


def _responses_via_chat(root: Cursor, schema: str) -> bool:
    """The AIServiceBackend's ``tokenvoy.io/responses-api`` annotation: whether ``/v1/responses`` requests reach
    it translated to Chat Completions (for an OpenAI-compatible server that lacks the Responses API)."""
    annotation = root["metadata"]["annotations"][RESPONSES_API_ANNOTATION]
    if annotation.value is None:
        return False
    mode = str(annotation.value).lower()
    if mode not in _RESPONSES_API_MODES:
        annotation.report(f"must be native or chat-completions, got {annotation.value!r}")
        return False
    choosers = [name for name, row in BACKEND_SCHEMAS.items() if row.chooses_responses_api]
    if schema not in choosers:
        annotation.report(f"only {' and '.join(choosers)} backends choose; {schema} is always translated")
        return False
    return mode == "chat-completions"

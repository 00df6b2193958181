"""The catalogs (tokenvoy/apis/) and every table that depends on them agree: adding a backend schema is one
translator module per client API, one line in the translator table and one catalog row, and nothing is
forgotten (a translator for an unknown schema, a schema the loader refuses, a metric label or span name
missing, a client API whose errors or Envoy's replies are in another shape, a docs table that promises more)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import orjson
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from tokenvoy.apis.backend_schemas import API_KEY_KINDS, BACKEND_SCHEMAS, CREDENTIAL_KINDS
from tokenvoy.apis.client_apis import CLIENT_APIS, ENDPOINTS, FAMILIES, ClientAPI, Family, StreamError
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.metrics import PrometheusObserver
from tokenvoy.extproc.observe import CompletedRequest
from tokenvoy.extproc.tracing import Tracing
from tokenvoy.extproc.translate import TRANSLATORS
from tokenvoy.extproc.translate.base import ClientRequest
from tokenvoy.extproc.upstream import CREDENTIAL_HEADERS
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.render.local_replies import local_reply_config
from tokenvoy.runner.redact import SENSITIVE_HEADERS

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = list(BACKEND_SCHEMAS)
# OpenInference's enumerations as Envoy AI Gateway's Go semconv package spells them (LLMProvider, LLMSystem).
OPENINFERENCE_PROVIDERS = {"openai", "anthropic", "cohere", "mistralai", "google", "azure", "aws", "xai", "deepseek"}
OPENINFERENCE_SYSTEMS = {"openai", "anthropic", "vertexai", "cohere", "mistralai", "xai", "deepseek", "amazon"}


# ---- translators ↔ backend schema rows ↔ client API specs ----------------------------------------------


def test_every_translator_pair_names_a_catalog_client_api_and_schema() -> None:
    strays = [(api, schema) for api, schema in TRANSLATORS if api not in CLIENT_APIS or schema not in BACKEND_SCHEMAS]
    assert strays == []


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_schema_serves_exactly_the_client_apis_its_row_claims(schema: str) -> None:
    translated = {api for api, name in TRANSLATORS if name == schema}
    claimed = BACKEND_SCHEMAS[schema].client_apis
    assert translated - claimed == set(), "a translator the catalog row does not list"
    assert claimed - translated == set(), "the catalog row claims a client API no translator serves"


@pytest.mark.parametrize("api", list(ClientAPI))
def test_every_client_api_has_a_spec_and_a_schema_that_serves_it(api: ClientAPI) -> None:
    spec = CLIENT_APIS[api]
    assert spec.api is api
    assert spec.paths or spec.gemini_methods, "a client API the router cannot reach"
    assert any(api in row.client_apis for row in BACKEND_SCHEMAS.values())


def test_each_post_path_belongs_to_one_client_api_under_its_familys_root() -> None:
    paths = [path for spec in CLIENT_APIS.values() for path in spec.paths]
    assert len(paths) == len(set(paths)) == len(ENDPOINTS)
    for path, api in ENDPOINTS.items():
        family = FAMILIES[api.spec.family]
        others = [f for f in FAMILIES.values() if f is not family and path.startswith(f.roots)]
        assert others == [], f"{path}: its errors would be in another family's shape"
        assert not family.roots or path.startswith(family.roots)


# ---- the config loader accepts exactly the catalog ------------------------------------------------------


def _with_schema(name: str) -> str:
    documents = list(yaml.safe_load_all(default_config_yaml({}, showcase=False)))
    for document in documents:
        if document and document.get("kind") == "AIServiceBackend":
            document["spec"]["schema"] = {"name": name, "version": "2024-10-21"}
    return yaml.safe_dump_all(documents)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_loader_accepts_every_catalog_schema_with_its_default_prefix(schema: str) -> None:
    config = load_text(_with_schema(schema))
    (backend,) = config.backends.values()
    assert backend.schema == schema
    assert backend.path_prefix == BACKEND_SCHEMAS[schema].default_prefix


@pytest.mark.parametrize("schema", ["Cohere", "openai", "Gemini"])
def test_the_loader_refuses_a_schema_the_catalog_lacks(schema: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_text(_with_schema(schema))
    assert any(f"{schema!r} is not supported yet" in problem for problem in excinfo.value.problems)


def test_the_loader_names_exactly_the_catalogs_credential_kinds_as_supported() -> None:
    policy = """
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: key}
spec:
  type: Kerberos
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: fake}]
"""
    with pytest.raises(ConfigError) as excinfo:
        load_text(default_config_yaml({}, showcase=False) + policy)
    (problem,) = [p for p in excinfo.value.problems if "'Kerberos' is not supported" in p]
    assert problem.endswith(f"(supported: {', '.join(CREDENTIAL_KINDS)})")


def test_every_key_header_is_stripped_from_the_client_and_redacted_in_logs() -> None:
    """A key the client sent never reaches a backend the gateway holds a key for, whatever the family."""
    headers = {kind.header for kind in API_KEY_KINDS} | {family.key_header for family in FAMILIES.values()}
    headers |= {row.key_header for row in BACKEND_SCHEMAS.values() if row.key_header}
    assert headers <= set(CREDENTIAL_HEADERS)
    assert headers <= set(SENSITIVE_HEADERS)


def test_each_schemas_credentials_are_catalog_kinds() -> None:
    for row in BACKEND_SCHEMAS.values():
        assert row.credentials and set(row.credentials) <= set(CREDENTIAL_KINDS), row.name


# ---- metric labels and trace attributes come from the rows and specs ------------------------------------


def _completed(api: ClientAPI = ClientAPI.OPENAI_CHAT, schema: str = "OpenAI") -> CompletedRequest:
    return CompletedRequest(
        api=api,
        route="default",
        backend="b",
        schema=schema,
        original_model="m",
        request_model="m",
        response_model="m",
        status=200,
        stream=False,
        usage=TokenUsage(input=3, output=5, total=8),
        started=100.0,
        finished=100.5,
        first_chunk_at=100.5,
        gateway_seconds=0.0007,
        error_type=None,
        request_headers={},
        named_models=frozenset({"m"}),
    )


def _overhead_labels(completed: CompletedRequest) -> str:
    observer = PrometheusObserver()
    observer.request_completed(completed)
    lines = generate_latest(observer.registry).decode().splitlines()
    (line,) = [line for line in lines if line.startswith("tokenvoy_gateway_overhead_seconds_count")]
    return line


def _tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


@pytest.mark.parametrize("schema", SCHEMAS)
def test_metrics_and_traces_name_the_provider_as_the_schemas_row(schema: str) -> None:
    row = BACKEND_SCHEMAS[schema]
    assert f'gen_ai_provider_name="{row.otel_provider}"' in _overhead_labels(_completed(schema=schema))
    tracing, _ = _tracing()
    attributes = tracing.response_attributes(_completed(schema=schema), "m", None)
    assert (attributes["llm.provider"], attributes["llm.system"]) == (
        row.openinference_provider,
        row.openinference_system,
    )
    assert row.openinference_provider in OPENINFERENCE_PROVIDERS
    assert row.openinference_system in OPENINFERENCE_SYSTEMS


@pytest.mark.parametrize("api", list(ClientAPI))
def test_metrics_and_traces_name_the_operation_and_span_as_the_client_apis_spec(api: ClientAPI) -> None:
    spec = CLIENT_APIS[api]
    assert f'gen_ai_operation_name="{spec.operation}"' in _overhead_labels(_completed(api=api))
    tracing, exporter = _tracing()
    request = ClientRequest(api, "/p", b"{}", {}, "m", False, False)
    span, _ = tracing.start({}, request, 0.0)
    span.end()
    (finished,) = exporter.get_finished_spans()
    assert finished.name == spec.span_name
    assert finished.attributes["openinference.span.kind"] == spec.span_kind


# ---- one error shape per family: extproc's errors, stream error events and Envoy's own replies ---------


def _shape(value: object) -> object:
    """The JSON's structure: keys and value types, not the values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def _local_reply_bodies() -> dict[Family, list[dict]]:
    """Envoy's rendered replies by the family their filter selects (Anthropic's, then Google's, then OpenAI's)."""
    mappers = local_reply_config().mappers
    per_family = len(mappers) // 3
    bodies = [mapper.body_format_override.json_format.to_dict() for mapper in mappers]
    return {
        Family.ANTHROPIC: bodies[:per_family],
        Family.GOOGLE: bodies[per_family : 2 * per_family],
        Family.OPENAI: bodies[2 * per_family :],
    }


@pytest.mark.parametrize("api", list(ClientAPI))
def test_the_gateways_errors_and_envoys_replies_share_the_client_apis_error_shape(api: ClientAPI) -> None:
    error = GatewayError(429, "budget exceeded")
    body = orjson.loads(api.error_body(error))
    expected = _shape(body)
    if api.spec.family is Family.GOOGLE:
        expected = {"error": {"code": "str", "message": "str", "status": "str"}}  # %RESPONSE_CODE%, typed by Envoy
    assert {str(_shape(reply)) for reply in _local_reply_bodies()[api.spec.family]} == {str(expected)}
    assert set(body["error"]) >= {"message"}


@pytest.mark.parametrize("api", list(ClientAPI))
def test_a_streams_error_event_carries_the_error_as_its_sdk_reads_it(api: ClientAPI) -> None:
    error = GatewayError(502, "the provider's stream broke off")
    event = api.stream_error_event(error)
    assert event.startswith(b"\n\n") and event.endswith(b"\n\n")
    lines = event.strip().split(b"\n")
    style = api.spec.stream_error
    assert (lines[0] == b"event: error") is (style is not StreamError.DATA)
    data = orjson.loads(lines[-1].removeprefix(b"data: "))
    if style is StreamError.RESPONSES_EVENT:
        assert data == {"type": "error", "code": "api_error", "message": error.message, "param": None}
    else:
        assert data == orjson.loads(api.error_body(error))


def test_envoys_replies_to_an_anthropic_client_use_only_anthropics_error_types() -> None:
    from tokenvoy.apis.client_apis import ANTHROPIC_ERROR_TYPES

    types = {body["error"]["type"] for body in _local_reply_bodies()[Family.ANTHROPIC]}
    assert types <= ANTHROPIC_ERROR_TYPES


# ---- the docs' compatibility table says what the rows say -----------------------------------------------

_DOC_ROWS = (
    ("/anthropic/v1/messages/count_tokens", ClientAPI.ANTHROPIC_COUNT_TOKENS),
    ("/anthropic/v1/messages`", ClientAPI.ANTHROPIC_MESSAGES),
    (":countTokens", ClientAPI.GEMINI_COUNT_TOKENS),
    (":generateContent", ClientAPI.GEMINI_GENERATE),
    ("/v1/chat/completions", ClientAPI.OPENAI_CHAT),
    ("/v1/responses", ClientAPI.OPENAI_RESPONSES),
    ("/v1/embeddings", ClientAPI.OPENAI_EMBEDDINGS),
    ("/v1/completions", ClientAPI.OPENAI_COMPLETIONS),
)


def test_the_providers_doc_table_claims_what_the_catalog_rows_claim() -> None:
    lines = (ROOT / "docs" / "providers.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| client API"))
    columns = [cell.strip() for cell in lines[start].strip("|").split("|")][1:]
    assert set(columns) == set(BACKEND_SCHEMAS), "one column per catalog schema"
    documented: dict[ClientAPI, set[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        label, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        api = next(api for needle, api in _DOC_ROWS if needle in label)
        documented[api] = {schema for schema, cell in zip(columns, cells, strict=True) if cell.startswith("✓")}
    assert set(documented) == {api for _, api in _DOC_ROWS}, "a row per documented client API"
    for api, schemas in documented.items():
        assert schemas == {name for name, row in BACKEND_SCHEMAS.items() if api in row.client_apis}, api


# ---- the catalogs are the lowest layer ------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted((ROOT / "tokenvoy" / "apis").glob("*.py")), ids=lambda p: p.name)
def test_the_catalogs_import_nothing_of_tokenvoy_but_each_other(module: Path) -> None:
    tree = ast.parse(module.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    upward = {name for name in imported if name.startswith("tokenvoy") and not name.startswith("tokenvoy.apis")}
    assert upward == set()
    assert not re.search(r"\bopen\(|\bsocket\b|\bos\.environ\b", module.read_text()), "no I/O in a catalog"

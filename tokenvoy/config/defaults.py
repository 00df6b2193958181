"""The embedded default configuration of ``tokenvoy run``: no file and no API key needed.

Without ``OPENAI_API_KEY`` everything goes to the fake provider, which speaks every provider's wire format:
one model per backend schema (:data:`SHOWCASE_MODELS`, listed by ``/v1/models``) is translated to that
schema, and any other model name goes to the OpenAI-schema fake. With it, every model goes to OpenAI (or
to ``OPENAI_BASE_URL``). Either way each ``x-user-id`` gets 100,000 total tokens per hour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

FAKE_PROVIDER_PORT = 1976
DEFAULT_BUDGET_TOKENS_PER_HOUR = 100_000

# (model, AIServiceBackend, schema, schema version): the default config's model per backend schema, all
# served by the fake provider, so each translation can be tried with no account. Embedding models go to the
# backend of their schema too; any other model name goes to the OpenAI-schema backend `fake`.
SHOWCASE_MODELS: tuple[tuple[str, str, str], ...] = (
    ("gpt-4o-mini", "fake", "OpenAI"),
    ("text-embedding-3-small", "fake", "OpenAI"),
    ("claude-sonnet-4-6", "fake-anthropic", "Anthropic"),
    ("azure-gpt-4o-mini", "fake-azure", "AzureOpenAI"),
    ("amazon.nova-lite-v1:0", "fake-bedrock", "AWSBedrock"),
    ("amazon.titan-embed-text-v2:0", "fake-bedrock", "AWSBedrock"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "AWSAnthropic"),
    ("gemini-2.5-flash", "fake-vertex", "GCPVertexAI"),
    ("text-embedding-005", "fake-vertex", "GCPVertexAI"),
    ("claude-haiku-4-5@20251001", "fake-vertex-anthropic", "GCPAnthropic"),
)
_SCHEMA_VERSIONS = {"AzureOpenAI": "2024-10-21"}

_COMMON = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: tokenvoy
spec:
  gatewayClassName: tokenvoy
  listeners:
    - name: http
      protocol: HTTP
      port: 1975
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata:
  name: default
spec:
  parentRefs:
    - name: tokenvoy
      kind: Gateway
      group: gateway.networking.k8s.io
  rules:
{showcase}    # No `matches`: every (other) model name is accepted and sent to this backend.
    - backendRefs:
        - name: {backend}
  llmRequestCosts:
    - metadataKey: llm_input_token
      type: InputToken
    - metadataKey: llm_cached_input_token
      type: CachedInputToken
    - metadataKey: llm_output_token
      type: OutputToken
    - metadataKey: llm_total_token
      type: TotalToken
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata:
  name: per-user-token-budget
spec:
  targetRefs:
    - group: aigateway.envoyproxy.io
      kind: AIGatewayRoute
      name: default
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors:
            - headers:
                - name: x-user-id
                  type: Distinct
          limit:
            requests: {budget}
            unit: Hour
          cost:
            request:
              from: Number
              number: 0
            response:
              from: Metadata
              metadata:
                namespace: io.envoy.ai_gateway
                key: llm_total_token
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata:
  name: {backend}
spec:
  schema:
    name: OpenAI
    prefix: {prefix}
  backendRef:
    name: {backend}
    kind: Backend
    group: gateway.envoyproxy.io
"""

_FAKE = """\
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: fake
  annotations:
    # `tokenvoy run` starts `tokenvoy testupstream` on this address.
    tokenvoy.io/fake-provider: "true"
spec:
  endpoints:
    - ip:
        address: 127.0.0.1
        port: {port}
"""

_OPENAI = """\
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: openai
spec:
  endpoints:
    - fqdn:
        hostname: {host}
        port: {port}
{tls}---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata:
  name: openai-api-key
spec:
  type: APIKey
  targetRefs:
    - group: aigateway.envoyproxy.io
      kind: AIServiceBackend
      name: openai
  apiKey:
    secretRef:
      name: openai-api-key
---
apiVersion: v1
kind: Secret
metadata:
  name: openai-api-key
stringData:
  # Read from the environment when extproc starts; never written to disk.
  apiKey: ${{OPENAI_API_KEY}}
"""


def _showcase_rules() -> str:
    """One rule per AIServiceBackend, matching its models exactly (``/v1/models`` lists them)."""
    by_backend: dict[str, list[str]] = {}
    for model, backend, _ in SHOWCASE_MODELS:
        by_backend.setdefault(backend, []).append(model)
    lines = []
    for backend, models in by_backend.items():
        lines.append("    - matches:")
        for model in models:
            lines.append(f"        - headers: [{{type: Exact, name: x-ai-eg-model, value: {model!r}}}]")
        lines.append(f"      backendRefs: [{{name: {backend}}}]")
    return "\n".join(lines) + "\n"


_FAKE_ANTHROPIC_KEY = """\
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata:
  name: fake-anthropic-key
spec:
  type: AnthropicAPIKey
  targetRefs:
    - group: aigateway.envoyproxy.io
      kind: AIServiceBackend
      name: fake-anthropic
  anthropicAPIKey:
    secretRef:
      name: fake-anthropic-key
---
apiVersion: v1
kind: Secret
metadata:
  name: fake-anthropic-key
stringData:
  apiKey: sk-ant-fake  # the fake provider, like Anthropic, wants an x-api-key; any value will do
"""


def _showcase_backends() -> str:
    """The AIServiceBackends of the other schemas, all on the one fake provider ``Backend``."""
    seen: dict[str, str] = {}
    for _, backend, schema in SHOWCASE_MODELS:
        if backend != "fake":
            seen.setdefault(backend, schema)
    documents = []
    for backend, schema in seen.items():
        version = f"\n    version: {_SCHEMA_VERSIONS[schema]!r}" if schema in _SCHEMA_VERSIONS else ""
        documents.append(
            "---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\n"
            f"metadata:\n  name: {backend}\nspec:\n  schema:\n    name: {schema}{version}\n"
            "  backendRef:\n    name: fake\n    kind: Backend\n    group: gateway.envoyproxy.io\n"
        )
    return "".join(documents) + _FAKE_ANTHROPIC_KEY


def default_config_yaml(environ: Mapping[str, str] | None = None, showcase: bool = True) -> str:
    """``showcase=False``: without the one-model-per-schema rules (the fake answers every model as OpenAI)."""
    environ = os.environ if environ is None else environ
    budget = DEFAULT_BUDGET_TOKENS_PER_HOUR
    if not environ.get("OPENAI_API_KEY"):
        rules, backends = (_showcase_rules(), _showcase_backends()) if showcase else ("", "")
        common = _COMMON.format(backend="fake", prefix="/v1", budget=budget, showcase=rules)
        return common + backends + _FAKE.format(port=FAKE_PROVIDER_PORT)
    base_url = urlsplit(environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
    tls = base_url.scheme == "https"
    port = base_url.port or (443 if tls else 80)
    prefix = base_url.path.rstrip("/") or "/"
    common = _COMMON.format(backend="openai", prefix=prefix, budget=budget, showcase="")
    tls_block = "  tls:\n    wellKnownCACertificates: System\n" if tls else ""
    return common + _OPENAI.format(host=base_url.hostname, port=port, tls=tls_block)

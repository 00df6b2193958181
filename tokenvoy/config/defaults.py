"""The embedded default configuration of ``tokenvoy run``: no file and no API key needed.

Without ``OPENAI_API_KEY`` every model name goes to the fake provider; with it, to OpenAI (or to
``OPENAI_BASE_URL``). Either way each ``x-user-id`` gets 100,000 total tokens per hour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

FAKE_PROVIDER_PORT = 1976
DEFAULT_BUDGET_TOKENS_PER_HOUR = 100_000

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
    # No `matches`: every model name is accepted and sent to this backend.
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


def default_config_yaml(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    budget = DEFAULT_BUDGET_TOKENS_PER_HOUR
    if not environ.get("OPENAI_API_KEY"):
        common = _COMMON.format(backend="fake", prefix="/v1", budget=budget)
        return common + _FAKE.format(port=FAKE_PROVIDER_PORT)
    base_url = urlsplit(environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
    tls = base_url.scheme == "https"
    port = base_url.port or (443 if tls else 80)
    prefix = base_url.path.rstrip("/") or "/"
    common = _COMMON.format(backend="openai", prefix=prefix, budget=budget)
    tls_block = "  tls:\n    wellKnownCACertificates: System\n" if tls else ""
    return common + _OPENAI.format(host=base_url.hostname, port=port, tls=tls_block)

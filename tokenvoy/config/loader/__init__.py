"""Load Envoy AI Gateway / Envoy Gateway resources from YAML into a ``GatewayConfig``.

Every problem found is collected (file, ``kind/name``, field path) so ``tokenvoy validate`` can list them
all at once instead of failing on the first.

One module per resource kind (``ai_gateway_route``, ``ai_service_backend``, ``backend``, ...), the YAML
reading in ``documents``, the order kinds are resolved in (and what each needs of the others) in
``resolve``. Everything other modules import is re-exported here.
"""

from __future__ import annotations

from tokenvoy.config.loader import (
    ai_gateway_route,
    ai_service_backend,
    backend,
    backend_security_policy,
    backend_tls_policy,
    budgets,
    gateway,
    security_policy,
)
from tokenvoy.config.loader.ai_service_backend import (
    DEFAULT_PREFIXES,
    GCP_SCHEMAS,
    RESPONSES_API_ANNOTATION,
    SUPPORTED_SCHEMAS,
)
from tokenvoy.config.loader.backend import FAKE_PROVIDER_ANNOTATION
from tokenvoy.config.loader.backend_security_policy import (
    AWS_CREDENTIALS_KEY,
    AZURE_CLIENT_SECRET_KEY,
    GCP_SERVICE_ACCOUNT_KEY,
)
from tokenvoy.config.loader.budgets import BUDGET_MODE_ANNOTATION, DEFAULT_MAX_TOKENS_ANNOTATION
from tokenvoy.config.loader.cursor import ConfigError
from tokenvoy.config.loader.documents import IGNORED_KINDS, parse_documents
from tokenvoy.config.loader.resolve import load_config, load_documents, load_text
from tokenvoy.config.loader.retries import RETRY_TRIGGERS
from tokenvoy.config.loader.security_policy import DEFAULT_CLIENT_ID_HEADER
from tokenvoy.config.loader.tokenvoy_config import (
    ANTHROPIC_BETA_SCHEMAS,
    CLIENT_LABEL,
    RESERVED_METRIC_LABELS,
    TOKENVOY_API_VERSION,
)

# Fields of the published APIs accepted without an effect on a standalone gateway, and why, by kind (each
# kind module lists its own). Every other field the loader accepts changes the loaded config or is refused
# naming it (tests/test_config_fields.py).
INERT_FIELDS: dict[str, dict[str, str]] = {
    "AIGatewayRoute": ai_gateway_route.INERT,
    "AIServiceBackend": ai_service_backend.INERT,
    "BackendSecurityPolicy": backend_security_policy.INERT,
    "Backend": backend.INERT,
    "BackendTrafficPolicy": budgets.INERT,
    "BackendTLSPolicy": backend_tls_policy.INERT,
    "SecurityPolicy": security_policy.INERT,
    "Gateway": gateway.INERT,
}

__all__ = [
    "ANTHROPIC_BETA_SCHEMAS",
    "AWS_CREDENTIALS_KEY",
    "AZURE_CLIENT_SECRET_KEY",
    "BUDGET_MODE_ANNOTATION",
    "CLIENT_LABEL",
    "DEFAULT_CLIENT_ID_HEADER",
    "DEFAULT_MAX_TOKENS_ANNOTATION",
    "DEFAULT_PREFIXES",
    "FAKE_PROVIDER_ANNOTATION",
    "GCP_SCHEMAS",
    "GCP_SERVICE_ACCOUNT_KEY",
    "IGNORED_KINDS",
    "INERT_FIELDS",
    "RESERVED_METRIC_LABELS",
    "RESPONSES_API_ANNOTATION",
    "RETRY_TRIGGERS",
    "SUPPORTED_SCHEMAS",
    "TOKENVOY_API_VERSION",
    "ConfigError",
    "load_config",
    "load_documents",
    "load_text",
    "parse_documents",
]

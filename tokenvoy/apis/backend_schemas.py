"""One row per backend schema (an ``AIServiceBackend``'s ``spec.schema.name``) and per credential kind.

The config loader accepts exactly these schemas and policy types; extproc names them in metrics and traces
from these rows, and adds API keys as their kind says. The translators for each (client API, schema) pair
are in ``extproc/translate/__init__.py``; ``tests/test_catalogs.py`` keeps the two in agreement. Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tokenvoy.apis.client_apis import ClientAPI


@dataclass(frozen=True, slots=True)
class CredentialKind:
    """A ``BackendSecurityPolicy`` ``spec.type``: where its settings are, and how a request carries it."""

    policy_type: str  # spec.type
    spec_field: str  # the spec field holding its settings
    header: str | None  # an API key: the header the gateway sets; None: a cloud credential (signed per request)
    template: str = "{}"  # the header's value, around the key


CREDENTIAL_KINDS: Mapping[str, CredentialKind] = {
    kind.policy_type: kind
    for kind in (
        CredentialKind("APIKey", "apiKey", "authorization", "Bearer {}"),
        CredentialKind("AzureAPIKey", "azureAPIKey", "api-key"),
        CredentialKind("AnthropicAPIKey", "anthropicAPIKey", "x-api-key"),
        CredentialKind("AWSCredentials", "awsCredentials", None),  # SigV4
        CredentialKind("GCPCredentials", "gcpCredentials", None),  # a service account's access token
        CredentialKind("AzureCredentials", "azureCredentials", None),  # an Entra ID token
    )
}
API_KEY_KINDS = tuple(kind for kind in CREDENTIAL_KINDS.values() if kind.header is not None)
CLOUD_POLICY_TYPES = frozenset(kind.policy_type for kind in CREDENTIAL_KINDS.values() if kind.header is None)


_CHAT = ClientAPI.OPENAI_CHAT
_COMPLETIONS = ClientAPI.OPENAI_COMPLETIONS
_EMBEDDINGS = ClientAPI.OPENAI_EMBEDDINGS
_MESSAGES = ClientAPI.ANTHROPIC_MESSAGES
_RESPONSES = ClientAPI.OPENAI_RESPONSES
_RESPONSES_INPUT_TOKENS = ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS
_GEMINI = ClientAPI.GEMINI_GENERATE
_GEMINI_COUNT = ClientAPI.GEMINI_COUNT_TOKENS
_COUNT = ClientAPI.ANTHROPIC_COUNT_TOKENS
# What every chat schema serves: chat itself, and the Messages, Gemini and Responses APIs through it.
_EVERY_CHAT = (_CHAT, _MESSAGES, _GEMINI, _RESPONSES)


@dataclass(frozen=True, slots=True)
class BackendSchema:
    name: str  # spec.schema.name, Envoy AI Gateway's
    client_apis: frozenset[ClientAPI]  # the client APIs it serves: one translator each (extproc/translate/)
    default_prefix: str  # spec.schema.prefix when unset: what goes before the path the translator writes
    credentials: tuple[str, ...]  # the policy types the provider takes (CREDENTIAL_KINDS), its usual one first
    otel_provider: str  # gen_ai.provider.name (metrics label), Envoy AI Gateway's / the semantic conventions'
    openinference_provider: str  # llm.provider (who hosts the model), OpenInference's LLMProvider
    openinference_system: str  # llm.system (the model family / API), OpenInference's LLMSystem
    prefix_from_gcp: bool = False  # no prefix set: /v1/projects/{project}/locations/{region} of its GCPCredentials
    anthropic_betas: bool = False  # its requests carry Anthropic's beta flags (TokenvoyConfig anthropicBetas)
    chooses_responses_api: bool = False  # serves the Responses API natively unless marked chat-completions only

    @property
    def key_header(self) -> str | None:
        """The header its provider reads an API key from (None: requests are signed)."""
        return CREDENTIAL_KINDS[self.credentials[0]].header


BACKEND_SCHEMAS: Mapping[str, BackendSchema] = {
    schema.name: schema
    for schema in (
        BackendSchema(
            "OpenAI",
            frozenset((*_EVERY_CHAT, _EMBEDDINGS, _COMPLETIONS, _RESPONSES_INPUT_TOKENS)),
            "/v1",
            ("APIKey",),
            "openai",
            "openai",
            "openai",
            chooses_responses_api=True,
        ),
        BackendSchema(
            "AzureOpenAI",
            frozenset((*_EVERY_CHAT, _EMBEDDINGS)),
            "",  # /openai/deployments/{deployment}/… is the translator's
            ("AzureAPIKey", "AzureCredentials"),
            "azure.openai",
            "azure",
            "openai",
            chooses_responses_api=True,
        ),
        BackendSchema(
            "Anthropic",
            frozenset((*_EVERY_CHAT, _COUNT)),
            "/v1",
            ("AnthropicAPIKey",),
            "anthropic",
            "anthropic",
            "anthropic",
            anthropic_betas=True,
        ),
        BackendSchema(
            "AWSBedrock",
            frozenset((*_EVERY_CHAT, _EMBEDDINGS, _COUNT)),  # Converse; Titan embeddings; CountTokens
            "",  # /model/{id}/converse is the translator's
            ("AWSCredentials",),
            "aws.bedrock",
            "aws",
            "amazon",
            anthropic_betas=True,
        ),
        BackendSchema(
            "AWSAnthropic",
            frozenset((*_EVERY_CHAT, _COUNT)),
            "",
            ("AWSCredentials",),
            "aws.anthropic",
            "aws",
            "anthropic",
            anthropic_betas=True,
        ),
        BackendSchema(
            "GCPVertexAI",
            frozenset((*_EVERY_CHAT, _EMBEDDINGS, _GEMINI_COUNT)),
            "",
            ("GCPCredentials",),
            "gcp.vertex_ai",
            "google",
            "vertexai",
            prefix_from_gcp=True,
        ),
        BackendSchema(
            "GCPAnthropic",
            frozenset((*_EVERY_CHAT, _COUNT)),
            "",
            ("GCPCredentials",),
            "gcp.anthropic",
            "google",
            "anthropic",
            prefix_from_gcp=True,
            anthropic_betas=True,
        ),
    )
}

"""Translator registry: (client API, backend schema name) → translator class.

Adding a provider is one module per client API it serves, one line each here and one catalog row
(``tokenvoy/apis/backend_schemas.py``); no other translator changes (docs/providers.md, "Adding a provider").
"""

from __future__ import annotations

from collections.abc import Callable

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.anthropic_to_azure import AnthropicToAzure
from tokenvoy.extproc.translate.anthropic_to_bedrock import AnthropicToBedrock
from tokenvoy.extproc.translate.anthropic_to_gemini import AnthropicToGemini
from tokenvoy.extproc.translate.anthropic_to_openai import AnthropicToOpenAI
from tokenvoy.extproc.translate.aws_anthropic import (
    AnthropicToAWSAnthropic,
    CountTokensToAWSAnthropic,
    OpenAIToAWSAnthropic,
)
from tokenvoy.extproc.translate.base import ClientAPI, Translator
from tokenvoy.extproc.translate.completions_to_openai import CompletionsToOpenAI
from tokenvoy.extproc.translate.count_tokens_to_anthropic import CountTokensToAnthropic
from tokenvoy.extproc.translate.count_tokens_to_bedrock import CountTokensToBedrock
from tokenvoy.extproc.translate.embeddings_to_azure import EmbeddingsToAzure
from tokenvoy.extproc.translate.embeddings_to_openai import EmbeddingsToOpenAI
from tokenvoy.extproc.translate.embeddings_to_titan import EmbeddingsToTitan
from tokenvoy.extproc.translate.embeddings_to_vertex import EmbeddingsToVertex
from tokenvoy.extproc.translate.gcp_anthropic import (
    AnthropicToGCPAnthropic,
    CountTokensToGCPAnthropic,
    OpenAIToGCPAnthropic,
)
from tokenvoy.extproc.translate.gemini_to_anthropic import GeminiToAnthropic, GeminiToAWSAnthropic, GeminiToGCPAnthropic
from tokenvoy.extproc.translate.gemini_to_azure import GeminiToAzure
from tokenvoy.extproc.translate.gemini_to_bedrock import GeminiToBedrock
from tokenvoy.extproc.translate.gemini_to_openai import GeminiToOpenAI
from tokenvoy.extproc.translate.gemini_to_vertex import GeminiToVertex
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic
from tokenvoy.extproc.translate.openai_to_azure import OpenAIToAzure
from tokenvoy.extproc.translate.openai_to_bedrock import OpenAIToBedrock
from tokenvoy.extproc.translate.openai_to_gemini import OpenAIToGemini
from tokenvoy.extproc.translate.openai_to_openai import OpenAIToOpenAI
from tokenvoy.extproc.translate.responses_to_openai import InputTokensToOpenAI, ResponsesToAzure, ResponsesToOpenAI
from tokenvoy.extproc.translate.responses_via_chat import via_chat

TRANSLATORS: dict[tuple[ClientAPI, str], Callable[[], Translator]] = {
    (ClientAPI.OPENAI_CHAT, "OpenAI"): OpenAIToOpenAI,
    (ClientAPI.OPENAI_CHAT, "Anthropic"): OpenAIToAnthropic,
    (ClientAPI.ANTHROPIC_MESSAGES, "Anthropic"): AnthropicToAnthropic,
    (ClientAPI.ANTHROPIC_MESSAGES, "OpenAI"): AnthropicToOpenAI,
    (ClientAPI.OPENAI_CHAT, "AWSBedrock"): OpenAIToBedrock,
    (ClientAPI.ANTHROPIC_MESSAGES, "AWSBedrock"): AnthropicToBedrock,
    (ClientAPI.OPENAI_CHAT, "AWSAnthropic"): OpenAIToAWSAnthropic,
    (ClientAPI.ANTHROPIC_MESSAGES, "AWSAnthropic"): AnthropicToAWSAnthropic,
    (ClientAPI.OPENAI_CHAT, "GCPAnthropic"): OpenAIToGCPAnthropic,
    (ClientAPI.ANTHROPIC_MESSAGES, "GCPAnthropic"): AnthropicToGCPAnthropic,
    (ClientAPI.OPENAI_CHAT, "AzureOpenAI"): OpenAIToAzure,
    (ClientAPI.OPENAI_CHAT, "GCPVertexAI"): OpenAIToGemini,
    (ClientAPI.OPENAI_EMBEDDINGS, "OpenAI"): EmbeddingsToOpenAI,
    (ClientAPI.OPENAI_EMBEDDINGS, "AzureOpenAI"): EmbeddingsToAzure,
    (ClientAPI.OPENAI_EMBEDDINGS, "GCPVertexAI"): EmbeddingsToVertex,
    (ClientAPI.OPENAI_EMBEDDINGS, "AWSBedrock"): EmbeddingsToTitan,
    (ClientAPI.OPENAI_COMPLETIONS, "OpenAI"): CompletionsToOpenAI,
    (ClientAPI.OPENAI_RESPONSES, "OpenAI"): ResponsesToOpenAI,
    (ClientAPI.OPENAI_RESPONSES, "AzureOpenAI"): ResponsesToAzure,
    (ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS, "OpenAI"): InputTokensToOpenAI,
    (ClientAPI.ANTHROPIC_MESSAGES, "AzureOpenAI"): AnthropicToAzure,
    (ClientAPI.ANTHROPIC_MESSAGES, "GCPVertexAI"): AnthropicToGemini,
    (ClientAPI.GEMINI_GENERATE, "GCPVertexAI"): GeminiToVertex,
    (ClientAPI.GEMINI_COUNT_TOKENS, "GCPVertexAI"): GeminiToVertex,
    (ClientAPI.GEMINI_GENERATE, "OpenAI"): GeminiToOpenAI,
    (ClientAPI.GEMINI_GENERATE, "AzureOpenAI"): GeminiToAzure,
    (ClientAPI.GEMINI_GENERATE, "Anthropic"): GeminiToAnthropic,
    (ClientAPI.GEMINI_GENERATE, "AWSAnthropic"): GeminiToAWSAnthropic,
    (ClientAPI.GEMINI_GENERATE, "GCPAnthropic"): GeminiToGCPAnthropic,
    (ClientAPI.GEMINI_GENERATE, "AWSBedrock"): GeminiToBedrock,
    # Token counting: only where the provider counts (no count is ever made up; others answer 422).
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "Anthropic"): CountTokensToAnthropic,
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "GCPAnthropic"): CountTokensToGCPAnthropic,
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "AWSAnthropic"): CountTokensToAWSAnthropic,
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "AWSBedrock"): CountTokensToBedrock,
}
# The Responses API to every other chat schema: translated to Chat Completions, then by that schema's chat
# translator (responses_via_chat.py). OpenAI and Azure OpenAI backends get it too when they are marked as
# serving no Responses API (``Backend.responses_via_chat``; see translator_for_backend).
RESPONSES_VIA_CHAT: dict[str, Callable[[], Translator]] = {
    schema: via_chat(factory) for (api, schema), factory in TRANSLATORS.items() if api is ClientAPI.OPENAI_CHAT
}
for _schema, _factory in RESPONSES_VIA_CHAT.items():
    TRANSLATORS.setdefault((ClientAPI.OPENAI_RESPONSES, _schema), _factory)


def translator_for(api: ClientAPI, schema: str) -> Callable[[], Translator] | None:
    return TRANSLATORS.get((api, schema))


def translator_for_backend(api: ClientAPI, backend: Backend) -> Callable[[], Translator] | None:
    """As :func:`translator_for`, with the backend's own switches (a Responses API it does not serve)."""
    if backend.responses_via_chat:
        if api is ClientAPI.OPENAI_RESPONSES:
            return RESPONSES_VIA_CHAT.get(backend.schema)
        if api is ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS:
            return None  # a server without the Responses API cannot count for it

    return translator_for(api, backend.schema)

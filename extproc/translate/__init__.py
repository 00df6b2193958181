"""Translator registry: (client API, backend schema name) → translator class.

Adding a provider is one new module and one line here; no other translator changes.
"""

from __future__ import annotations

from collections.abc import Callable

from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.anthropic_to_bedrock import AnthropicToBedrock
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
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic
from tokenvoy.extproc.translate.openai_to_azure import OpenAIToAzure
from tokenvoy.extproc.translate.openai_to_bedrock import OpenAIToBedrock
from tokenvoy.extproc.translate.openai_to_gemini import OpenAIToGemini
from tokenvoy.extproc.translate.openai_to_openai import OpenAIToOpenAI

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
    # Token counting: only where the provider counts (no count is ever made up; others answer 422).
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "Anthropic"): CountTokensToAnthropic,
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "GCPAnthropic"): CountTokensToGCPAnthropic,
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "AWSAnthropic"): CountTokensToAWSAnthropic,
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "AWSBedrock"): CountTokensToBedrock,
}


def translator_for(api: ClientAPI, schema: str) -> Callable[[], Translator] | None:
    return TRANSLATORS.get((api, schema))

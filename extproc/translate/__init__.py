"""Translator registry: (client API, backend schema name) → translator class.

Adding a provider is one new module and one line here; no other translator changes.
"""

from __future__ import annotations

from collections.abc import Callable

from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.anthropic_to_openai import AnthropicToOpenAI
from tokenvoy.extproc.translate.base import ClientAPI, Translator
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic
from tokenvoy.extproc.translate.openai_to_openai import OpenAIToOpenAI

TRANSLATORS: dict[tuple[ClientAPI, str], Callable[[], Translator]] = {
    (ClientAPI.OPENAI_CHAT, "OpenAI"): OpenAIToOpenAI,
    (ClientAPI.OPENAI_CHAT, "Anthropic"): OpenAIToAnthropic,
    (ClientAPI.ANTHROPIC_MESSAGES, "Anthropic"): AnthropicToAnthropic,
    (ClientAPI.ANTHROPIC_MESSAGES, "OpenAI"): AnthropicToOpenAI,
}


def translator_for(api: ClientAPI, schema: str) -> Callable[[], Translator] | None:
    return TRANSLATORS.get((api, schema))

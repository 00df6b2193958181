"""Gemini API client → Claude: ``Anthropic``, ``AWSAnthropic`` (Bedrock invoke) and ``GCPAnthropic``
(Vertex AI rawPredict) backends.

Compositions (:mod:`chained`): the ``GenerateContentRequest`` becomes an OpenAI chat body
(:mod:`gemini_to_openai`), which becomes the Messages request of each Claude schema as for an OpenAI client
(:mod:`openai_to_anthropic`, :mod:`aws_anthropic`, :mod:`gcp_anthropic`: ``max_tokens`` 4096 when the client
set no ``maxOutputTokens``, the Bedrock and Vertex envelopes and paths). The answer comes back the same way,
streams event by event: text, thinking (``thought: true`` parts), tool use (``functionCall`` parts with the
``toolu_…`` id the client sends back in ``functionResponse.id``), stop reasons and usage (Anthropic's
``input_tokens`` plus cache reads and writes are ``promptTokenCount``). Anthropic's errors reach the
client in Google's shape with their status.
"""

from __future__ import annotations

from tokenvoy.extproc.translate.aws_anthropic import OpenAIToAWSAnthropic
from tokenvoy.extproc.translate.chained import chained
from tokenvoy.extproc.translate.gcp_anthropic import OpenAIToGCPAnthropic
from tokenvoy.extproc.translate.gemini_to_openai import GeminiToOpenAI
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic

GeminiToAnthropic = chained(GeminiToOpenAI, OpenAIToAnthropic)
GeminiToAWSAnthropic = chained(GeminiToOpenAI, OpenAIToAWSAnthropic)
GeminiToGCPAnthropic = chained(GeminiToOpenAI, OpenAIToGCPAnthropic)

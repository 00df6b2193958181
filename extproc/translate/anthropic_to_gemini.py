"""Anthropic Messages client → Gemini on Vertex AI (``schema.name: GCPVertexAI``).

A composition (:mod:`chained`): the Messages request becomes an OpenAI chat body as for an OpenAI-schema
backend (:mod:`anthropic_to_openai`: system, turns, images, PDFs, tool use and results, tools and
``tool_choice``, ``thinking`` budgets as ``reasoning_effort``, stop sequences), which becomes a
``GenerateContentRequest`` as for an OpenAI client (:mod:`openai_to_gemini`: ``systemInstruction``,
``functionDeclarations`` in Gemini's schema subset, ``thinkingConfig`` budgets, the path
``…/publishers/google/models/{model}:generateContent`` or ``:streamGenerateContent?alt=sse``). The answer
goes the same way back: Gemini's candidates, thoughts (``thinking`` blocks), function calls (``tool_use``
blocks), finish reasons and ``usageMetadata`` become an Anthropic ``message`` or its event stream.

What this pair adds to its two halves:

* Tool-use ids: Gemini names no call, so the gateway makes ``call_…`` ids; a call Gemini signed
  (``thoughtSignature``, which Gemini 3 requires back) carries the signature in its id, which the client sends
  back in ``tool_use.id`` and ``tool_result.tool_use_id``, and the signature is restored.
* ``thinking`` blocks the client sends back are dropped (Gemini keeps its own thoughts out of the history;
  the signature that matters rides in the call id), and so is ``top_k``.
* Errors: Google's ``{"error": {"code", "message", "status"}}`` reaches the client as Anthropic's error
  shape with the HTTP status kept; an error event mid-stream becomes an ``error`` event.
* Usage is Gemini's ``usageMetadata``: thoughts count as output tokens, ``promptTokenCount`` as input
  (cache reads shown in ``cache_read_input_tokens``).
"""

from __future__ import annotations

from tokenvoy.extproc.translate.anthropic_to_openai import AnthropicToOpenAI
from tokenvoy.extproc.translate.chained import chained
from tokenvoy.extproc.translate.openai_to_gemini import OpenAIToGemini

AnthropicToGemini = chained(AnthropicToOpenAI, OpenAIToGemini)

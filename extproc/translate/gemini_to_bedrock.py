"""Gemini API client → Amazon Bedrock Converse (``schema.name: AWSBedrock``).

A composition (:mod:`chained`): the ``GenerateContentRequest`` becomes an OpenAI chat body
(:mod:`gemini_to_openai`), which becomes a Converse request as for an OpenAI client
(:mod:`openai_to_bedrock`: ``system``, ``toolConfig``, ``inferenceConfig``, ``/model/{model}/converse`` or
``/converse-stream``, signed with SigV4). Converse's answer and its AWS event stream come back the same way:
text, reasoning (``thought: true`` parts), tool use (``functionCall`` parts whose ``id`` is Bedrock's
``toolUseId``, sent back in ``functionResponse.id``), stop reasons and usage. Bedrock's errors keep their
status and AWS's message, in Google's shape.
"""

from __future__ import annotations

from tokenvoy.extproc.translate.chained import chained
from tokenvoy.extproc.translate.gemini_to_openai import GeminiToOpenAI
from tokenvoy.extproc.translate.openai_to_bedrock import OpenAIToBedrock

GeminiToBedrock = chained(GeminiToOpenAI, OpenAIToBedrock)

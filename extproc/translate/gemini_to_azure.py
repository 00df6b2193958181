"""Gemini API client → Azure OpenAI backend (``schema.name: AzureOpenAI``).

Azure speaks OpenAI's Chat Completions, so this is :class:`GeminiToOpenAI` (the whole mapping is in
:mod:`gemini_to_openai`) with Azure's path, as in :mod:`openai_to_azure`:
``{prefix}/openai/deployments/{deployment}/chat/completions?api-version={version}``, the deployment being
the model after ``modelNameOverride``; the key goes in ``api-key`` (an ``AzureAPIKey`` policy). Azure's
filter results and its opening stream chunk without choices have no place in a Gemini answer and are
left out; its errors reach the client in Google's shape with their status.
"""

from __future__ import annotations

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.gemini_to_openai import GeminiToOpenAI
from tokenvoy.extproc.translate.openai_to_azure import azure_path


class GeminiToAzure(GeminiToOpenAI):
    def upstream_path(self, backend: Backend, model: str) -> str:
        return azure_path(backend, model, "chat/completions")

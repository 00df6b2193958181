"""Anthropic Messages client → Azure OpenAI backend (``schema.name: AzureOpenAI``).

Azure speaks OpenAI's Chat Completions, so this is :class:`AnthropicToOpenAI` (the whole mapping is in
:mod:`anthropic_to_openai`) with Azure's differences, as in :mod:`openai_to_azure`:

* the path is ``{prefix}/openai/deployments/{deployment}/chat/completions?api-version={version}``, the
  deployment being the model after ``modelNameOverride`` (Azure routes on the path);
* the key goes in the ``api-key`` header (an ``AzureAPIKey`` policy);
* Azure's extra answer fields (``prompt_filter_results``, ``content_filter_results``) and its opening stream
  chunk with empty ``choices`` are not part of an Anthropic message and are left out; its errors
  (``{"error": {"code": "DeploymentNotFound", "message": …}}``) reach the client in Anthropic's error shape
  with their status, like any OpenAI error.
"""

from __future__ import annotations

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.anthropic_to_openai import AnthropicToOpenAI
from tokenvoy.extproc.translate.base import ClientRequest, UpstreamRequest
from tokenvoy.extproc.translate.openai_to_azure import azure_path


class AnthropicToAzure(AnthropicToOpenAI):
    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        upstream = super().translate_request(request, backend, model)
        upstream.path = azure_path(backend, model, "chat/completions")
        return upstream

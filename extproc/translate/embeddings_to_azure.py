"""OpenAI Embeddings client → Azure OpenAI backend: the OpenAI pass-through with Azure's path,
``{prefix}/openai/deployments/{deployment}/embeddings?api-version={version}`` (deployment = the model
after ``modelNameOverride``; version as for chat, see ``openai_to_azure.py``). Azure answers in OpenAI's
embeddings shape and error envelope."""

from __future__ import annotations

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.embeddings_to_openai import EmbeddingsToOpenAI
from tokenvoy.extproc.translate.openai_to_azure import azure_path


class EmbeddingsToAzure(EmbeddingsToOpenAI):
    def upstream_path(self, backend: Backend, model: str) -> str:
        return azure_path(backend, model, "embeddings")

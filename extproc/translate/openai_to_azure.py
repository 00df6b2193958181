"""OpenAI Chat Completions client → Azure OpenAI backend (``schema.name: AzureOpenAI``).

Azure speaks OpenAI's wire format, so this is :class:`OpenAIToOpenAI` (model override, forced
``stream_options.include_usage``, usage read from body or stream) with Azure's path:

* ``{prefix}/openai/deployments/{deployment}/chat/completions?api-version={version}``. The deployment is
  the model after ``modelNameOverride`` (Azure routes on the path and ignores the body's ``model``); the
  version is the AIServiceBackend's ``spec.schema.version``, else :data:`DEFAULT_API_VERSION`. The prefix
  is ``""`` unless the AIServiceBackend sets one (e.g. an APIM front door's ``/my-apim``).
* The key goes in the ``api-key`` header (an ``AzureAPIKey`` policy; ``runtime.py``).
* Answers: Azure adds ``prompt_filter_results``/``content_filter_results`` and opens a stream with a
  chunk whose ``choices`` is empty; both go to the client unchanged, only a usage chunk the client did
  not ask for is taken out. Azure's errors (``{"error": {"code": "DeploymentNotFound", "message": …}}``)
  are already OpenAI's error envelope and pass through with their status.
"""

from __future__ import annotations

from urllib.parse import quote

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.openai_to_openai import OpenAIToOpenAI

# The API version sent when the AIServiceBackend names none: a version that has every Chat Completions
# feature clients send today (tools, stream_options.include_usage, max_completion_tokens).
DEFAULT_API_VERSION = "2025-01-01-preview"


def azure_path(backend: Backend, deployment: str, operation: str) -> str:
    """``{prefix}/openai/deployments/{deployment}/{operation}?api-version={version}``."""
    version = backend.schema_version or DEFAULT_API_VERSION
    return (
        f"{backend.path_prefix}/openai/deployments/{quote(deployment, safe='')}/{operation}"
        f"?api-version={quote(version, safe='')}"
    )


class OpenAIToAzure(OpenAIToOpenAI):
    def upstream_path(self, backend: Backend, model: str) -> str:
        return azure_path(backend, model, "chat/completions")

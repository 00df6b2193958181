"""OpenAI legacy Completions client (``POST /v1/completions``) → OpenAI-schema backend: a pass-through.

The same wire handling as chat (:class:`OpenAIToOpenAI`): the model override and, when costs are
configured, ``stream_options.include_usage`` are the only request edits; the usage is read from the body
or from the stream's usage chunk (``choices: []``), which is taken out again when the client did not ask
for it; ``data: [DONE]`` and every other event reach the client unchanged. Only the path
(``{prefix}/completions``) and where the answer text sits (``choices[0].text``) differ.
"""

from __future__ import annotations

from typing import Any

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.openai_to_openai import OpenAIToOpenAI

COMPLETIONS_PATH = "/completions"


class CompletionsToOpenAI(OpenAIToOpenAI):
    def upstream_path(self, backend: Backend, model: str) -> str:
        return backend.path_prefix + COMPLETIONS_PATH

    def _capture_text(self, payload: dict[str, Any]) -> None:
        choices = payload.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            text = choices[0].get("text")
            if isinstance(text, str):
                self.answer.add(text)

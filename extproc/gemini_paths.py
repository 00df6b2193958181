"""Google's Gemini API as a client API: which call a path is (``/v1beta/models/{model}:{method}``).

gemini-cli and the ``google-genai`` SDKs put the model and the method in the path, not in the body:
``POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse``. The router reads both here (pure, no
I/O), routes on the model as it routes on a body's ``model``, and answers errors in Google's shape for
every path under :data:`GEMINI_PREFIXES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from tokenvoy.apis.client_apis import FAMILIES, GEMINI_CALL_PREFIXES, GEMINI_METHODS, ClientAPI, Family
from tokenvoy.extproc.errors import GatewayError

# The API versions the SDKs call: v1beta (their default, and gemini-cli's) and v1.
GEMINI_PREFIXES = GEMINI_CALL_PREFIXES
GEMINI_ROOTS = FAMILIES[Family.GOOGLE].roots  # errors on any path under these are in Google's shape
METHODS = GEMINI_METHODS  # `:method` → (client API, whether it streams), from the client APIs' specs


@dataclass(frozen=True, slots=True)
class GeminiCall:
    api: ClientAPI
    model: str  # from the path, without the ``models/`` resource prefix
    method: str
    stream: bool


def is_gemini_path(path: str) -> bool:
    """Whether errors on ``path`` (no query) are answered in Google's shape."""
    return path.startswith(GEMINI_ROOTS) or (path.startswith(GEMINI_PREFIXES) and ":" in path)


def gemini_call(target: str) -> GeminiCall | None:
    """The Gemini call of a request target (path and query), None if the path is not one; raises
    ``GatewayError`` (400/404) for a Gemini path the gateway cannot serve, naming why."""
    path, _, query = target.partition("?")
    prefix = next((p for p in GEMINI_PREFIXES if path.startswith(p)), None)
    if prefix is None:
        return None
    name, colon, method = path[len(prefix) :].rpartition(":")
    if not colon:
        return None
    model = unquote(name)
    if not model or "/" in model:
        raise GatewayError(404, f"no model in the path {path!r}: expected {prefix}{{model}}:{method}")
    served = METHODS.get(method)
    if served is None:
        raise GatewayError(
            404, f"unknown method {method!r} in {path!r}: tokenvoy serves {', '.join(':' + m for m in METHODS)}"
        )
    api, stream = served
    if stream and "sse" not in parse_qs(query).get("alt", ()):
        raise GatewayError(
            400,
            f"{path} streams only as server-sent events: add ?alt=sse (as gemini-cli and the google-genai SDKs do)",
        )
    return GeminiCall(api, model, method, stream)

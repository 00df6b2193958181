"""Envoy's own replies in the client API's error shape: HttpConnectionManager ``local_reply_config``.

Envoy answers some requests itself: a body over the buffer limit (413), an invalid path (400), a provider
that cannot be reached (503) or answers something that is not HTTP (502), a budget exceeded (429), extproc
down (500). Left alone, those replies are plain text or empty; an SDK then shows "unexpected response".
Each mapper below gives one of them a JSON error body in the shape of the API the client called (the API
family's spec in ``tokenvoy/apis/client_apis.py``, which extproc's own errors read too): OpenAI's
``{"type":"error","error":{"type","code","message"}}``, or Anthropic's ``{"type":"error","error":{"type",
"message"}}`` for ``/anthropic/...`` clients, or Google's ``{"error":{"code","message","status"}}`` for
Gemini API clients (``/v1beta/...``, ``/v1/models/{model}:{method}``). extproc's own replies (code
details ``tokenvoy…``) are already in shape and match no mapper.

Mappers are evaluated for local replies only (never for a provider's answer), first match wins.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import betterproto2

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.accesslog.v3 import (
        AccessLogFilter,
        AndFilter,
        ExtensionFilter,
        ResponseFlagFilter,
    )
    from envoy_data_plane.envoy.config.core.v3 import SubstitutionFormatString
    from envoy_data_plane.envoy.extensions.access_loggers.filters.cel.v3 import ExpressionFilter
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        LocalReplyConfig,
        ResponseMapper,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage
    from envoy_data_plane.google.protobuf import Struct

from tokenvoy.apis.client_apis import FAMILIES, GEMINI_CALL_PREFIXES, Family
from tokenvoy.contract import AI_GATEWAY_METADATA_NAMESPACE, MAX_BODY_BYTES, ORIGINAL_PATH_KEY

_LIMIT = f"{MAX_BODY_BYTES // (1024 * 1024)} MiB ({MAX_BODY_BYTES} bytes)"


@dataclass(frozen=True)
class Reply:
    """One of Envoy's own replies: when it applies, its status and what it tells the client."""

    filter: AccessLogFilter
    status: int
    openai_type: str
    message: str


def _any(message: betterproto2.Message) -> AnyMessage:
    return AnyMessage.pack(message)


def _cel(expression: str) -> AccessLogFilter:
    cel = ExpressionFilter(expression=expression)
    return AccessLogFilter(
        extension_filter=ExtensionFilter(name="envoy.access_loggers.extension_filters.cel", typed_config=_any(cel))
    )


def _flags(*flags: str) -> AccessLogFilter:
    return AccessLogFilter(response_flag_filter=ResponseFlagFilter(flags=list(flags)))


def _details(*details: str) -> AccessLogFilter:
    return _cel(" || ".join(f"response.code_details == '{detail}'" for detail in details))


def _envoys(status: int) -> AccessLogFilter:
    """Any other reply of Envoy's with this status (extproc's own replies carry details ``tokenvoy…``)."""
    return _cel(f"response.code == {status} && !response.code_details.startsWith('tokenvoy')")


def replies() -> list[Reply]:
    """The specific replies first, then one catch-all per status Envoy answers with."""
    return [
        # Envoy answers an empty 500 when extproc is unreachable or fails; say what happened instead.
        Reply(
            _cel("response.code_details.startsWith('ext_proc_error')"),
            500,
            "gateway_unavailable",
            "the tokenvoy extproc service is unavailable or failed",
        ),
        Reply(
            _flags("RL"),
            429,
            "rate_limit_exceeded",
            "budget exceeded for this client (tokens, USD or requests in flight); retry after the reset",
        ),
        Reply(
            _details("request_payload_too_large"),
            413,
            "request_too_large",
            f"the request body is larger than the gateway's limit of {_LIMIT}",
        ),
        Reply(
            _details("response_payload_too_large"),
            502,
            "upstream_answer_too_large",
            f"the LLM provider's answer is larger than the gateway's limit of {_LIMIT}",
        ),
        Reply(
            _flags("UPE"),
            502,
            "upstream_protocol_error",
            "the LLM provider's answer is not valid HTTP: %RESPONSE_CODE_DETAILS%",
        ),
        Reply(
            _flags("UF", "UH", "URX", "UO", "UC"),
            503,
            "upstream_unavailable",
            "the LLM provider could not be reached: %RESPONSE_CODE_DETAILS%",
        ),
        Reply(_flags("UT"), 504, "upstream_timeout", "the LLM provider did not answer in time"),
        Reply(
            _details("path_normalization_failed"),
            400,
            "invalid_request_error",
            "the request path is not valid (a `#` fragment, or characters a path may not hold): %REQ(:PATH)%",
        ),
        # Client authentication (docs/auth.md): Envoy's api_key_auth and jwt_authn refuse before extproc.
        Reply(
            _details("missing_api_key", "unknown_api_key"),
            401,
            "authentication_error",
            "missing or unknown API key: send the key the gateway gave you as `Authorization: Bearer <key>` "
            "or `x-api-key: <key>` (%RESPONSE_CODE_DETAILS%)",
        ),
        Reply(
            _envoys(401),
            401,
            "authentication_error",
            "the client is not authenticated: %RESPONSE_CODE_DETAILS%",
        ),
        Reply(_envoys(403), 403, "permission_error", "the client is not allowed: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(400), 400, "invalid_request_error", "the request is not valid HTTP: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(404), 404, "not_found_error", "no route serves this request: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(408), 408, "request_timeout", "the request did not arrive in time: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(413), 413, "request_too_large", f"the request is larger than the gateway's limit of {_LIMIT}"),
        Reply(
            _envoys(431),
            431,
            "invalid_request_error",
            "the request's headers are too large: %RESPONSE_CODE_DETAILS%",
        ),
        Reply(_envoys(500), 500, "api_error", "the gateway failed: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(502), 502, "bad_gateway", "the LLM provider's answer cannot be used: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(503), 503, "unavailable", "the gateway cannot serve this request now: %RESPONSE_CODE_DETAILS%"),
        Reply(_envoys(504), 504, "upstream_timeout", "the LLM provider did not answer in time"),
    ]


def _json_body(body: dict[str, Any]) -> SubstitutionFormatString:
    return SubstitutionFormatString(json_format=Struct.from_dict(body), content_type="application/json")


_NAMESPACE = f"metadata.filter_metadata['{AI_GATEWAY_METADATA_NAMESPACE}']"
_RECORDED = f"'{AI_GATEWAY_METADATA_NAMESPACE}' in metadata.filter_metadata && '{ORIGINAL_PATH_KEY}' in {_NAMESPACE}"
# The path the client called: the one extproc recorded, else (extproc never saw the request: a body over
# the limit, extproc down, a path Envoy refuses) ``:path``, which nothing rewrote then.
_CLIENT_PATH = f"({_RECORDED} ? {_NAMESPACE}['{ORIGINAL_PATH_KEY}'] : request.path)"


def _family_client(family: Family) -> str:
    """CEL: the client called a path of this API family (its roots; Google's call paths outside them too)."""
    roots = FAMILIES[family].roots
    tests = [f"{_CLIENT_PATH}.startsWith('{root}')" for root in roots]
    if family is Family.GOOGLE:
        calls = (prefix for prefix in GEMINI_CALL_PREFIXES if not prefix.startswith(roots))
        tests += [f"({_CLIENT_PATH}.startsWith('{prefix}') && {_CLIENT_PATH}.contains(':'))" for prefix in calls]
    return " || ".join(tests)


ANTHROPIC_CLIENT = _family_client(Family.ANTHROPIC)
GEMINI_CLIENT = _family_client(Family.GOOGLE)


def _mapper(family: Family, reply: Reply, client: str | None) -> ResponseMapper:
    """The reply's body in the family's shape (Google's ``code`` is Envoy's ``%RESPONSE_CODE%``: a value that is
    one command operator keeps its type in Envoy's JSON format, so it is a JSON number, where a number in the
    Struct would be written as the string "429.0")."""
    body = FAMILIES[family].local_reply_document(reply.status, reply.openai_type, reply.message)
    matches = (
        reply.filter if client is None else AccessLogFilter(and_filter=AndFilter(filters=[_cel(client), reply.filter]))
    )
    return ResponseMapper(filter=matches, status_code=reply.status, body_format_override=_json_body(body))


def gemini_mapper(reply: Reply) -> ResponseMapper:
    return _mapper(Family.GOOGLE, reply, GEMINI_CLIENT)


def openai_mapper(reply: Reply) -> ResponseMapper:
    return _mapper(Family.OPENAI, reply, None)


def anthropic_mapper(reply: Reply) -> ResponseMapper:
    return _mapper(Family.ANTHROPIC, reply, ANTHROPIC_CLIENT)


def local_reply_config() -> LocalReplyConfig:
    """Every reply in the three shapes; the Anthropic- and Google-shaped variants go first (first match wins)."""
    table = replies()
    return LocalReplyConfig(
        mappers=[
            *(anthropic_mapper(r) for r in table),
            *(gemini_mapper(r) for r in table),
            *(openai_mapper(r) for r in table),
        ]
    )

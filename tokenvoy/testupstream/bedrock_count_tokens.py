"""Bedrock Runtime ``CountTokens`` for the fake provider: ``POST …/model/{modelId}/count-tokens``.

From AWS's API reference (CountTokens, CountTokensInput, InvokeModelTokensRequest, ConverseTokensRequest):

* the body is ``{"input": {...}}`` with exactly one member: ``invokeModel`` (``{"body": "<base64 of an
  InvokeModel body>"}``, checked as InvokeModel checks it: :func:`anthropic_clouds.invoke_body`) or ``converse``
  (``messages``, ``system``, ``toolConfig``, ``additionalModelRequestFields``, checked as Converse checks them);
* the answer is ``{"inputTokens": N}``, N counted as the fake's InvokeModel and Converse report the input
  (cache reads included);
* only some models count: here the bare Claude foundation-model ids (``anthropic.…``); others (Amazon Nova,
  cross-region inference profiles such as ``us.anthropic.…``) get 400 ``ValidationException`` "The provided
  model doesn't support counting tokens.", as Bedrock answers;
* errors are Bedrock's: ``{"message"}`` with the exception in ``x-amzn-errortype``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

import orjson

from tokenvoy.testupstream import anthropic_clouds, anthropic_messages, bedrock_converse
from tokenvoy.testupstream.http import Request, Response

if TYPE_CHECKING:
    from tokenvoy.testupstream.server import App

_PATH = re.compile(r"/model/([^/]+)/count-tokens$")
_CONVERSE_FIELDS = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})
_HEADERS = {"x-api-key": "cloud-credentials", "anthropic-version": "2023-06-01"}
UNSUPPORTED_MODEL = "The provided model doesn't support counting tokens."


def matches(path: str) -> bool:
    return _PATH.search(path) is not None


def _invalid(message: str) -> Response:
    return anthropic_clouds.bedrock_error(400, message)


def handle(request: Request, app: App, chunk_delay: float) -> Response:
    match = _PATH.search(request.path)
    assert match is not None  # the route matched it
    model = unquote(match.group(1))
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or set(body) != {"input"} or not isinstance(body["input"], dict):
        return _invalid('Malformed input request: the body must be {"input": {...}}, please reformat it.')
    members = body["input"]
    if len(members) != 1 or next(iter(members)) not in ("invokeModel", "converse"):
        return _invalid("Malformed input request: `input` must have exactly one of invokeModel, converse.")
    if not model.startswith("anthropic."):
        return _invalid(UNSUPPORTED_MODEL)
    if "invokeModel" in members:
        return _count_invoke(members["invokeModel"], model)
    return _count_converse(members["converse"])


def _count_invoke(member: object, model: str) -> Response:
    encoded = member.get("body") if isinstance(member, dict) else None
    if not isinstance(encoded, str) or set(member) != {"body"}:  # type: ignore[arg-type]
        return _invalid("Malformed input request: invokeModel takes one member, body (base64).")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return _invalid("Malformed input request: invokeModel.body is not valid base64.")
    checked = anthropic_clouds.invoke_body(raw, model, stream=False)
    if isinstance(checked, Response):
        return checked
    reply = anthropic_messages.create_message(orjson.dumps(checked), _HEADERS, message_id="msg_bdrk_count")
    if reply.status != 200:
        error = (reply.body or {}).get("error") or {}
        return anthropic_clouds.bedrock_error(reply.status, str(error.get("message", "the request is invalid")))
    usage = (reply.body or {}).get("usage") or {}
    return _answer(usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0))


def _count_converse(member: object) -> Response:
    if not isinstance(member, dict):
        return _invalid("Malformed input request: converse must be an object.")
    extra = sorted(set(member) - _CONVERSE_FIELDS)
    if extra:
        return _invalid(f"Malformed input request: #/converse: extraneous key [{extra[0]}] is not permitted")
    reply = bedrock_converse.converse(orjson.dumps(member), stream=False)
    if reply.status != 200 or reply.body is None:
        return anthropic_clouds.bedrock_error(reply.status, str((reply.body or {}).get("message", "invalid")))
    usage = reply.body["usage"]
    return _answer(usage["inputTokens"] + usage["cacheReadInputTokens"])


def _answer(tokens: int) -> Response:
    return Response(200, orjson.dumps({"inputTokens": tokens}), "application/json")

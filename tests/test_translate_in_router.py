"""``extproc --translate-in-router`` (Envoy Gateway's native mode): the router stream makes the upstream edit.

Envoy Gateway gives extproc only a router-level ext_proc, so with the flag the request-body answer carries
what the upstream filter would send: the provider's path and body, the credential (SigV4 over the final path
and body, for the Backend's hostname that Envoy sets as Host), a ``content-length`` for the new body, and the
``x-ai-eg-model`` header with a route cache clear so Envoy routes by it.
"""

from __future__ import annotations

import orjson

from tests.test_credentials_config import _headers, _with_identity, config
from tokenvoy.config.loader import load_text
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.server import build_runtime
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.testupstream import aws_auth

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _router_body(text: str, client_headers: dict[str, str], translate_in_router: bool) -> ep.CommonResponse:
    runtime = build_runtime(load_text(text))
    router = RouterStream(runtime, RequestRegistry(), None, None, translate_in_router)
    headers = {":path": "/v1/chat/completions", ":method": "POST", ":authority": "gateway:1975", **client_headers}
    router.handle(_with_identity(ep.ProcessingRequest(request_headers=_headers(headers))))
    body = ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True))
    return router.handle(body).request_body.response


def _set(common: ep.CommonResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


def test_a_bedrock_request_is_translated_and_signed_in_the_router_stream() -> None:
    credentials = (
        f"[default]\naws_access_key_id = {aws_auth.EXAMPLE_ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {aws_auth.EXAMPLE_SECRET_ACCESS_KEY}\n"
    )
    spec = {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "s"}}}
    text = config("AWSCredentials", "awsCredentials", spec, {"credentials": credentials}, "{name: AWSBedrock}")
    common = _router_body(text, {"authorization": "Bearer client-key"}, translate_in_router=True)
    set_headers = _set(common)
    assert set_headers[":path"] == "/model/m/converse"
    assert common.status == ep.CommonResponse.CONTINUE and common.clear_route_cache
    assert set_headers["x-ai-eg-model"] == "m"
    body = common.body_mutation.body
    assert orjson.loads(body)["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]  # Converse's shape
    assert set_headers["content-length"] == str(len(body))
    sent = {**set_headers, "host": "provider.example.com"}  # Host: the Backend's hostname (EG's host rewrite)
    verdict = aws_auth.verify("POST", set_headers[":path"], sent, body, aws_auth.known_keys({}))
    assert isinstance(verdict, aws_auth.Verified), verdict


def test_without_the_flag_the_router_only_routes_and_leaves_the_edit_to_the_upstream_filter() -> None:
    text = config("APIKey", "apiKey", {"secretRef": {"name": "s"}}, {"apiKey": "sk-gateway"}, "{name: OpenAI}")
    routed = _router_body(text, {}, translate_in_router=False)
    assert not routed.HasField("body_mutation") and "authorization" not in _set(routed)
    translated = _router_body(text, {"authorization": "Bearer client-key"}, translate_in_router=True)
    assert _set(translated)["authorization"] == "Bearer sk-gateway"
    assert _set(translated)["content-length"] == str(len(orjson.dumps(BODY)))  # body unchanged: its length

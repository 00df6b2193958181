"""A request's state carried in dynamic metadata (``extproc --stateless``, ``tokenvoy run --extproc-workers``).

The router stream and each upstream attempt run here on runtimes of their own (as in separate processes,
sharing no memory), with a small stand-in for what Envoy does between them: it merges each answer's dynamic
metadata namespace by namespace, key by key, forwards the namespaces a filter reads, and edits the request's
one header map with every attempt's mutations. Every attempt's edit, and the client's translated answer,
must be what the in-process registry path produces for the same request.
"""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import struct_pb2

from tokenvoy.apis.client_apis import ClientAPI
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.contract import (
    AI_GATEWAY_METADATA_NAMESPACE,
    ATTEMPT_METADATA_NAMESPACE,
    ENDPOINT_ATTRIBUTE,
    EXT_PROC_FILTER,
    REQUEST_METADATA_NAMESPACE,
)
from tokenvoy.extproc.carried import (
    CarriedAttempt,
    CarriedRequest,
    client_headers,
    read_attempt,
    read_request,
    write_attempt,
    write_request,
)
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime, build_runtime
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.extproc.upstream_carried import CarriedUpstreamStream
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

ANTHROPIC_ENDPOINT = "default/rule/1/ref/0/fake-anthropic"
OPENAI_ENDPOINT = "default/rule/0/ref/0/fake"
CLIENT_HEADERS = {
    ":path": "/anthropic/v1/messages",
    ":method": "POST",
    ":authority": "gateway:1975",
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": "the-clients-key",
}
BODY = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "Say hello"}]}
OPENAI_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _runtime() -> Runtime:
    return build_runtime(load_text(default_config_yaml({}, showcase=True), "<default>"))


def _forwarded(namespaces: dict[str, struct_pb2.Struct]) -> ep.ProcessingRequest:
    message = ep.ProcessingRequest()
    for name, struct in namespaces.items():
        message.metadata_context.filter_metadata[name].CopyFrom(struct)
    return message


# ---- the metadata round trip ---------------------------------------------------------------------------------


def test_the_request_namespace_reads_back_what_was_written() -> None:
    carried = CarriedRequest(
        ClientAPI.GEMINI_GENERATE,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "gemini-2.5-flash",
        True,
        True,
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    response = ep.ProcessingResponse()
    response.dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value.fields["x"].number_value = 1
    write_request(response, carried)
    assert response.dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value.fields["x"].number_value == 1
    struct = response.dynamic_metadata.fields[REQUEST_METADATA_NAMESPACE].struct_value
    assert read_request(_forwarded({REQUEST_METADATA_NAMESPACE: struct})) == carried


def test_a_request_without_the_namespace_or_with_an_unknown_api_reads_as_none() -> None:
    assert read_request(ep.ProcessingRequest()) is None
    struct = struct_pb2.Struct()
    struct.update({"api": "no.such.api", "path": "/v1/chat/completions", "model": "m"})
    assert read_request(_forwarded({REQUEST_METADATA_NAMESPACE: struct})) is None


def test_the_attempt_namespace_keeps_headers_the_client_did_not_send_as_absent() -> None:
    attempt = CarriedAttempt(OPENAI_ENDPOINT, {":path": "/v1/messages", "authorization": None})
    response = ep.ProcessingResponse()
    write_attempt(response, attempt)
    struct = response.dynamic_metadata.fields[ATTEMPT_METADATA_NAMESPACE].struct_value
    assert read_attempt(_forwarded({ATTEMPT_METADATA_NAMESPACE: struct})) == attempt
    assert read_attempt(ep.ProcessingRequest()) is None


def test_an_attempt_that_answered_itself_still_writes_an_empty_originals_struct() -> None:
    response = ep.ProcessingResponse()
    write_attempt(response, CarriedAttempt("", {}))
    fields = response.dynamic_metadata.fields[ATTEMPT_METADATA_NAMESPACE].struct_value.fields
    assert fields["originals"].WhichOneof("kind") == "struct_value"  # replaces the previous attempt's (merge by key)
    assert fields["endpoint"].string_value == ""


def test_client_headers_undo_what_earlier_attempts_changed() -> None:
    seen = {":path": "/v1/chat/completions", "authorization": "Bearer gateway", "x-user-id": "alice"}
    originals = {":path": "/anthropic/v1/messages", "authorization": None}
    assert client_headers(seen, originals) == {":path": "/anthropic/v1/messages", "x-user-id": "alice"}
    assert client_headers(seen, {}) is seen


# ---- router and attempts in separate "processes" --------------------------------------------------------------


def _headers_message(values: dict[str, str]) -> ep.ProcessingRequest:
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    )
    return ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=header_map))


def _identity(message: ep.ProcessingRequest, endpoint: str | None = None) -> ep.ProcessingRequest:
    attributes = message.attributes[EXT_PROC_FILTER]
    attributes.update({"connection.id": 7, "request.time": "2026-12-04T12:00:00.000001+00:00", "request.id": "r-1"})
    if endpoint is not None:
        attributes.update({ENDPOINT_ATTRIBUTE: endpoint})
    return message


class FakeEnvoy:
    """What Envoy keeps between the filters of one request: its header map and its dynamic metadata."""

    def __init__(self) -> None:
        self.headers = dict(CLIENT_HEADERS)
        self.metadata: dict[str, struct_pb2.Struct] = {}

    def apply(self, common: ep.CommonResponse, response: ep.ProcessingResponse) -> None:
        for option in common.header_mutation.set_headers:
            self.headers[option.header.key] = option.header.raw_value.decode()
        for name in common.header_mutation.remove_headers:
            self.headers.pop(name, None)
        for namespace, value in response.dynamic_metadata.fields.items():
            # Envoy merges a namespace key by key: a key's value is replaced whole
            self.metadata.setdefault(namespace, struct_pb2.Struct()).MergeFrom(value.struct_value)

    def forward(self, message: ep.ProcessingRequest, *namespaces: str) -> ep.ProcessingRequest:
        for namespace in namespaces:
            if namespace in self.metadata:
                message.metadata_context.filter_metadata[namespace].CopyFrom(self.metadata[namespace])
        return message


def _edit(common: ep.CommonResponse) -> tuple[dict[str, str], set[str], bytes | None]:
    sets = {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}
    body = common.body_mutation.body if common.HasField("body_mutation") else None
    return sets, set(common.header_mutation.remove_headers), body


def _stateless(endpoints: list[str]) -> tuple[list[tuple[dict[str, str], set[str], bytes | None]], bytes, FakeEnvoy]:
    envoy = FakeEnvoy()
    router = RouterStream(_runtime(), RequestRegistry(), stateless=True)
    router.handle(_headers_message(envoy.headers))
    reply = router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True)))
    envoy.apply(reply.request_body.response, reply)
    edits = []
    for endpoint in endpoints:
        upstream = CarriedUpstreamStream(_runtime())  # another process: nothing shared with the router
        headers = _identity(_headers_message(envoy.headers), endpoint)
        envoy.forward(headers, REQUEST_METADATA_NAMESPACE, ATTEMPT_METADATA_NAMESPACE)
        assert upstream.handle(headers).WhichOneof("response") == "request_headers" and not upstream.done
        body = envoy.forward(
            ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True)),
            REQUEST_METADATA_NAMESPACE,
            ATTEMPT_METADATA_NAMESPACE,
        )
        reply = upstream.handle(body)
        assert reply.WhichOneof("response") == "request_body" and upstream.done
        envoy.apply(reply.request_body.response, reply)
        edits.append(_edit(reply.request_body.response))
    answer = _answer(router, envoy.forward(ep.ProcessingRequest(), ATTEMPT_METADATA_NAMESPACE))
    return edits, answer, envoy


def _answer(router: RouterStream, response_headers: ep.ProcessingRequest) -> bytes:
    values = {":status": "200", "content-type": "application/json"}
    response_headers.response_headers.CopyFrom(_headers_message(values).request_headers)
    router.handle(response_headers)
    body = ep.ProcessingRequest(response_body=ep.HttpBody(body=orjson.dumps(OPENAI_ANSWER), end_of_stream=True))
    reply = router.handle(body)
    router.close()
    return reply.response_body.response.body_mutation.body


def _registry(endpoints: list[str]) -> tuple[list[tuple[dict[str, str], set[str], bytes | None]], bytes]:
    runtime, registry, headers = _runtime(), RequestRegistry(), dict(CLIENT_HEADERS)
    router = RouterStream(runtime, registry)
    router.handle(_identity(_headers_message(headers)))
    router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True)))
    edits = []
    for endpoint in endpoints:
        reply = UpstreamStream(runtime, registry).handle(_identity(_headers_message(headers), endpoint))
        common = reply.request_headers.response
        for option in common.header_mutation.set_headers:
            headers[option.header.key] = option.header.raw_value.decode()
        for name in common.header_mutation.remove_headers:
            headers.pop(name, None)
        edits.append(_edit(common))
    return edits, _answer(router, ep.ProcessingRequest())


@pytest.mark.parametrize(
    "endpoints",
    [[OPENAI_ENDPOINT], [ANTHROPIC_ENDPOINT], [ANTHROPIC_ENDPOINT, OPENAI_ENDPOINT]],
    ids=["translated", "passthrough", "fallback-to-another-schema"],
)
def test_every_attempt_and_the_answer_match_the_in_process_path(endpoints: list[str]) -> None:
    carried_edits, carried_answer, _ = _stateless(endpoints)
    registry_edits, registry_answer = _registry(endpoints)
    assert carried_edits == registry_edits
    assert carried_answer == registry_answer


def test_a_fallback_puts_the_clients_headers_back_and_the_router_translates_the_last_backends_answer() -> None:
    edits, answer, envoy = _stateless([ANTHROPIC_ENDPOINT, OPENAI_ENDPOINT])
    first, second = edits
    assert first[0][":path"] == "/v1/messages" and first[0]["x-api-key"] != "the-clients-key"  # the backend's key
    assert second[0][":path"] == "/v1/chat/completions"
    assert envoy.headers["x-api-key"] == "the-clients-key"  # the Anthropic backend's key does not reach OpenAI's
    assert orjson.loads(second[2] or b"")["messages"] == [{"role": "user", "content": "Say hello"}]  # OpenAI's shape
    message = orjson.loads(answer)
    assert message["type"] == "message" and message["content"] == [{"type": "text", "text": "Hello"}]
    assert message["usage"]["output_tokens"] == 1


def test_the_router_writes_the_answering_attempts_usage_and_backend_into_the_access_log_metadata() -> None:
    envoy = FakeEnvoy()
    router = RouterStream(_runtime(), RequestRegistry(), stateless=True)
    router.handle(_headers_message(envoy.headers))
    reply = router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True)))
    envoy.apply(reply.request_body.response, reply)
    upstream = CarriedUpstreamStream(_runtime())
    fields = (REQUEST_METADATA_NAMESPACE, ATTEMPT_METADATA_NAMESPACE)
    upstream.handle(envoy.forward(_identity(_headers_message(envoy.headers), OPENAI_ENDPOINT), *fields))
    body = ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True))
    reply = upstream.handle(envoy.forward(body, *fields))
    envoy.apply(reply.request_body.response, reply)
    headers = envoy.forward(ep.ProcessingRequest(), ATTEMPT_METADATA_NAMESPACE)
    headers.response_headers.CopyFrom(_headers_message({":status": "200"}).request_headers)
    router.handle(headers)
    end = ep.ProcessingRequest(response_body=ep.HttpBody(body=orjson.dumps(OPENAI_ANSWER), end_of_stream=True))
    written = router.handle(end).dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value.fields
    assert written["backend_name"].string_value == "fake"
    assert written["llm_output_token"].number_value == 1 and written["llm_input_token"].number_value == 3


def test_an_upstream_refusal_says_no_provider_answered() -> None:
    """An attempt that answers itself (here: no request metadata forwarded) leaves an empty endpoint, so the
    router does not translate that reply as if an earlier attempt's provider had sent it."""
    upstream = CarriedUpstreamStream(_runtime())
    reply = upstream.handle(_identity(_headers_message(dict(CLIENT_HEADERS)), OPENAI_ENDPOINT))
    assert reply.immediate_response.status.code == 500 and upstream.done
    assert b"tokenvoy.request" in reply.immediate_response.body
    fields = reply.dynamic_metadata.fields[ATTEMPT_METADATA_NAMESPACE].struct_value.fields
    assert fields["endpoint"].string_value == ""


def test_a_router_given_no_attempt_metadata_passes_the_answer_untranslated_and_charges_nothing() -> None:
    router = RouterStream(_runtime(), RequestRegistry(), stateless=True)
    router.handle(_headers_message(dict(CLIENT_HEADERS)))
    router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True)))
    assert _answer(router, ep.ProcessingRequest()) == b""  # no body mutation: the bytes go through as they are


def test_around_a_reload_the_router_finds_the_answering_endpoint_in_a_previous_config() -> None:
    """Envoy may route an attempt by the config before the router stream's: an endpoint only that one knows is
    still translated back (the endpoint id names its backend), not passed through untranslated."""
    current = build_runtime(load_text(default_config_yaml({}, showcase=False), "<default>"))  # no fake-anthropic
    assert ANTHROPIC_ENDPOINT not in current.endpoints
    answers = []
    for previous in ((), (_runtime(),)):
        router = RouterStream(current, RequestRegistry(), stateless=True, previous=previous)
        router.handle(_headers_message(dict(CLIENT_HEADERS)))
        router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(BODY), end_of_stream=True)))
        response = ep.ProcessingResponse()
        write_attempt(response, CarriedAttempt(ANTHROPIC_ENDPOINT, {}))
        struct = response.dynamic_metadata.fields[ATTEMPT_METADATA_NAMESPACE].struct_value
        headers = _forwarded({ATTEMPT_METADATA_NAMESPACE: struct})
        headers.response_headers.CopyFrom(_headers_message({":status": "200"}).request_headers)
        router.handle(headers)
        answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-4o-mini", "content": []}
        answer["usage"] = {"input_tokens": 3, "output_tokens": 1}
        end = ep.ProcessingRequest(response_body=ep.HttpBody(body=orjson.dumps(answer), end_of_stream=True))
        fields = router.handle(end).dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value.fields
        answers.append(fields)
    without, with_previous = answers
    assert "backend_name" not in without  # unknown endpoint: nothing to charge it to
    assert with_previous["backend_name"].string_value == "fake-anthropic"
    assert with_previous["llm_output_token"].number_value == 1

"""Compressed provider answers: the decoders (extproc/decoding.py) under any split of the bytes, the router
that decodes before a translator reads (extproc/router.py), and the fake provider's compression control.
The same through real Envoy and the official SDKs is tests/integration/test_compressed_answers.py."""

from __future__ import annotations

import base64
import gzip
import io
import itertools
import re
import zlib
from collections.abc import Callable

import brotli
import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.config.model import AI_GATEWAY_METADATA_NAMESPACE
from tokenvoy.contract import ENDPOINT_ATTRIBUTE
from tokenvoy.extproc.decoding import (
    MAX_DECODED,
    DecodeError,
    UnsupportedEncoding,
    decoder_for,
    is_zlib_header,
)
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.server import build_runtime
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.testupstream.http import Request, Response
from tokenvoy.testupstream.server import App

# -- compressors independent of the code under test (the standard library and brotli) --------------------


def _raw_deflate(data: bytes, level: int = 6) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,  # zlib-wrapped, as RFC 9110 specifies
    "deflate-raw": _raw_deflate,  # raw, as some servers send; labelled "deflate" on the wire
    "br": brotli.compress,
}
LABEL = {"gzip": "gzip", "deflate": "deflate", "deflate-raw": "deflate", "br": "br"}


def _flushed(coding: str, parts: list[bytes]) -> list[bytes]:
    """One compressed stream, flushed after every part (how a server streams compressed SSE), then its end."""
    if coding == "br":
        compressor = brotli.Compressor()
        return [compressor.process(p) + compressor.flush() for p in parts] + [compressor.finish()]
    wbits = {"gzip": 31, "deflate": 15, "deflate-raw": -15}[coding]
    z = zlib.compressobj(wbits=wbits)
    return [z.compress(p) + z.flush(zlib.Z_SYNC_FLUSH) for p in parts] + [z.flush()]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _decode(coding: str, pieces: list[bytes], limit: int = MAX_DECODED) -> bytes:
    decoder = decoder_for(LABEL.get(coding, coding), limit)
    assert decoder is not None
    out = [decoder.feed(piece) for piece in pieces]
    return b"".join(out) + decoder.finish()


PAYLOADS = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=3000).map(str.encode),
    st.tuples(st.binary(min_size=1, max_size=40), st.integers(1, 400)).map(lambda t: t[0] * t[1]),
)
SSE = (
    b'data: {"id":"c1","choices":[{"delta":{"content":"h\xc3\xa9llo"}}]}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
    b"data: [DONE]\n\n"
)


# -- the decoders ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(payload=PAYLOADS, coding=st.sampled_from(sorted(COMPRESS)), data=st.data())
def test_any_split_of_a_compressed_body_decodes_to_the_original(payload: bytes, coding: str, data) -> None:
    compressed = COMPRESS[coding](payload)
    cuts = data.draw(st.lists(st.integers(0, len(compressed)), max_size=12))
    assert _decode(coding, _split(compressed, cuts)) == payload


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.text(min_size=1, max_size=200).map(str.encode), min_size=1, max_size=8),
    coding=st.sampled_from(sorted(COMPRESS)),
    data=st.data(),
)
def test_a_flushed_stream_decodes_each_event_as_soon_as_its_bytes_arrive(events: list[bytes], coding: str, data):
    """Streamed SSE: what a flush sent is readable at once, wherever Envoy cuts the chunks after it."""
    flushed = _flushed(coding, events)
    decoder = decoder_for(LABEL[coding])
    assert decoder is not None
    for event, compressed in zip(events, flushed, strict=False):
        cuts = data.draw(st.lists(st.integers(0, len(compressed)), max_size=4))
        assert b"".join(decoder.feed(piece) for piece in _split(compressed, cuts)) == event
    assert decoder.feed(flushed[-1]) + decoder.finish() == b""


@settings(max_examples=150, deadline=None)
@given(
    members=st.lists(PAYLOADS, min_size=1, max_size=4),
    padding=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    data=st.data(),
)
def test_concatenated_gzip_members_with_zero_padding_decode_to_their_concatenation(members, padding, data) -> None:
    compressed = b"".join(gzip.compress(m) + b"\0" * pad for m, pad in zip(members, padding, strict=False))
    cuts = data.draw(st.lists(st.integers(0, len(compressed)), max_size=12))
    assert gzip.decompress(compressed) == b"".join(members)  # the standard library agrees
    assert _decode("gzip", _split(compressed, cuts)) == b"".join(members)


def _gzip_with_every_header_field(payload: bytes) -> bytes:
    """RFC 1952 with FHCRC, FEXTRA, FNAME and FCOMMENT set: the longest header a server may send."""
    extra = b"AP\x02\x00hi"
    header = b"\x1f\x8b\x08\x1e" + (1_700_000_000).to_bytes(4, "little") + b"\x00\x03"
    header += len(extra).to_bytes(2, "little") + extra + b"answer.json\x00" + b"made by a proxy\x00"
    header += (zlib.crc32(header) & 0xFFFF).to_bytes(2, "little")
    trailer = zlib.crc32(payload).to_bytes(4, "little") + len(payload).to_bytes(4, "little")
    return header + _raw_deflate(payload) + trailer


def test_every_two_way_split_and_a_byte_at_a_time_through_header_and_trailer() -> None:
    compressed = _gzip_with_every_header_field(SSE)
    assert gzip.decompress(compressed) == SSE
    for cut in range(len(compressed) + 1):
        assert _decode("gzip", [compressed[:cut], compressed[cut:]]) == SSE, cut
    for coding in COMPRESS:
        whole = COMPRESS[coding](SSE)
        assert _decode(coding, [whole[i : i + 1] for i in range(len(whole))]) == SSE, coding


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_every_truncation_is_an_error_not_a_short_answer(coding: str) -> None:
    whole = COMPRESS[coding](SSE)
    for cut in range(1, len(whole)):
        with pytest.raises(DecodeError, match=r"truncated|not valid"):
            _decode(coding, [whole[:cut]])


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_an_empty_body_is_an_empty_answer(coding: str) -> None:
    assert _decode(coding, [b""]) == b""


@pytest.mark.parametrize(
    ("coding", "body", "problem"),
    [
        ("gzip", b'{"id":"chatcmpl-1"}', "not valid gzip data"),
        ("gzip", b"\0" * 8, "not valid gzip data"),  # zero padding only counts after a member
        ("gzip", gzip.compress(SSE)[:-8] + b"\0\0\0\0" + gzip.compress(SSE)[-4:], "incorrect data check"),
        ("gzip", gzip.compress(SSE) + b"<html>", "not valid gzip data"),
        ("deflate", b'{"id":"chatcmpl-1"}', "not valid deflate data"),
        ("deflate", zlib.compress(SSE) + b"\n", "stray bytes after the end of the deflate data"),
        ("deflate-raw", _raw_deflate(SSE) + b"\n", "stray bytes after the end of the deflate data"),
        ("br", b'{"id":"chatcmpl-1"}', "not valid brotli data"),
        ("br", brotli.compress(SSE) + b"\n", "not valid brotli data"),
    ],
)
def test_corrupt_data_is_an_error_naming_the_problem(coding: str, body: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        _decode(coding, _split(body, [3, 11]))


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_one_body_message_may_decode_to_at_most_the_limit(coding: str) -> None:
    assert _decode(coding, [COMPRESS[coding](b"a" * 1000)], limit=1000) == b"a" * 1000
    with pytest.raises(DecodeError, match="more than 1000 bytes"):
        _decode(coding, [COMPRESS[coding](b"a" * 1001)], limit=1000)
    # the limit is per message: a long stream is fine as long as no single chunk explodes
    parts = _flushed(coding, [b"a" * 800] * 5)
    assert _decode(coding, parts, limit=1000) == b"a" * 4000


def test_a_decompression_bomb_is_refused_at_the_default_limit() -> None:
    bomb = brotli.compress(b"\0" * (MAX_DECODED + 1), quality=1)
    assert len(bomb) < 100_000
    with pytest.raises(DecodeError, match="more than"):
        _decode("br", [bomb])


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), level=st.integers(0, 9), wbits=st.integers(9, 15))
def test_zlib_and_raw_deflate_are_told_apart_by_their_first_two_bytes(payload: bytes, level: int, wbits: int) -> None:
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits)
    wrapped = compressor.compress(payload) + compressor.flush()
    raw = _raw_deflate(payload, level)
    assert is_zlib_header(wrapped[0], wrapped[1])
    assert not is_zlib_header(raw[0], raw[1])


def test_content_encoding_values() -> None:
    assert decoder_for("") is None
    assert decoder_for("identity") is None
    assert decoder_for(" Identity , ") is None
    assert decoder_for("GZIP").coding == "gzip"  # type: ignore[union-attr]
    assert _decode("x-gzip", [gzip.compress(SSE)]) == SSE  # RFC 9110: x-gzip is gzip
    stacked = brotli.compress(gzip.compress(SSE))  # gzip applied first, then br
    assert _decode("gzip, br", _split(stacked, [1, 5, 9])) == SSE
    assert _decode("deflate, identity, gzip", [gzip.compress(zlib.compress(SSE))]) == SSE
    for value, unsupported in [("zstd", "zstd"), ("compress", "compress"), ("gzip, zstd", "zstd")]:
        with pytest.raises(UnsupportedEncoding) as caught:
            decoder_for(value)
        assert caught.value.coding == unsupported


@settings(max_examples=100, deadline=None)
@given(payload=PAYLOADS, data=st.data())
def test_stacked_codings_survive_any_split(payload: bytes, data) -> None:
    stacked = brotli.compress(gzip.compress(payload))
    cuts = data.draw(st.lists(st.integers(0, len(stacked)), max_size=8))
    assert _decode("gzip, br", _split(stacked, cuts)) == payload


# -- the fake provider's x-testupstream-content-encoding -----------------------------------------------------


class _App(App):
    """The fake provider with a fixed clock, so two answers to one request are byte for byte the same."""

    @staticmethod
    def now() -> int:
        return 1_795_000_000


def _fake(path: str, body: dict | bytes, **headers: str) -> Response:
    names = {k.replace("_", "-"): v for k, v in headers.items()}
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    names = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "k", **names}
    request = Request("POST", path, path, "", "HTTP/1.1", names, raw, True)
    response = _App()(request)
    assert isinstance(response, Response)
    return response


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
MESSAGES = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "deflate-raw": lambda data: zlib.decompress(data, -zlib.MAX_WBITS),
    "br": brotli.decompress,
}


@pytest.mark.parametrize("coding", sorted(COMPRESS))
@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)])
def test_fake_provider_compresses_any_routes_answer(coding: str, path: str, body: dict) -> None:
    plain = _fake(path, body)
    assert plain.status == 200
    compressed = _fake(path, body, x_testupstream_content_encoding=coding)
    assert ("content-encoding", LABEL[coding]) in compressed.headers
    assert DECOMPRESS[coding](compressed.body) == plain.body
    error = _fake(path, body, x_testupstream_content_encoding=coding, x_testupstream_status="429")
    assert error.status == 429
    assert b"rate" in DECOMPRESS[coding](error.body).lower()


@pytest.mark.parametrize("coding", sorted(COMPRESS))
@pytest.mark.parametrize(("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)])
def test_fake_provider_compresses_a_stream_flushing_every_event(coding: str, path: str, body: dict) -> None:
    events = list(_fake(path, {**body, "stream": True}).stream or ())
    assert len(events) > 3
    parts = list(_fake(path, {**body, "stream": True}, x_testupstream_content_encoding=coding).stream or ())
    assert len(parts) == len(events) + 1  # one part per event, then the end of the compressed stream
    decompressor = zlib.decompressobj({"gzip": 31, "deflate": 15, "deflate-raw": -15}.get(coding, 15))
    br = brotli.Decompressor()
    for event, part in zip(events, parts, strict=False):
        got = br.process(part) if coding == "br" else decompressor.decompress(part)
        assert got == event  # decodable on its own: the gateway sees each event as it is sent
    assert DECOMPRESS[coding](b"".join(parts)) == b"".join(events)


def test_fake_provider_labels_but_does_not_compress_a_given_body_and_refuses_unknown_codings() -> None:
    corrupt = gzip.compress(b'{"id":"x"}')[:-4]
    labelled = _fake(
        "/v1/chat/completions",
        CHAT,
        x_testupstream_content_encoding="gzip",
        x_testupstream_body=base64.b64encode(corrupt).decode(),
    )
    assert (labelled.body, ("content-encoding", "gzip") in labelled.headers) == (corrupt, True)
    refused = _fake("/v1/chat/completions", CHAT, x_testupstream_content_encoding="zstd")
    assert refused.status == 400
    assert b"x-testupstream-content-encoding" in refused.body


# -- the router: decoded before the translator, headers consistent with what the client gets ---------------

NS = AI_GATEWAY_METADATA_NAMESPACE


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return build_runtime(load_text(default_config_yaml({}), "<default>"))


def _attributes(message: ep.ProcessingRequest, endpoint: str | None = None) -> ep.ProcessingRequest:
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"connection.id": 7, "request.time": "2026-11-22T12:00:00.000001+00:00", "request.id": "r-1"})
    if endpoint is not None:
        attributes.update({ENDPOINT_ATTRIBUTE: endpoint})
    return message


def _headers(values: dict[str, str], end_of_stream: bool = False) -> ep.HttpHeaders:
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    )
    return ep.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)


class Exchange:
    """One request through the router and upstream streams, the provider's answer fed back in pieces."""

    def __init__(self, runtime: Runtime, client_path: str, request: dict, schema: str) -> None:
        registry = RequestRegistry()
        self.router = RouterStream(runtime, registry)
        headers = {":path": client_path, ":method": "POST", "content-type": "application/json"}
        self.router.handle(_attributes(ep.ProcessingRequest(request_headers=_headers(headers))))
        reply = self.router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(request))))
        assert reply.WhichOneof("response") == "request_body", reply
        endpoint = next(e for e, (b, _) in runtime.endpoints.items() if b.backend.schema == schema)
        upstream = UpstreamStream(runtime, registry)
        sent = upstream.handle(_attributes(ep.ProcessingRequest(request_headers=_headers(headers)), endpoint))
        upstream.close()
        mutation = sent.request_headers.response.header_mutation
        self.sent_headers = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
        self.removed_headers = set(mutation.remove_headers)
        self.upstream_path = self.sent_headers[":path"]
        replaced = sent.request_headers.response.body_mutation
        self.upstream_body = replaced.body if replaced.WhichOneof("mutation") == "body" else orjson.dumps(request)

    def provider_answer(self, coding: str | None = None) -> tuple[dict[str, str], list[bytes]]:
        """The fake provider's real answer to what the gateway sent: headers for the router, body parts."""
        control = {"x_testupstream_content_encoding": coding} if coding else {}
        response = _fake(self.upstream_path, self.upstream_body, **control)
        headers = {"content-type": response.content_type or "", **dict(response.headers)}
        if response.stream is None:
            headers["content-length"] = str(len(response.body))
            return headers, [response.body]
        return headers, list(response.stream)

    def answer(self, status: int, headers: dict[str, str], chunks: list[bytes]) -> tuple[ep.ProcessingResponse, ...]:
        """The router's replies: to the response headers, then to each body chunk (the last ends the body)."""
        values = {":status": str(status), **headers}
        replies = [self.router.handle(ep.ProcessingRequest(response_headers=_headers(values)))]
        for index, chunk in enumerate(chunks if not self.router.done else ()):  # done: Envoy sends no body
            last = index == len(chunks) - 1
            body = ep.ProcessingRequest(response_body=ep.HttpBody(body=chunk, end_of_stream=last))
            replies.append(self.router.handle(body))
            if replies[-1].HasField("immediate_response"):
                break
        self.router.close()
        return tuple(replies)


def _client_body(chunks: list[bytes], replies: tuple[ep.ProcessingResponse, ...]) -> bytes:
    """The body Envoy forwards: each chunk, or what the router put in its place."""
    if replies[0].mode_override.response_body_mode == pm.ProcessingMode.NONE and len(replies) == 1:
        return b"".join(chunks)  # the body was switched off at the headers: Envoy forwards it as it came
    out = []
    for chunk, reply in zip(chunks, replies[1:], strict=False):
        mutation = reply.response_body.response.body_mutation
        out.append(mutation.body if mutation.WhichOneof("mutation") == "body" else chunk)
    return b"".join(out)


_CREATED = re.compile(rb'"created": ?[0-9]+')


def _clock_free(body: bytes) -> bytes:
    """The body with chat completions' ``created`` (the translator's clock) blanked: two exchanges a second apart
    differ there only."""
    return _CREATED.sub(b'"created":0', body)


def _header_changes(reply: ep.ProcessingResponse, phase: str) -> tuple[dict[str, str], set[str]]:
    mutation = getattr(reply, phase).response.header_mutation
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}, set(mutation.remove_headers)


def _metadata(reply: ep.ProcessingResponse) -> dict:
    return MessageToDict(reply.dynamic_metadata).get(NS, {})


def _merged_metadata(replies: tuple[ep.ProcessingResponse, ...]) -> dict:
    """What Envoy holds at the end: each reply's keys merged over the earlier ones (``setDynamicMetadata``)."""
    merged: dict = {}
    for reply in replies:
        merged.update(_metadata(reply))
    return merged


def test_accept_encoding_identity_is_asked_of_every_provider(runtime: Runtime) -> None:
    for schema in ("OpenAI", "Anthropic"):
        exchange = Exchange(runtime, "/v1/chat/completions", CHAT, schema)
        assert exchange.sent_headers["accept-encoding"] == "identity"
        assert "accept-encoding" not in exchange.removed_headers


@pytest.mark.parametrize("coding", sorted(COMPRESS))
@pytest.mark.parametrize("schema", ["OpenAI", "Anthropic"])
def test_a_compressed_buffered_answer_reaches_the_client_decoded_with_its_usage(
    runtime: Runtime, coding: str, schema: str
) -> None:
    reference, exchange = (Exchange(runtime, "/v1/chat/completions", CHAT, schema) for _ in range(2))
    plain_headers, plain = reference.provider_answer()
    headers, chunks = exchange.provider_answer(coding)
    expected = reference.answer(200, plain_headers, plain)
    replies = exchange.answer(200, headers, chunks)

    _, removed = _header_changes(replies[0], "response_headers")
    assert {"content-encoding", "content-length"} <= removed
    body = _client_body(chunks, replies)
    assert _clock_free(body) == _clock_free(_client_body(plain, expected))  # as if never compressed
    assert orjson.loads(body)["usage"]["total_tokens"] == 2 + 4
    set_at_end, _ = _header_changes(replies[-1], "response_body")
    assert set_at_end == {"content-length": str(len(body))}  # Envoy holds a buffered answer's headers
    assert _metadata(replies[-1]) == _metadata(expected[-1])
    assert _metadata(replies[-1])["llm_total_token"] == 6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    coding=st.sampled_from(sorted(COMPRESS)),
    schema=st.sampled_from(["OpenAI", "Anthropic"]),
    client=st.sampled_from(["/v1/chat/completions", "/anthropic/v1/messages"]),
    data=st.data(),
)
def test_a_compressed_stream_split_anywhere_reaches_the_client_as_the_plain_one(
    runtime: Runtime, coding: str, schema: str, client: str, data
) -> None:
    """Through pass-through and translating translators alike: same bytes to the client, same usage."""
    request = {**(CHAT if client == "/v1/chat/completions" else MESSAGES), "stream": True}
    reference, exchange = (Exchange(runtime, client, request, schema) for _ in range(2))
    plain_headers, plain = reference.provider_answer()
    headers, parts = exchange.provider_answer(coding)
    compressed = b"".join(parts)
    chunks = _split(compressed, data.draw(st.lists(st.integers(0, len(compressed)), max_size=10)))

    expected = reference.answer(200, plain_headers, plain)
    replies = exchange.answer(200, headers, chunks)

    assert replies[0].mode_override.response_body_mode == replies[0].mode_override.STREAMED
    _, removed = _header_changes(replies[0], "response_headers")
    assert {"content-encoding", "content-length"} <= removed
    assert _clock_free(_client_body(chunks, replies)) == _clock_free(_client_body(plain, expected))
    assert _merged_metadata(replies)["llm_output_token"] == 4
    strip = {"token_latency_ttft", "token_latency_itl"}
    assert {k: v for k, v in _merged_metadata(replies).items() if k not in strip} == {
        k: v for k, v in _merged_metadata(expected).items() if k not in strip
    }


@pytest.mark.parametrize(
    ("client", "shape"),
    [
        ("/v1/chat/completions", {"type": "api_error", "code": "502"}),
        ("/anthropic/v1/messages", {"type": "api_error"}),
    ],
)
def test_a_corrupt_buffered_answer_is_a_502_in_the_clients_error_shape(runtime: Runtime, client: str, shape) -> None:
    request = CHAT if client == "/v1/chat/completions" else MESSAGES
    corrupt = gzip.compress(b'{"id":"chatcmpl-1"}')[:-3]
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    replies = Exchange(runtime, client, request, "OpenAI").answer(200, headers, [corrupt])
    immediate = replies[-1].immediate_response
    assert immediate.status.code == 502
    error = orjson.loads(immediate.body)["error"]
    assert {k: error[k] for k in shape} == shape
    assert error["message"] == (
        "the provider's answer cannot be decoded (content-encoding: gzip): "
        "truncated: the body ends before the gzip data does"
    )


def test_a_provider_error_with_a_corrupt_body_keeps_its_status(runtime: Runtime) -> None:
    headers = {"content-type": "application/json", "content-encoding": "br"}
    replies = Exchange(runtime, "/v1/chat/completions", CHAT, "OpenAI").answer(429, headers, [b"not brotli"])
    immediate = replies[-1].immediate_response
    assert immediate.status.code == 429  # the client's retry logic still sees a rate limit
    assert orjson.loads(immediate.body)["error"]["message"].startswith(
        "the provider answered 429 with a body that cannot be decoded (content-encoding: br): not valid brotli data"
    )


@pytest.mark.parametrize(
    ("client", "event"),
    [("/v1/chat/completions", b"\n\ndata: "), ("/anthropic/v1/messages", b"\n\nevent: error\ndata: ")],
)
def test_a_stream_that_turns_corrupt_ends_with_an_error_event_and_nothing_after(
    runtime: Runtime, client: str, event: bytes
) -> None:
    request = {**(CHAT if client == "/v1/chat/completions" else MESSAGES), "stream": True}
    good = _flushed("gzip", [b'data: {"id":"c1","choices":[{"delta":{"content":"hi"}}]}\n\n'])[0]
    chunks = [good, b"\x00garbage", b"more garbage", b""]
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
    replies = Exchange(runtime, client, request, "OpenAI").answer(200, headers, chunks)
    bodies = [r.response_body.response.body_mutation for r in replies[1:]]
    assert b"hi" in bodies[0].body
    assert bodies[1].body.startswith(event)
    error = orjson.loads(bodies[1].body[len(event) :])
    assert error["error"]["message"].startswith("the provider's answer cannot be decoded (content-encoding: gzip)")
    assert [(b.WhichOneof("mutation"), b.body) for b in bodies[2:]] == [("body", b""), ("body", b"")]


def test_a_responses_stream_that_turns_corrupt_ends_with_the_responses_error_event(runtime: Runtime) -> None:
    request = {"model": "gpt-4o-mini", "input": "hello there", "stream": True}
    good = _flushed("gzip", [b'event: response.created\ndata: {"type":"response.created","response":{}}\n\n'])[0]
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
    replies = Exchange(runtime, "/v1/responses", request, "OpenAI").answer(
        200, headers, [good, b"\x00garbage", b"more garbage", b""]
    )
    bodies = [r.response_body.response.body_mutation for r in replies[1:]]
    event = b"\n\nevent: error\ndata: "
    assert bodies[1].body.startswith(event)
    error = orjson.loads(bodies[1].body[len(event) :])
    assert (error["type"], error["code"]) == ("error", "api_error")
    assert error["message"].startswith("the provider's answer cannot be decoded (content-encoding: gzip)")


def test_a_compressed_streams_usage_is_in_metadata_before_the_compressors_trailer(runtime: Runtime) -> None:
    """Clients hang up on the last event (the openai SDK on [DONE]); the trailer comes after it."""
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    exchange = Exchange(runtime, "/v1/chat/completions", request, "OpenAI")
    headers, parts = exchange.provider_answer("gzip")
    replies = exchange.answer(200, headers, parts)
    decoder = decoder_for("gzip")
    assert decoder is not None
    usage_at = next(i for i, part in enumerate(parts) if b'"usage":{' in decoder.feed(part))
    assert usage_at < len(parts) - 2  # [DONE] and the gzip trailer come after it
    assert _metadata(replies[1 + usage_at])["llm_total_token"] == 6
    assert all(not _metadata(r) for r in replies[1 : 1 + usage_at])  # nothing to say before the usage


def test_an_unknown_encoding_passes_untouched_without_usage(runtime: Runtime) -> None:
    """zstd from an Anthropic backend to an OpenAI client: not decoded, so not translated either."""
    headers = {"content-type": "application/json", "content-encoding": "zstd", "content-length": "9"}
    replies = Exchange(runtime, "/v1/chat/completions", CHAT, "Anthropic").answer(200, headers, [b"\x28\xb5\x2f\xfd"])
    assert _header_changes(replies[0], "response_headers") == ({}, set())
    assert replies[1].response_body.response.body_mutation.WhichOneof("mutation") is None
    metadata = _metadata(replies[1])
    assert metadata["backend_name"] == "fake-anthropic"
    assert "llm_total_token" not in metadata


def test_identity_is_not_decoded(runtime: Runtime) -> None:
    exchange = Exchange(runtime, "/v1/chat/completions", CHAT, "OpenAI")
    headers, chunks = exchange.provider_answer()
    replies = exchange.answer(200, {**headers, "content-encoding": "identity"}, chunks)
    assert _header_changes(replies[0], "response_headers") == ({}, set())
    assert replies[1].response_body.response.body_mutation.WhichOneof("mutation") is None
    assert _metadata(replies[1])["llm_total_token"] == 6


def test_gzip_helpers_agree_with_gzip_module() -> None:
    """The test's own stream compressor writes what gzip(1) reads (guards the flushed-stream tests)."""
    with gzip.GzipFile(fileobj=io.BytesIO(b"".join(_flushed("gzip", [b"a", b"b"])))) as f:
        assert f.read() == b"ab"

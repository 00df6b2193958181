"""The fake LLM provider (``tokenvoy testupstream``) driven by real clients: openai SDK, httpx, sockets."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI, OpenAI

from tokenvoy.testupstream import openai_chat
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread, serve

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog while tokens flow through Envoy and every"
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "hello  there\nfriend"}, {"type": "image_url"}]},
]
PROMPT_WORDS = 5


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def client(upstream: BackgroundServer) -> Iterator[OpenAI]:
    """One SDK client for the module: building one (SSL context) costs ~50 ms."""
    with OpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def web(upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url) as c:
        yield c


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _raw(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


# -- chat completions via the SDK -------------------------------------------------------------------------


def test_plain_chat_default_words_and_usage(client: OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-test"
    assert resp.id.startswith("chatcmpl-")
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == DEFAULT_TEXT
    assert len(choice.message.content.split()) == openai_chat.DEFAULT_MAX_TOKENS
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == PROMPT_WORDS
    assert resp.usage.completion_tokens == 16
    assert resp.usage.total_tokens == PROMPT_WORDS + 16
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize("limit_key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_honoured(client: OpenAI, limit_key: str) -> None:
    resp = client.chat.completions.create(model="m", messages=MESSAGES, **{limit_key: 40})
    words = resp.choices[0].message.content.split()
    assert len(words) == 40
    assert words[:28] == list(openai_chat.WORDS)
    assert words[28:] == list(openai_chat.WORDS[:12])  # cyclic
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None
    assert (resp.usage.completion_tokens, resp.usage.total_tokens) == (40, 45)


def test_max_completion_tokens_wins_over_max_tokens(client: OpenAI) -> None:
    resp = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=9, max_completion_tokens=2)
    assert resp.choices[0].message.content == "The quick"


def test_n_choices_counted(client: OpenAI) -> None:
    resp = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3, n=2)
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.usage is not None and resp.usage.completion_tokens == 6


@pytest.mark.parametrize("include_usage", [None, False, True])
def test_streamed_deltas_join_to_same_text(client: OpenAI, include_usage: bool | None) -> None:
    kwargs = {} if include_usage is None else {"stream_options": {"include_usage": include_usage}}
    plain = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=7)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=7, stream=True, **kwargs))
    assert all(c.object == "chat.completion.chunk" and c.model == "m" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 7  # one chunk per word
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
        assert chunks[-1].choices == []
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_WORDS, 7)
    else:
        assert usage_chunks == []


def test_stream_wire_format(web: httpx.Client) -> None:
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 2, "stream": True}
    with web.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        raw = b"".join(r.iter_raw())
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert len(events) == 1 + 2 + 1 + 1 + 1  # role, 2 words, finish, DONE, trailing ""
    assert all(e.startswith(b"data: ") for e in events[:-1])
    assert "usage" not in orjson.loads(events[0][6:])


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, None, None),
        ({"model": 3, "messages": [{"role": "user", "content": "hi"}]}, "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role", "missing_required_parameter"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
            "integer_below_min_value",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {}},
            "stream_options",
            "invalid_value",
        ),
    ],
)
def test_invalid_request_is_openai_400(client: OpenAI, body: dict, param: str | None, code: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/chat/completions", body=body, cast_to=httpx.Response)
    assert exc.value.status_code == 400
    err = exc.value.response.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert (err["param"], err["code"]) == (param, code)
    assert err["message"]


def test_sdk_raises_bad_request_for_invalid_role(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Supported values are"):
        client.chat.completions.create(model="m", messages=[{"role": "robot", "content": "x"}])  # type: ignore[list-item]


def test_invalid_json_and_unknown_path(web: httpx.Client) -> None:
    r = web.post("/v1/chat/completions", content=b"{nope")
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("We could not parse the JSON body")
    r = web.post("/v1/images/generations", json={})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Invalid URL (POST /v1/images/generations)"
    r = web.get("/v1/chat/completions")
    assert r.status_code == 404


def test_path_prefix_accepted(web: httpx.Client) -> None:
    r = web.post(
        "/some/prefix/chat/completions?api-version=1",
        json={"model": "m", "messages": MESSAGES},
    )
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == PROMPT_WORDS


# -- control headers --------------------------------------------------------------------------------------


def test_forced_status(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-testupstream-status": "503"})
    assert exc.value.status_code == 503
    assert exc.value.response.json()["error"]["type"] == "server_error"
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-testupstream-status": "429"})
    assert rl.value.response.json()["error"]["code"] == "rate_limit_exceeded"


def test_forced_body(web: httpx.Client) -> None:
    body = b'{"custom": true}'
    r = web.post(
        "/v1/chat/completions",
        content=b"not even json",
        headers={"x-testupstream-status": "418", "x-testupstream-body": _b64(body)},
    )
    assert (r.status_code, r.content) == (418, body)
    assert r.headers["content-length"] == str(len(body))
    r = web.post("/anything", headers={"x-testupstream-body": "!!"})
    assert r.status_code == 400 and "base64" in r.json()["error"]["message"]


def test_delay(client: OpenAI) -> None:
    start = time.perf_counter()
    client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-testupstream-delay-ms": "100"})
    assert time.perf_counter() - start >= 0.1


def test_chunk_delay(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=2,
        stream=True,
        extra_headers={"x-testupstream-chunk-delay-ms": "25"},
    )
    stamps = [time.perf_counter() for _ in stream]
    assert len(stamps) == 4
    assert stamps[-1] - stamps[0] >= 0.07  # 3 gaps of 25 ms between the 4 chunks the SDK yields


def test_expect_header(client: OpenAI) -> None:
    ok = {"x-testupstream-expect-header": "authorization=Bearer x, x-team=blue", "x-team": "blue"}
    assert client.chat.completions.create(model="m", messages=MESSAGES, extra_headers=ok).choices
    with pytest.raises(openai.BadRequestError, match="'x-team' to be 'red', got 'blue'"):
        client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={**ok, "x-testupstream-expect-header": "x-team=red"}
        )
    with pytest.raises(openai.BadRequestError, match="'x-missing' is missing"):
        client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-testupstream-expect-header": "x-missing"}
        )


def test_expect_header_repeated(web: httpx.Client) -> None:
    headers = [
        ("x-testupstream-expect-header", "x-a=1"),
        ("x-testupstream-expect-header", "x-b=2"),
        ("x-a", "1"),
    ]
    r = web.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=headers)
    assert r.status_code == 400
    assert "'x-b' is missing" in r.json()["error"]["message"]


def test_expect_path(client: OpenAI) -> None:
    hdr = {"x-testupstream-expect-path": "/v1/chat/completions"}
    assert client.chat.completions.create(model="m", messages=MESSAGES, extra_headers=hdr).choices
    with pytest.raises(openai.BadRequestError, match="expected path '/openai/v1/chat/completions'"):
        client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            extra_headers={"x-testupstream-expect-path": "/openai/v1/chat/completions"},
        )


# -- introspection ----------------------------------------------------------------------------------------


def test_recorded_requests_and_health(upstream: BackgroundServer) -> None:
    with httpx.Client(base_url=upstream.url) as c:
        assert c.delete("/__testupstream/requests").status_code == 204
        c.post("/v1/chat/completions?x=1", content=b'{"model": "m"}', headers={"X-Mixed-Case": "Yes"})
        r = c.get("/health")
        assert (r.status_code, r.text) == (200, "ok")
        records = c.get("/__testupstream/requests").json()
        assert len(records) == 1
        rec = records[0]
        assert (rec["method"], rec["path"], rec["body"]) == (
            "POST",
            "/v1/chat/completions?x=1",
            '{"model": "m"}',
        )
        assert rec["headers"]["x-mixed-case"] == "Yes"
        for i in range(120):
            c.get(f"/n/{i}")
        records = c.get("/__testupstream/requests").json()
        assert len(records) == 100
        assert records[-1]["path"] == "/n/119"


# -- HTTP/1.1 mechanics -----------------------------------------------------------------------------------


def test_chunked_request_body_is_refused_with_411_in_the_providers_shape(web: httpx.Client) -> None:
    """Provider front ends want a length; a gateway that sends a body chunked must see it fail."""
    payload = orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 3})

    def gen() -> Iterator[bytes]:
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    r = web.post("/v1/chat/completions", content=gen())
    assert r.status_code == 411, r.text
    assert r.json()["error"]["message"].startswith("Length Required")
    r = web.post("/v1/messages", content=gen(), headers={"anthropic-version": "2023-06-01", "x-api-key": "k"})
    assert r.status_code == 411
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = web.post("/model/m/converse", content=gen())
    assert r.status_code == 411
    assert r.headers["x-amzn-errortype"].startswith("ValidationException")
    r = web.post("/__testupstream/gcp/token", content=gen())
    assert (r.status_code, r.json()["error"]) == (411, "invalid_request")
    # the same body with a length is served
    r = web.post("/v1/chat/completions", content=payload)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "The quick brown"


def test_chunked_with_extensions_and_trailers_is_read_to_its_end(upstream: BackgroundServer) -> None:
    """The refused chunked body is read whole, so the next request on the connection is answered."""
    body = b'{"model":"m","messages":[{"role":"user","content":"a b"}]}'
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: Chunked\r\n\r\n"
        + b"%x;ext=1\r\n%s\r\n" % (10, body[:10])
        + b"%X\r\n%s\r\n" % (len(body) - 10, body[10:])
        + b"0\r\nX-Trailer: 1\r\n\r\n"
        + b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    out = _raw(upstream.port, req)
    first, _, second = out.partition(b"HTTP/1.1 200 OK")
    assert first.startswith(b"HTTP/1.1 411 Length Required")
    head, _, resp_body = second.partition(b"\r\n\r\n")
    assert b"connection: close" in head
    assert orjson.loads(resp_body)["usage"]["prompt_tokens"] == 2


def test_keep_alive_many_requests_one_connection(upstream: BackgroundServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=2)
    body = orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 1})
    conn.request("POST", "/v1/chat/completions", body=body)
    conn.getresponse().read()
    sock = conn.sock
    for _ in range(200):
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert orjson.loads(resp.read())["choices"][0]["message"]["content"] == "The"
    assert conn.sock is sock
    conn.close()


def test_pipelined_requests_answered_in_order(upstream: BackgroundServer) -> None:
    def req(path: str, extra: bytes = b"") -> bytes:
        return b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), extra)

    # the first one is slow (async path); the later ones must still come back after it
    data = req("/a", b"x-testupstream-delay-ms: 50\r\n") + req("/b") + req("/health", b"Connection: close\r\n")
    out = _raw(upstream.port, data)
    assert out.count(b"HTTP/1.1 ") == 3
    assert out.index(b"(GET /a)") < out.index(b"(GET /b)") < out.index(b"\r\n\r\nok")


def test_connection_close_honoured(upstream: BackgroundServer) -> None:
    out = _raw(upstream.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in out.lower()
    assert out.endswith(b"\r\n\r\nok")
    out = _raw(upstream.port, b"GET /health HTTP/1.0\r\n\r\n")  # HTTP/1.0 closes by default
    assert out.endswith(b"ok")


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_bad_requests_get_400_and_close(upstream: BackgroundServer, data: bytes) -> None:
    out = _raw(upstream.port, data)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in out


def test_client_disconnect_mid_stream_is_clean(upstream: BackgroundServer, web: httpx.Client) -> None:
    body = orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 50, "stream": True})
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-testupstream-chunk-delay-ms: 20\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=2) as sock:
        sock.sendall(req)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    time.sleep(0.05)
    assert web.get("/health").text == "ok"


def test_large_stream_to_slow_reader_survives_backpressure(upstream: BackgroundServer) -> None:
    words = 20_000  # ~5 MB of SSE: more than the socket buffers, so the server must wait for drains
    body = orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": words, "stream": True})
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no autotuning: the server must wait
        sock.settimeout(5)
        sock.connect(("127.0.0.1", upstream.port))
        sock.sendall(req % (len(body), body))
        sock.recv(1, socket.MSG_PEEK)  # the server has started writing...
        time.sleep(0.05)  # ...and fills the socket buffers, hits the high-water mark, waits for a drain
        out = bytearray()
        while chunk := sock.recv(1 << 20):
            out += chunk
    assert out.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert out.count(b'"delta":{"content":') == words


# -- in-process async use and the CLI ---------------------------------------------------------------------


async def test_serve_in_process_with_async_sdk() -> None:
    async with await serve("127.0.0.1", 0) as running:
        client = AsyncOpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
        resp = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
        assert resp.choices[0].message.content == "The quick brown fox"
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "The quick brown fox"
        assert [r["path"] for r in running.app.requests()] == ["/v1/chat/completions"] * 2
        await client.close()


def test_cli_prints_address_and_exits_0_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tokenvoy.testupstream.server import main; raise SystemExit(main())",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().strip()
        assert line.startswith("testupstream listening on http://127.0.0.1:")
        assert httpx.get(line.rsplit(" ", 1)[1] + "/health").text == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the pure OpenAI module -------------------------------------------------------------------------------


def test_count_prompt_words() -> None:
    messages = [
        {"role": "user", "content": "  one two\tthree "},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": "four five"}, {"type": "input_audio"}, "junk"]},
    ]
    assert openai_chat.count_prompt_words(messages) == 5


def test_chat_completion_is_deterministic() -> None:
    req = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "stream": True}
    a = openai_chat.chat_completion(req, completion_id="chatcmpl-1", created=1)
    b = openai_chat.chat_completion(req, completion_id="chatcmpl-1", created=1)
    assert a == b and a.status == 200 and a.chunks is not None and len(a.chunks) == 7


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_offered_tools_and_a_user_turn_get_a_call_of_the_first_tool(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "weather in Rome?"}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert reply.choices[0].finish_reason == "tool_calls"
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "fox", "unit": "celsius"}  # valid for the schema
    assert reply.usage is not None and reply.usage.completion_tokens == 3

    streamed = list(
        client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True}
        )
    )
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in streamed
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert orjson.loads(arguments) == {"city": "fox", "unit": "celsius"}
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == 3

    history = [
        *messages,
        {"role": "assistant", "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "hot"},
    ]
    after = client.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL])
    assert after.choices[0].finish_reason == "stop" and after.choices[0].message.content  # the loop ends
    none = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.tool_calls is None


def test_a_system_message_after_the_users_leaves_the_turn_the_users(client: OpenAI) -> None:
    """Claude Code through the gateway: its mid-conversation system message follows the user's first message."""
    messages = [{"role": "user", "content": "weather in Rome?"}, {"role": "system", "content": "Be brief."}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert reply.choices[0].finish_reason == "tool_calls"


def test_after_a_tool_result_the_answer_ends_like_a_model_not_at_the_limit(client: OpenAI) -> None:
    """An agent asks for 32,000 tokens; a model answers a few sentences and stops, so the agent loop ends."""
    history = [
        {"role": "user", "content": "weather in Rome?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "hot"},
    ]
    after = client.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL], max_tokens=32_000)
    assert after.choices[0].finish_reason == "stop"
    assert after.choices[0].message.content == " ".join(openai_chat.WORDS)
    assert after.usage is not None and after.usage.completion_tokens == len(openai_chat.WORDS)
    cut = client.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL], max_tokens=3)
    assert (cut.choices[0].finish_reason, cut.choices[0].message.content) == ("length", "The quick brown")

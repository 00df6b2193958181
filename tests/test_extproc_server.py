"""The extproc process as Envoy sees it: gRPC health, one stream per request, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc


def _headers(**values: str) -> ep.ProcessingRequest:
    """Request headers as Envoy sends them, with the identity attributes of the rendered bootstrap."""
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k.replace("_", "-"), raw_value=v.encode()) for k, v in values.items()]
    )
    message = ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=header_map))
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"connection.id": 7, "request.time": "2026-11-22T12:00:00.000001+00:00", "request.id": "r-1"})
    return message


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    socket_path = tmp_path / "extproc.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenvoy", "extproc", "--listen", f"unix:{socket_path}", "--no-admin"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "extproc did not start"
        time.sleep(0.05)
    return process, f"unix:{socket_path}"


async def test_health_and_a_request_in_flight_during_sigterm_completes(tmp_path: Path) -> None:
    process, target = _start(tmp_path)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            outgoing: asyncio.Queue[ep.ProcessingRequest | None] = asyncio.Queue()

            async def requests():
                while (message := await outgoing.get()) is not None:
                    yield message

            call = ep_grpc.ExternalProcessorStub(channel).Process(requests(), metadata=(("x-tokenvoy-role", "router"),))
            await outgoing.put(_headers(**{":path": "/v1/chat/completions", ":method": "POST"}))
            first = await call.read()
            assert first.WhichOneof("response") == "request_headers"

            process.send_signal(signal.SIGTERM)  # the request is half done: it must still be answered
            await asyncio.sleep(0.3)
            body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            await outgoing.put(ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)))
            second = await call.read()
            assert second.request_body.response.clear_route_cache
            mutation = {
                h.header.key: h.header.raw_value for h in second.request_body.response.header_mutation.set_headers
            }
            assert mutation["x-ai-eg-model"] == b"gpt-4o-mini"
            await outgoing.put(None)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert b"stopping" in (process.stderr.read() if process.stderr else b"")


async def test_a_router_stream_rejects_a_non_json_body_with_an_immediate_400(tmp_path: Path) -> None:
    process, target = _start(tmp_path)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = ep_grpc.ExternalProcessorStub(channel)
            messages = [
                _headers(**{":path": "/v1/chat/completions", ":method": "POST"}),
                ep.ProcessingRequest(request_body=ep.HttpBody(body=b"not json", end_of_stream=True)),
            ]
            replies = [reply async for reply in stub.Process(iter(messages))]
        immediate = replies[1].immediate_response
        assert immediate.status.code == 400
        assert b"not valid JSON" in immediate.body
    finally:
        process.terminate()
        process.wait(15)

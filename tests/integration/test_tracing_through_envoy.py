"""Traces through real Envoy: extproc exports OpenInference spans over OTLP/gRPC to a receiver in this test,
parented on the client's ``traceparent``, and the provider receives the gateway span's trace context."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import httpx
from openai import AsyncOpenAI
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from tests.integration.conftest import start_gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP collector's trace endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(value: common_pb2.AnyValue) -> object:
    return getattr(value, value.WhichOneof("value"))


async def _wait_for_spans(receiver: Receiver, count: int, timeout: float = 15.0) -> list:
    deadline = time.monotonic() + timeout
    while len(receiver.spans) < count:
        assert time.monotonic() < deadline, f"{len(receiver.spans)} spans received, {count} expected"
        await asyncio.sleep(0.05)
    return receiver.spans


async def test_spans_reach_an_otlp_receiver_parented_on_the_client_and_propagated_to_the_provider(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    gateway = await asyncio.to_thread(start_gateway, tmp_path, env=env)
    try:
        client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "x-session-id": "s-1", "x-user-id": "alice"}
        reply = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=20,
            extra_headers=headers,
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Count to three"}],
            stream=True,
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

        plain, streaming = sorted(
            await _wait_for_spans(receiver, 2),
            key=lambda span: "stream" in _attributes(span)["llm.invocation_parameters"],
        )
        for span in (plain, streaming):
            assert span.name == "ChatCompletion"
            assert span.trace_id.hex() == TRACE_ID
            assert span.parent_span_id.hex() == PARENT_ID
            assert span.kind == span.SPAN_KIND_CLIENT
        attributes = _attributes(plain)
        assert reply.usage is not None
        assert attributes["openinference.span.kind"] == "LLM"
        assert attributes["llm.model_name"] == reply.model
        assert attributes["llm.provider"] == "openai"
        assert attributes["llm.token_count.prompt"] == reply.usage.prompt_tokens
        assert attributes["llm.token_count.completion"] == reply.usage.completion_tokens
        assert attributes["llm.token_count.total"] == reply.usage.total_tokens
        assert attributes["llm.input_messages.0.message.content"] == "Say hello"
        assert attributes["output.value"] == reply.choices[0].message.content
        assert attributes["session.id"] == "s-1"
        assert attributes["user.id"] == "alice"
        assert '"max_tokens":20' in attributes["llm.invocation_parameters"]
        assert _attributes(streaming)["output.value"] == streamed
        assert _attributes(streaming)["llm.token_count.completion"] > 0

        async with httpx.AsyncClient() as http:
            received = (await http.get(f"{gateway.fake_url}/__testupstream/requests")).json()
        traceparents = [request["headers"].get("traceparent") for request in received]
        assert len(traceparents) == 2
        sent_span_ids = set()
        for traceparent in traceparents:
            version, trace_id, span_id, _ = traceparent.split("-")
            assert (version, trace_id) == ("00", TRACE_ID)
            sent_span_ids.add(span_id)
        # The provider's parent is the gateway's span, not the client's.
        assert sent_span_ids == {plain.span_id.hex(), streaming.span_id.hex()}
    finally:
        await asyncio.to_thread(gateway.stop)
        await server.stop(0)


def _attributes(span) -> dict[str, object]:
    return {attribute.key: _value(attribute.value) for attribute in span.attributes}

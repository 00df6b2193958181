#!/usr/bin/env python3
"""A no-op Envoy ext_proc server: the floor of tokenvoy's architecture, for ``bench/gateway.py``.

Same server shell as ``tokenvoy extproc`` (grpc.aio on uvloop, health and reflection, each stream read and
written explicitly, the call ended by the server once the last message Envoy will send is answered), and it
answers exactly the messages Envoy sends with tokenvoy's rendered filter config (bench/gateway.py points
that config's ``tokenvoy_extproc`` cluster here), with prebuilt responses and no look at the bodies:

* ``x-tokenvoy-role: upstream`` streams: request headers, then the call ends (response headers are SKIP);
* router streams: request headers, the buffered request body, response headers (with the same switch to a
  STREAMED response body as tokenvoy's extproc for ``text/event-stream`` answers), each response body
  chunk, and at the end of the response the usage metadata (``io.envoy.ai_gateway`` ``llm_total_token``, a
  constant) so that the stream-done budget charge is sent as with tokenvoy.

Routing is left to the client: the bench sends ``x-ai-eg-model`` itself, where tokenvoy's extproc sets it
from the body. What remains is what Envoy and a Python gRPC server cost for tokenvoy's phases.

    python bench/noop_extproc.py --listen unix:/tmp/noop.sock [--no-uvloop]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator

import grpc
from google.protobuf import struct_pb2

from tokenvoy.contract import ROLE_METADATA_KEY, UPSTREAM_ROLE
from tokenvoy.grpcserver import run, serve_until_signalled, start_service
from tokenvoy.pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

SERVICE_NAME = ep.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
METADATA_NAMESPACE = "io.envoy.ai_gateway"
USAGE_TOKENS = 17  # what the fake provider reports for the bench's request
_EOF = grpc.aio.EOF

REQUEST_HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
REQUEST_BODY = ep.ProcessingResponse(request_body=ep.BodyResponse())
RESPONSE_HEADERS = ep.ProcessingResponse(response_headers=ep.HeadersResponse())
RESPONSE_HEADERS_STREAMED = ep.ProcessingResponse(
    response_headers=ep.HeadersResponse(),
    mode_override=pm.ProcessingMode(response_body_mode=pm.ProcessingMode.STREAMED),
)
RESPONSE_BODY = ep.ProcessingResponse(response_body=ep.BodyResponse())


def _with_usage(response: ep.ProcessingResponse) -> ep.ProcessingResponse:
    usage = struct_pb2.Struct()
    usage.update({METADATA_NAMESPACE: {"llm_total_token": USAGE_TOKENS}})
    out = ep.ProcessingResponse()
    out.CopyFrom(response)
    out.dynamic_metadata.CopyFrom(usage)
    return out


RESPONSE_HEADERS_LAST = _with_usage(RESPONSE_HEADERS)
RESPONSE_BODY_LAST = _with_usage(RESPONSE_BODY)


class NoopProcessor(ep_grpc.ExternalProcessorServicer):
    """Answers every message with the prebuilt response of its kind; ends the call after the last one."""

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> None:
        upstream = any(k == ROLE_METADATA_KEY and v == UPSTREAM_ROLE for k, v in context.invocation_metadata() or ())
        read, write = context.read, context.write
        while (message := await read()) is not _EOF:
            kind = message.WhichOneof("request")
            if kind == "request_headers":
                await write(REQUEST_HEADERS)
                if upstream:
                    return
            elif kind == "request_body":
                await write(REQUEST_BODY)
            elif kind == "response_headers":
                if message.response_headers.end_of_stream:
                    await write(RESPONSE_HEADERS_LAST)
                    return
                streamed = any(
                    h.key == "content-type" and (h.raw_value or h.value.encode()).startswith(b"text/event-stream")
                    for h in message.response_headers.headers.headers
                )
                await write(RESPONSE_HEADERS_STREAMED if streamed else RESPONSE_HEADERS)
            elif kind == "response_body":
                if message.response_body.end_of_stream:
                    await write(RESPONSE_BODY_LAST)
                    return
                await write(RESPONSE_BODY)
            else:  # trailers: SKIP in tokenvoy's config, answered anyway
                await write(ep.ProcessingResponse(**{kind: ep.TrailersResponse()}))


async def serve(listen: str) -> None:
    def register(server: grpc.aio.Server) -> list[str]:
        ep_grpc.add_ExternalProcessorServicer_to_server(NoopProcessor(), server)
        return [SERVICE_NAME]

    shell = await start_service("noop-extproc", listen, register)
    await serve_until_signalled(shell, grace=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True, metavar="ADDR", help="HOST:PORT or unix:/path.sock")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop instead of uvloop's")
    args = parser.parse_args(argv)
    run(serve(args.listen), use_uvloop=not args.no_uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

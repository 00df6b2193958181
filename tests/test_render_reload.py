"""Config reload without Envoy: what ``tokenvoy run`` keeps as it was, how extproc swaps its config under
requests in flight, and the standalone extproc reloading its files (docs/reload.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.config.loader import load_text
from tokenvoy.contract import ENDPOINT_ATTRIBUTE, endpoint_id
from tokenvoy.extproc.server import (
    ExternalProcessor,
    build_runtime,
    config_digest,
    config_health_service,
)
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.runner.reload import plan

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: tokenvoy
  listeners: [{name: http, protocol: HTTP, port: 18080}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: chat}
spec:
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: MODEL}]}]
      backendRefs: [{name: BACKEND}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: BACKEND}
spec:
  schema: {name: OpenAI, prefix: PREFIX}
  backendRef: {name: BACKEND, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: BACKEND
  annotations: {tokenvoy.io/fake-provider: "true"}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: PORT}}]
"""


def _config_text(model: str = "model-a", backend: str = "old", prefix: str = "/old", port: int = 18000) -> str:
    text = CONFIG.replace("MODEL", model).replace("BACKEND", backend).replace("PREFIX", prefix)
    return text.replace("PORT", str(port))


# ---- what `tokenvoy run` applies and what needs a restart ---------------------------------------------------


def test_a_listener_move_is_kept_as_it_was_and_the_rest_applies():
    running = load_text(_config_text())
    edited = load_text(_config_text(model="model-b").replace("port: 18080", "port: 18081"))
    config, envoy, notes = plan(running, edited, ratelimit_running=False, fakes_running={("127.0.0.1", 18000)})
    assert config.listener == envoy.listener == running.listener
    assert config.exact_models() == ["model-b"]
    assert notes == [
        "the listener moves to 127.0.0.1:18081 only when tokenvoy run restarts; it keeps serving on 127.0.0.1:18080"
    ]


def test_budgets_without_a_ratelimit_service_are_left_out_of_envoy_and_a_new_fake_provider_needs_a_restart():
    running = load_text(_config_text())
    budget = """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: chat}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
          limit: {requests: 100, unit: Hour}
"""
    edited = load_text(_config_text(port=18001) + budget)
    config, envoy, notes = plan(running, edited, ratelimit_running=False, fakes_running={("127.0.0.1", 18000)})
    assert config.budgets and not envoy.budgets  # Envoy has no ratelimit cluster to send them to
    assert len(notes) == 2
    assert notes[0].startswith("budgets need the ratelimit service")
    assert notes[1] == "the fake provider on 127.0.0.1:18001 starts only when tokenvoy run restarts"
    # With the service running, the budgets go to Envoy too.
    _, envoy, notes = plan(running, edited, ratelimit_running=True, fakes_running={("127.0.0.1", 18001)})
    assert envoy.budgets == edited.budgets and notes == []


# ---- extproc: a request in flight keeps its config ----------------------------------------------------------


class _Context:
    """The part of grpc.aio's servicer context extproc uses: its metadata, read() from Envoy, write() to it."""

    def __init__(self, role: str, messages: AsyncIterator[ep.ProcessingRequest]) -> None:
        self._metadata = (("x-tokenvoy-role", role),)
        self._messages = messages
        self.written: asyncio.Queue[ep.ProcessingResponse | None] = asyncio.Queue()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def read(self) -> ep.ProcessingRequest | object:
        return await anext(self._messages, grpc.aio.EOF)

    async def write(self, response: ep.ProcessingResponse) -> None:
        await self.written.put(response)


async def _call(processor: ExternalProcessor, role: str, messages: AsyncIterator[ep.ProcessingRequest]):
    """One ext_proc call as grpc.aio runs it: the responses extproc writes, as they come, until it returns."""
    context = _Context(role, messages)
    call = asyncio.ensure_future(processor.Process(messages, context))
    call.add_done_callback(lambda _: context.written.put_nowait(None))
    while (response := await context.written.get()) is not None:
        yield response
    await call  # its exception, if any


def _identity(message: ep.ProcessingRequest, request_id: str, endpoint: str | None = None) -> ep.ProcessingRequest:
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"connection.id": 7, "request.time": "2026-11-22T12:00:00+00:00", "request.id": request_id})
    if endpoint is not None:
        attributes.update({ENDPOINT_ATTRIBUTE: endpoint})
    return message


def _headers(request_id: str, endpoint: str | None = None) -> ep.ProcessingRequest:
    values = {":path": "/v1/chat/completions", ":method": "POST", "content-type": "application/json"}
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    )
    return _identity(ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=header_map)), request_id, endpoint)


class _Router:
    """A router-level stream kept open, as Envoy keeps it while the answer streams."""

    def __init__(self, processor: ExternalProcessor, request_id: str, model: str) -> None:
        self.queue: asyncio.Queue[ep.ProcessingRequest | None] = asyncio.Queue()
        self.responses = _call(processor, "router", self._messages())
        self.request_id, self.model = request_id, model

    async def _messages(self) -> AsyncIterator[ep.ProcessingRequest]:
        while (message := await self.queue.get()) is not None:
            yield message

    async def start(self) -> str:
        """Send the request; returns the model extproc asked Envoy to route on."""
        await self.queue.put(_headers(self.request_id))
        await anext(self.responses)
        body = f'{{"model": "{self.model}", "messages": [{{"role": "user", "content": "hi"}}]}}'.encode()
        await self.queue.put(ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)))
        response = await anext(self.responses)
        mutation = response.request_body.response.header_mutation.set_headers
        return next(h.header.raw_value.decode() for h in mutation if h.header.key == "x-ai-eg-model")

    async def finish(self) -> None:
        await self.queue.put(None)
        async for _ in self.responses:
            pass


async def _upstream_path(processor: ExternalProcessor, request_id: str, endpoint: str) -> str:
    """One upstream attempt of the request, to ``endpoint`` (what Envoy's load balancer picked)."""

    async def messages() -> AsyncIterator[ep.ProcessingRequest]:
        yield _headers(request_id, endpoint)

    responses = [r async for r in _call(processor, "upstream", messages())]
    (response,) = responses
    assert response.WhichOneof("response") == "request_headers", response
    mutation = response.request_headers.response.header_mutation.set_headers
    return next(h.header.raw_value.decode() for h in mutation if h.header.key == ":path")


def _endpoint(runtime) -> str:
    (rule,) = runtime.rules
    return endpoint_id(rule.rule, 0)


async def test_a_request_in_flight_keeps_its_config_and_envoy_on_either_config_is_understood():
    before = build_runtime(load_text(_config_text(backend="old", prefix="/old")))
    after = build_runtime(load_text(_config_text(backend="new", prefix="/new")))
    assert _endpoint(before) != _endpoint(after)  # the id names the backend: never two meanings across a reload
    processor = ExternalProcessor(before)

    in_flight = _Router(processor, "r-1", "model-a")
    assert await in_flight.start() == "model-a"
    assert processor.swap(after) == []
    # Its attempts (a retry included) are translated for the backend its config named.
    assert await _upstream_path(processor, "r-1", _endpoint(before)) == "/old/chat/completions"
    assert await _upstream_path(processor, "r-1", _endpoint(before)) == "/old/chat/completions"

    fresh = _Router(processor, "r-2", "model-a")
    await fresh.start()
    # Envoy may route a new request by either config for a moment: each endpoint is translated for its backend.
    assert await _upstream_path(processor, "r-2", _endpoint(after)) == "/new/chat/completions"
    assert await _upstream_path(processor, "r-2", _endpoint(before)) == "/old/chat/completions"
    await in_flight.finish()
    await fresh.finish()
    assert len(processor.registry) == 0


def test_only_the_last_configs_are_kept_and_the_others_are_handed_back():
    runtimes = [build_runtime(load_text(_config_text(backend=f"b{i}"))) for i in range(6)]
    processor = ExternalProcessor(runtimes[0])
    retired = [old for runtime in runtimes[1:] for old in processor.swap(runtime)]
    assert processor.runtime is runtimes[5]
    assert processor.previous == (runtimes[4], runtimes[3], runtimes[2])
    assert retired == [runtimes[0], runtimes[1]]  # their credentials can stop


# ---- the standalone extproc process reloads its files -------------------------------------------------------


def _serving(target: str, service: str) -> int:
    async def check() -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                return -1
            return reply.status

    return asyncio.run(check())


def _wait(condition, what: str, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"extproc exited while waiting for {what}"
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.mark.parametrize("trigger", ["SIGHUP", "polling"])
def test_extproc_reloads_its_files_refuses_a_broken_one_and_says_which_version_it_serves(tmp_path, trigger):
    config = tmp_path / "gateway.yaml"
    config.write_text(_config_text())
    socket_path = tmp_path / "extproc.sock"
    target = f"unix:{socket_path}"
    interval = "0" if trigger == "SIGHUP" else "0.2"
    argv = [sys.executable, "-m", "tokenvoy", "extproc", "--config", str(config), "--listen", target, "--no-admin"]
    log = tmp_path / "extproc.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([*argv, "--watch-interval", interval], stderr=stderr)
    try:
        first = config_digest([str(config)])
        _wait(lambda: socket_path.exists() and _serving(target, config_health_service(first)) == 1, "start", process)

        def edit(text: str) -> None:
            config.write_text(text)
            if trigger == "SIGHUP":
                process.send_signal(signal.SIGHUP)

        edit(_config_text().replace("backendRef: {name: old,", "backendRef: {name: missing,"))
        _wait(lambda: "extproc keeps serving the previous config" in log.read_text(), "the refusal", process)
        reason = "SIGHUP" if trigger == "SIGHUP" else "a config file changed"
        problem = f"{config}: AIServiceBackend/old: spec.backendRef.name: Backend/missing does not exist"
        assert f"extproc config reload refused ({reason}): {problem}" in log.read_text()
        assert _serving(target, config_health_service(first)) == 1
        edit(_config_text(model="model-b"))
        second = config_digest([str(config)])
        _wait(lambda: _serving(target, config_health_service(second)) == 1, "the new version", process)
        assert _serving(target, config_health_service(first)) == 2  # NOT_SERVING: that version is gone
        assert f"extproc config reloaded ({reason}): version {second}" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)


def test_a_reload_swaps_the_runtime_but_not_the_tracing_or_metrics_setup():
    from tokenvoy.extproc.server import restart_only_changes

    running = load_text(_config_text())
    assert restart_only_changes(running, load_text(_config_text(model="model-b"))) == []
    tracing = dataclasses.replace(running.tracing, session_id_header="x-my-session")
    assert restart_only_changes(running, dataclasses.replace(running, tracing=tracing)) == [
        "restart needed: TokenvoyConfig tracing changed; the rest of the config is applied"
    ]

"""Prometheus metrics on the admin port: exact family names, label names and values, over real HTTP."""

from __future__ import annotations

import logging
import socket
import textwrap
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tokenvoy.ratelimit.config import load_config
from tokenvoy.ratelimit.metrics import DURATION_BUCKETS, RateLimitMetrics
from tokenvoy.ratelimit.server import RunningServer, start_server

HOUR_START = 1_699_999_200
NOW = HOUR_START + 600

CONFIG = """
domain: ai
descriptors:
  - key: budget
    value: gpt
    descriptors:
      - key: x-user-id
        rate_limit: {unit: hour, requests_per_unit: 100, name: gpt-tokens}
  - key: budget
    value: vip
    descriptors:
      - key: x-user-id
        detailed_metric: true
        rate_limit: {unit: hour, requests_per_unit: 10}
  - key: x-team
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: ldap
    rate_limit: {unlimited: true}
"""

PER_DESCRIPTOR = (
    "tokenvoy_ratelimit_hits_total",
    "tokenvoy_ratelimit_refunded_hits_total",
    "tokenvoy_ratelimit_over_limit_total",
    "tokenvoy_ratelimit_near_limit_total",
    "tokenvoy_ratelimit_shadow_mode_total",
)


def descriptor(
    *entries: tuple[str, str], hits: int | None = None, negative: bool = False
) -> ratelimit_pb2.RateLimitDescriptor:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries],
        is_negative_hits=negative,
    )
    if hits is not None:
        d.hits_addend.value = hits
    return d


class Server:
    def __init__(self, running: RunningServer) -> None:
        self.running = running
        assert running.admin is not None
        self.admin = f"http://127.0.0.1:{running.admin.port}"
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    async def call(self, *descriptors: ratelimit_pb2.RateLimitDescriptor) -> rls_pb2.RateLimitResponse:
        return await self.stub.ShouldRateLimit(
            rls_pb2.RateLimitRequest(domain="ai", descriptors=descriptors), timeout=5
        )

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.admin}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name.startswith("tokenvoy_ratelimit_")
        }


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = await start_server(
        load_config([("budgets.yaml", textwrap.dedent(CONFIG))]),
        "127.0.0.1:0",
        clock=lambda: NOW,
        metrics=RateLimitMetrics(),
        admin_listen="127.0.0.1:0",
    )
    s = Server(running)
    yield s
    await s.channel.close()
    await running.stop(0)


def per_descriptor(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], descriptor: str) -> list[float]:
    labels = (("descriptor", descriptor), ("domain", "ai"))
    return [samples.get((name, labels), 0.0) for name in PER_DESCRIPTOR]


async def test_metric_names_labels_and_values(server: Server) -> None:
    gpt = ("budget", "gpt")
    alice = ("x-user-id", "alice")
    await server.call(descriptor(gpt, alice, hits=0))  # a check of an untouched budget: nothing to report
    await server.call(descriptor(gpt, alice, hits=85))  # 85/100: near
    await server.call(descriptor(gpt, alice, hits=0))  # near again
    await server.call(descriptor(gpt, alice, hits=20))  # 105/100: over
    await server.call(descriptor(gpt, alice, hits=0))  # over again (this is the request Envoy rejects)
    await server.call(descriptor(gpt, alice, hits=5, negative=True))  # 100/100: refund, back to near
    await server.call(descriptor(("budget", "vip"), ("x-user-id", "bob"), hits=3))  # detailed_metric
    await server.call(descriptor(("x-team", "red")))  # 1/1: near (at 100%)
    await server.call(descriptor(("x-team", "red")))  # over, but shadow mode: OK
    override = descriptor(("x-custom", "anything"))
    override.limit.requests_per_unit = 1
    override.limit.unit = rls_pb2.RateLimitResponse.RateLimit.MINUTE
    await server.call(override)
    await server.call(override)
    await server.call(descriptor(("ldap", "carol")), descriptor(("no-limit", "x")))  # nothing counted

    samples = await server.scrape()
    #                                                      hits refunded over near shadow
    assert per_descriptor(samples, "budget_gpt.x-user-id") == [105, 5, 2, 3, 0]
    assert per_descriptor(samples, "budget_vip.x-user-id_bob") == [3, 0, 0, 0, 0]
    assert per_descriptor(samples, "x-team") == [2, 0, 1, 1, 1]
    assert per_descriptor(samples, "x-custom") == [2, 0, 1, 1, 0]  # a limit sent by Envoy: keys only

    descriptor_series = {labels for (name, labels) in samples if name in PER_DESCRIPTOR}
    assert descriptor_series == {
        (("descriptor", d), ("domain", "ai"))
        for d in ("budget_gpt.x-user-id", "budget_vip.x-user-id_bob", "x-team", "x-custom")
    }
    assert samples[("tokenvoy_ratelimit_backend_errors_total", ())] == 0
    assert samples[("tokenvoy_ratelimit_backend_up", ())] == 1
    histogram = "tokenvoy_ratelimit_should_rate_limit_duration_seconds"
    assert samples[(f"{histogram}_count", ())] == 12
    buckets = sorted(float(dict(labels)["le"]) for (name, labels) in samples if name == f"{histogram}_bucket")
    assert buckets == [*DURATION_BUCKETS, float("inf")]
    assert {name for name, _ in samples} == {
        *PER_DESCRIPTOR,
        "tokenvoy_ratelimit_backend_errors_total",
        "tokenvoy_ratelimit_backend_up",
        f"{histogram}_bucket",
        f"{histogram}_count",
        f"{histogram}_sum",
    }  # config_reloads_total has no series before the first reload


async def test_admin_endpoints(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.admin) as client:
        health = await client.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")
        assert (await client.head("/healthz")).status_code == 200
        assert (await client.get("/nope")).status_code == 404
        post = await client.post("/metrics")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        openmetrics = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


async def test_admin_address_in_use(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config([("budgets.yaml", textwrap.dedent(CONFIG))])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        # asked for explicitly: an error before anything is served
        with pytest.raises(OSError, match=f"cannot serve metrics on {busy}: address already in use"):
            await start_server(config, "127.0.0.1:0", metrics=RateLimitMetrics(), admin_listen=busy)
        # the CLI's default address: a second instance on the machine still starts, without metrics
        with caplog.at_level(logging.WARNING, logger="tokenvoy.ratelimit"):
            running = await start_server(
                config, "127.0.0.1:0", metrics=RateLimitMetrics(), admin_listen=busy, admin_required=False
            )
        try:
            assert running.admin is None
            assert f"cannot serve metrics on {busy}: address already in use; running without metrics" in caplog.text
        finally:
            await running.stop(0)

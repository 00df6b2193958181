"""tokenvoy's ratelimit in place of Envoy Gateway's (EG's) envoyproxy/ratelimit, end to end.

What EG's ratelimit Deployment has, rebuilt on loopback: an xDS config server that serves
``RateLimitConfig`` protos over ADS with mutual TLS (``tests/ads_server.py``, certificates from a trustme
CA as EG's ``envoy-gateway`` and ``envoy-rate-limit`` Secrets hold them), a real ``redis-server``, and
``tokenvoy ratelimit --from-env`` started with the environment EG renders for the Deployment (the list in
``tests/test_ratelimit_xds_env.py``, only hosts, ports and file paths changed). A real Envoy, with EG's
rate limit filter and its TLS ``ratelimit_cluster``, and the route ``rate_limits`` of EG's goldens, sends
the descriptors.

Proved here: every one of EG's generated configs (``ratelimit-config/*.yaml``) arrives over ADS and is the
tree ``tokenvoy ratelimit --config`` builds from the golden's YAML (read back from ``/rlconfig``); Envoy gets
a 429 after the limit; a live update changes the limit; a NACKed config keeps the tree in force; before the
first config the RLS answers an error and Envoy serves the request (EG's filter has no failure_mode_deny).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest

from tests.ads_server import AdsServer, Pki, packed
from tests.integration.egstack import Processes, cluster_stat, envoy, tokenvoy
from tests.ports import free_port
from tests.test_eg_ratelimit_goldens import CASES, GOLDENS, file_tree
from tests.test_ratelimit_redis import RedisServer
from tests.test_ratelimit_xds_env import EG_DEFAULT_ENV
from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2
from tokenvoy.ratelimit.config import tree_document
from tokenvoy.ratelimit.xds_config import protos_from_eg_yaml

ENVOY_CASE = "month-year-rule"  # limits per month and year: no window ends during the test
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WAIT_S = 60.0  # a hang guard for one config to be ACKed, not a timing assertion


# --------------------------------------------------------------------------------------------------------
# The pieces


class ThreadedAds:
    """The ADS server on its own event loop in a thread, so the test can block on processes meanwhile."""

    def __init__(self, pki: Pki) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server: AdsServer = self._call(self._start(pki)).result(30)

    async def _start(self, pki: Pki) -> AdsServer:
        server = AdsServer(pki, self.port)
        await server.start()
        return server

    def _call(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def publish(self, version: str, protos: list[rls_conf_pb2.RateLimitConfig]) -> None:
        self._loop.call_soon_threadsafe(self.server.publish, version, packed(*protos))

    def reply_to(self, version: str) -> DiscoveryRequest:
        """The ACK or NACK of the response that carried ``version`` (waits for it)."""
        deadline = time.monotonic() + WAIT_S
        while version not in self.server.replies:
            assert time.monotonic() < deadline, f"no ACK or NACK of version {version!r}: {self.server.requests}"
            time.sleep(0.05)
        return self.server.replies[version]

    def stop(self) -> None:
        self._call(self.server.stop()).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"served\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _pki(directory: Path) -> tuple[Pki, dict[str, Path]]:
    """EG's certificates: the config server's (``envoy-gateway``), ratelimit's (client to it, server to Envoy),
    and Envoy's client certificate to ratelimit, all signed by one CA."""
    ca = trustme.CA()
    files: dict[str, Path] = {}

    def write(name: str, blob: Any) -> Path:
        files[name] = directory / name
        blob.write_to_path(str(files[name]))
        return files[name]

    write("ca.crt", ca.cert_pem)
    other = trustme.CA()
    write("other-ca.crt", other.cert_pem)
    for name, cert in (
        ("envoy-gateway", ca.issue_cert("envoy-gateway", "localhost", common_name="envoy-gateway")),
        ("ratelimit", ca.issue_cert("envoy-ratelimit", "localhost", "127.0.0.1", common_name="envoy-ratelimit")),
        ("envoy", ca.issue_cert("envoy", common_name="envoy")),
    ):
        write(f"{name}.crt", cert.cert_chain_pems[0])
        write(f"{name}.key", cert.private_key_pem)
    pki = Pki(
        ca=files["ca.crt"],
        server_cert=files["envoy-gateway.crt"],
        server_key=files["envoy-gateway.key"],
        client_cert=files["ratelimit.crt"],
        client_key=files["ratelimit.key"],
        other_ca=files["other-ca.crt"],
    )
    return pki, files


def _action(action: dict[str, Any]) -> dict[str, Any]:
    """One of EG's route rate limit actions (as its golden writes the Go struct) in Envoy's config form."""
    ((kind, spec),) = action["ActionSpecifier"].items()
    if kind == "GenericKey":
        return {"generic_key": {"descriptor_key": spec["descriptor_key"], "descriptor_value": spec["descriptor_value"]}}
    if kind == "HeaderValueMatch":
        headers = []
        for header in spec["headers"]:
            ((pattern, value),) = header["HeaderMatchSpecifier"]["StringMatch"]["MatchPattern"].items()
            assert pattern == "Exact", f"this test maps exact header matches only, not {pattern}"
            headers.append({"name": header["name"], "string_match": {"exact": value}})
        return {
            "header_value_match": {
                "descriptor_key": spec["descriptor_key"],
                "descriptor_value": spec["descriptor_value"],
                "expect_match": spec["expect_match"]["value"],
                "headers": headers,
            }
        }
    raise AssertionError(f"this test does not map the action {kind}")


def _routes(case: str) -> list[dict[str, Any]]:
    """EG's routes of a golden case, each on the path ``/<route name>``, with their ``rate_limits``."""
    routes = []
    for document in yaml.safe_load_all((GOLDENS / f"{case}.routes.yaml").read_text()):
        ((domain, limits),) = document["rateLimitsByDomain"].items()
        assert domain == "first-listener"
        name = document["routeName"]
        routes.append(
            {
                "name": name,
                "match": {"path": f"/{name}"},
                "route": {
                    "cluster": "upstream",
                    "rate_limits": [{"actions": [_action(a) for a in limit["actions"]]} for limit in limits],
                },
            }
        )
    return routes


def _bootstrap(listen: int, admin: int, upstream: int, ratelimit: int, files: dict[str, Path]) -> dict[str, Any]:
    """Envoy with EG's rate limit filter (from its xds-ir golden) and its TLS ``ratelimit_cluster``."""
    ratelimit_filter = {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "first-listener",
            "disable_x_envoy_ratelimited_header": True,
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit_cluster"}},
                "transport_api_version": "V3",
            },
            # EG's filter keeps Envoy's default of 20 ms; a loaded test machine needs more, or Envoy fails
            # open and no 429 comes
            "timeout": "10s",
        },
    }
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "http-10080",
        "http_filters": [
            ratelimit_filter,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
        "route_config": {
            "name": "first-listener",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": _routes(ENVOY_CASE)}],
        },
    }

    def address(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    def endpoints(name: str, port: int) -> dict[str, Any]:
        return {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(port)}}]}]}

    return {
        "admin": {"address": address(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "first-listener",
                    "address": address(listen),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {"name": "upstream", "type": "STATIC", "load_assignment": endpoints("upstream", upstream)},
                {
                    "name": "ratelimit_cluster",
                    "type": "STATIC",
                    "load_assignment": endpoints("ratelimit_cluster", ratelimit),
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    # EG's: Envoy's certificate offered, ratelimit's checked against the CA only
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                            "common_tls_context": {
                                "tls_certificates": [
                                    {
                                        "certificate_chain": {"filename": str(files["envoy.crt"])},
                                        "private_key": {"filename": str(files["envoy.key"])},
                                    }
                                ],
                                "validation_context": {"trusted_ca": {"filename": str(files["ca.crt"])}},
                            },
                        },
                    },
                },
            ],
        },
    }


# --------------------------------------------------------------------------------------------------------
# The stack


@dataclass
class DropIn:
    ads: ThreadedAds
    processes: Processes
    url: str  # Envoy's listener
    envoy_admin: str
    health_url: str  # ratelimit's /healthcheck (EG's probes)
    rlconfig_url: str
    metrics_url: str  # ratelimit's Prometheus port (EG's prometheus.io/port)
    logs: Path

    def get(self, route: str, user: str) -> httpx.Response:
        return httpx.get(f"{self.url}/{route}", headers={"x-user-id": user}, timeout=30)

    def loaded(self) -> dict[str, Any]:
        return httpx.get(self.rlconfig_url, timeout=10).json()

    def ratelimit_stderr(self) -> str:
        return (self.logs / "ratelimit.err").read_text(errors="replace")


@pytest.fixture(scope="module")
def drop_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DropIn]:
    root = tmp_path_factory.mktemp("drop-in")
    certs = root / "certs"
    certs.mkdir()
    pki, files = _pki(certs)
    ads = ThreadedAds(pki)
    redis = RedisServer(root).start()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    grpc_port, health_port, metrics_port, listen, admin = (free_port() for _ in range(5))
    # EG's environment for its ratelimit Deployment; only addresses and file paths differ
    env = EG_DEFAULT_ENV | {
        "CONFIG_GRPC_XDS_SERVER_URL": f"localhost:{ads.port}",  # EG's: envoy-gateway:18001
        "CONFIG_GRPC_XDS_CLIENT_TLS_CERT": str(files["ratelimit.crt"]),
        "CONFIG_GRPC_XDS_CLIENT_TLS_KEY": str(files["ratelimit.key"]),
        "CONFIG_GRPC_XDS_SERVER_TLS_CACERT": str(files["ca.crt"]),
        "GRPC_SERVER_TLS_CERT": str(files["ratelimit.crt"]),
        "GRPC_SERVER_TLS_KEY": str(files["ratelimit.key"]),
        "GRPC_SERVER_TLS_CA_CERT": str(files["ca.crt"]),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "HOST": "127.0.0.1",
        "PORT": str(health_port),
        "PROMETHEUS_ADDR": f"127.0.0.1:{metrics_port}",
        "REDIS_URL": f"127.0.0.1:{redis.port}",
    }
    bootstrap = root / "envoy.json"
    bootstrap.write_text(json.dumps(_bootstrap(listen, admin, upstream.server_address[1], grpc_port, files)))
    logs = root / "logs"
    logs.mkdir()
    processes = Processes(logs)
    stack = DropIn(
        ads=ads,
        processes=processes,
        url=f"http://127.0.0.1:{listen}",
        envoy_admin=f"http://127.0.0.1:{admin}",
        health_url=f"http://127.0.0.1:{health_port}/healthcheck",
        rlconfig_url=f"http://127.0.0.1:{health_port}/rlconfig",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        logs=logs,
    )
    try:
        processes.start("ratelimit", tokenvoy("ratelimit", "--from-env"), env=dict(os.environ) | env)
        processes.start("envoy", envoy(bootstrap))
        processes.wait_for_url(stack.health_url, "tokenvoy ratelimit's /healthcheck")
        processes.wait_for_url(f"{stack.envoy_admin}/ready", "Envoy")
        yield stack
    finally:
        processes.stop()
        upstream.shutdown()
        redis.stop()
        ads.stop()


# --------------------------------------------------------------------------------------------------------
# Tests (in order: the first one runs before any config is published)


def test_before_the_first_config_the_rls_answers_an_error_and_envoy_serves(drop_in: DropIn) -> None:
    assert drop_in.loaded() == {"loaded": False, "version": "", "domains": {}}
    assert drop_in.get("first-route", "one").status_code == 200
    assert cluster_stat(drop_in.envoy_admin, "upstream", "ratelimit.error") >= 1  # asked, and it said error
    assert httpx.get(drop_in.health_url, timeout=10).text == "OK"  # EG sets FORCE_START_WITHOUT_INITIAL_CONFIG
    subscribe = drop_in.ads.server.requests[0]
    assert subscribe.node.id == "envoy-ratelimit" and drop_in.ads.server.peers[0] == "envoy-ratelimit"
    assert "from envoyproxy/ratelimit's environment: --xds-server localhost:" in drop_in.ratelimit_stderr()


def test_every_golden_loads_into_the_tree_its_yaml_makes(drop_in: DropIn) -> None:
    different = []
    for number, case in enumerate(CASES, start=1):
        version = f"{number}-{case}"
        drop_in.ads.publish(version, protos_from_eg_yaml((GOLDENS / f"{case}.yaml").read_text(), case))
        reply = drop_in.ads.reply_to(version)
        assert reply.error_detail is None, f"{case}: NACKed: {reply.error_detail}"
        loaded = drop_in.loaded()
        assert (loaded["loaded"], loaded["version"]) == (True, version)
        if loaded["domains"] != tree_document(file_tree(case)):
            different.append(case)
    assert different == []
    assert len(CASES) == 26


def _protos(limit: int | None = None) -> list[rls_conf_pb2.RateLimitConfig]:
    protos = protos_from_eg_yaml((GOLDENS / f"{ENVOY_CASE}.yaml").read_text(), ENVOY_CASE)
    if limit is not None:
        first_route = protos[0].descriptors[0]
        assert first_route.key == "first-route"
        first_route.descriptors[0].rate_limit.requests_per_unit = limit
    return protos


def test_envoy_gets_429_after_the_limit_and_a_live_update_changes_it(drop_in: DropIn) -> None:
    drop_in.ads.publish("envoy-1", _protos())
    assert drop_in.ads.reply_to("envoy-1").error_detail is None
    # EG's first-route rule: 5 a month for x-user-id "one"; "two" matches no rule of that route
    assert [drop_in.get("first-route", "one").status_code for _ in range(6)] == [200] * 5 + [429]
    assert drop_in.get("first-route", "two").status_code == 200
    # second-route: 1 a year for "two"
    assert [drop_in.get("second-route", "two").status_code for _ in range(2)] == [200, 429]

    drop_in.ads.publish("envoy-2", _protos(limit=7))  # the BackendTrafficPolicy raised to 7
    assert drop_in.ads.reply_to("envoy-2").error_detail is None
    # the counter carries over: 6 hits (a refused one counts, as in envoyproxy/ratelimit), so one more
    assert [drop_in.get("first-route", "one").status_code for _ in range(2)] == [200, 429]

    metrics = httpx.get(drop_in.metrics_url, timeout=10).text
    over = [line for line in metrics.splitlines() if line.startswith("tokenvoy_ratelimit_over_limit_total{")]
    assert any('domain="first-listener"' in line and "first-route" in line for line in over), over


def test_a_config_that_does_not_load_is_nacked_and_the_limits_stay(drop_in: DropIn) -> None:
    broken = _protos()
    broken[0].descriptors[0].descriptors[0].rate_limit.unit = rls_conf_pb2.UNKNOWN
    drop_in.ads.publish("envoy-3", broken)
    nack = drop_in.ads.reply_to("envoy-3")
    assert nack.error_detail is not None and "first-route" in nack.error_detail.message
    assert nack.version_info == "envoy-2"
    assert drop_in.loaded()["version"] == "envoy-2"
    assert drop_in.get("first-route", "one").status_code == 429  # 7 a month, all spent
    assert "refused, keeping version 'envoy-2'" in drop_in.ratelimit_stderr()

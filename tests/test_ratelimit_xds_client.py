"""The ADS config client against an xDS management server that speaks the protocol as Envoy Gateway's does.

The server (``tests/ads_server.py``) is written from the xDS protocol (State of the World ADS). It runs over
real gRPC with mutual TLS, with a CA and certificates made here, as EG's config server on port 18001 does.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse
from envoy_data_plane.google.protobuf import Any as AnyMessage

from tests.ads_server import AdsServer, Pki, packed
from tests.ports import free_port
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2
from tokenvoy.ratelimit.config import RateLimitConfig, tree_document
from tokenvoy.ratelimit.metrics import RateLimitMetrics
from tokenvoy.ratelimit.server import ServerTls, serve, start_server
from tokenvoy.ratelimit.xds_client import XdsClientSettings, XdsConfigClient, XdsTls
from tokenvoy.ratelimit.xds_config import RATE_LIMIT_CONFIG_TYPE_URL

NODE_ID = "envoy-ratelimit"  # what EG's Deployment sets and its snapshot cache is keyed by
WAIT_S = 30.0  # a hang guard, not a timing assertion


# --------------------------------------------------------------------------------------------------------
# Certificates


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, sans: list[x509.GeneralName]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path) -> Pki:
    """EG's layout: one CA; the config server's certificate names ``envoy-gateway``; ratelimit has its own."""
    ca_key, ca_cert = _ca("test-ca")
    _, other_cert = _ca("other-ca")
    server_key, server_cert = _leaf(
        ca_key,
        ca_cert,
        "envoy-gateway",
        [x509.DNSName("envoy-gateway"), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = _leaf(ca_key, ca_cert, "envoy-ratelimit", [x509.DNSName("envoy-ratelimit")])

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    return Pki(
        ca=write("ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        server_cert=write("server.crt", server_cert.public_bytes(serialization.Encoding.PEM)),
        server_key=write("server.key", pem_key(server_key)),
        client_cert=write("tls.crt", client_cert.public_bytes(serialization.Encoding.PEM)),
        client_key=write("tls.key", pem_key(client_key)),
        other_ca=write("other-ca.crt", other_cert.public_bytes(serialization.Encoding.PEM)),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --------------------------------------------------------------------------------------------------------
# The management server


def limit_config(version_limit: int, domain: str = "first-listener") -> rls_conf_pb2.RateLimitConfig:
    return rls_conf_pb2.RateLimitConfig(
        name=domain,
        domain=domain,
        descriptors=[
            rls_conf_pb2.RateLimitDescriptor(
                key="first-route",
                value="first-route",
                descriptors=[
                    rls_conf_pb2.RateLimitDescriptor(
                        key="x-user-id",
                        rate_limit=rls_conf_pb2.RateLimitPolicy(
                            unit=rls_conf_pb2.HOUR, requests_per_unit=version_limit
                        ),
                    )
                ],
            )
        ],
    )


BROKEN = rls_conf_pb2.RateLimitConfig(
    name="first-listener",
    domain="first-listener",
    descriptors=[
        rls_conf_pb2.RateLimitDescriptor(key="x-user-id", rate_limit=rls_conf_pb2.RateLimitPolicy(requests_per_unit=5))
    ],
)


def user_limit(config: RateLimitConfig | None) -> int | None:
    assert config is not None
    limit = config.get_limit("first-listener", [("first-route", "first-route"), ("x-user-id", "alice")])
    return None if limit is None else limit.requests_per_unit


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


def settings(pki: Pki, port: int, **tls: str | None) -> XdsClientSettings:
    files = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)} | tls
    return XdsClientSettings(
        server=f"127.0.0.1:{port}",
        node_id=NODE_ID,
        tls=XdsTls(server_name="envoy-gateway", **files),
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )


# --------------------------------------------------------------------------------------------------------
# Tests


async def test_load_update_nack_and_reconnect(pki: Pki) -> None:
    port = free_port()
    server = AdsServer(pki, port)
    server.publish("1", packed(limit_config(100)))
    await server.start()
    applied: list[RateLimitConfig] = []
    metrics = RateLimitMetrics()
    client = XdsConfigClient(settings(pki, port), applied.append, metrics=metrics)
    task = asyncio.create_task(client.run())
    try:
        # initial load: subscribe as EG's node, get version 1, ACK it
        await asyncio.wait_for(client.first_config.wait(), WAIT_S)
        assert user_limit(applied[-1]) == 100
        subscribe = server.requests[0]
        assert (subscribe.node.id, subscribe.type_url, subscribe.version_info) == (
            NODE_ID,
            RATE_LIMIT_CONFIG_TYPE_URL,
            "",
        )
        await until(lambda: len(server.requests) == 2)
        ack = server.requests[1]
        assert (ack.version_info, ack.response_nonce, ack.error_detail) == ("1", "1-1", None)
        assert server.peers == ["envoy-ratelimit"]  # the server saw our client certificate

        # update: the new tree replaces the old one
        server.publish("2", packed(limit_config(200)))
        await until(lambda: len(applied) == 2)
        assert user_limit(applied[-1]) == 200 and client.version == "2"
        await until(lambda: len(server.requests) == 3)
        assert (server.requests[2].version_info, server.requests[2].response_nonce) == ("2", "1-2")

        # a config that does not load is NACKed with the reason; version 2 stays in force
        server.publish("3", packed(BROKEN))
        await until(lambda: len(server.requests) == 4)
        nack = server.requests[3]
        assert (nack.version_info, nack.response_nonce) == ("2", "1-3")
        assert nack.error_detail is not None and nack.error_detail.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert 'domain "first-listener" descriptor x-user-id: rate_limit: unit is required' in nack.error_detail.message
        assert len(applied) == 2 and user_limit(client.config) == 200 and client.version == "2"
        assert metrics.config_reloads.labels("failure")._value.get() == 1

        # the server restarts with a new version: the client reconnects, says what it has, loads the new one
        await server.stop()
        restarted = AdsServer(pki, port)
        restarted.publish("4", packed(limit_config(400)))
        await restarted.start()
        try:
            await until(lambda: len(applied) == 3)
            assert user_limit(applied[-1]) == 400
            assert restarted.requests[0].version_info == "2"  # the last ACKed, not the NACKed 3
            assert restarted.requests[0].response_nonce == ""
            await until(lambda: len(restarted.requests) == 2)
            assert restarted.requests[1].version_info == "4" and restarted.requests[1].error_detail is None
            assert metrics.config_reloads.labels("success")._value.get() == 3
        finally:
            await restarted.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unchanged_config_is_not_sent_again_after_a_reconnect(pki: Pki) -> None:
    port = free_port()
    server = AdsServer(pki, port)
    server.publish("7", packed(limit_config(7)))
    await server.start()
    client = XdsConfigClient(settings(pki, port))
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.first_config.wait(), WAIT_S)
        await until(lambda: len(server.requests) == 2)
        await server.stop()
        again = AdsServer(pki, port)
        again.publish("7", packed(limit_config(7)))
        await again.start()
        try:
            await until(lambda: len(again.requests) == 1)
            assert again.requests[0].version_info == "7"
            assert user_limit(client.config) == 7  # kept across the outage
        finally:
            await again.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_empty_set_of_configs_clears_the_limits(pki: Pki) -> None:
    port = free_port()
    server = AdsServer(pki, port)
    server.publish("1", packed(limit_config(1)))
    await server.start()
    applied: list[RateLimitConfig] = []
    client = XdsConfigClient(settings(pki, port), applied.append)
    task = asyncio.create_task(client.run())
    try:
        await until(lambda: len(applied) == 1)
        server.publish("2", [])  # the last BackendTrafficPolicy was deleted
        await until(lambda: len(applied) == 2)
        assert dict(applied[-1].domains) == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()


async def test_without_a_client_certificate_the_server_refuses(pki: Pki) -> None:
    port = free_port()
    server = AdsServer(pki, port)
    server.publish("1", packed(limit_config(1)))
    await server.start()
    try:
        client = XdsConfigClient(settings(pki, port, cert_file=None, key_file=None))
        with pytest.raises(grpc.RpcError):
            await asyncio.wait_for(client.stream_once(), WAIT_S)
        assert client.config is None and server.requests == []
    finally:
        await server.stop()


async def test_a_server_signed_by_another_ca_is_refused(pki: Pki) -> None:
    port = free_port()
    server = AdsServer(pki, port)
    server.publish("1", packed(limit_config(1)))
    await server.start()
    try:
        client = XdsConfigClient(settings(pki, port, ca_file=str(pki.other_ca)))
        with pytest.raises(grpc.RpcError):
            await asyncio.wait_for(client.stream_once(), WAIT_S)
        assert client.config is None and server.requests == []
    finally:
        await server.stop()


def test_a_response_of_another_type_or_garbage_is_nacked() -> None:
    client = XdsConfigClient(XdsClientSettings(server="127.0.0.1:1"))
    wrong_type = DiscoveryResponse(
        version_info="1", type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster", nonce="a"
    )
    reply = client.handle(wrong_type)
    assert reply.error_detail is not None and "was not asked for" in reply.error_detail.message
    garbage = DiscoveryResponse(
        version_info="2",
        type_url=RATE_LIMIT_CONFIG_TYPE_URL,
        resources=[AnyMessage(type_url=RATE_LIMIT_CONFIG_TYPE_URL, value=b"\xff\xff")],
        nonce="b",
    )
    reply = client.handle(garbage)
    assert reply.error_detail is not None and "resource #1 is not a RateLimitConfig" in reply.error_detail.message
    assert (reply.response_nonce, reply.version_info, client.config) == ("b", "", None)


def test_backoff_doubles_up_to_the_maximum_with_jitter_around_it() -> None:
    client = XdsConfigClient(
        XdsClientSettings(server="x:1", backoff_initial_s=1, backoff_max_s=5, backoff_jitter=False)
    )
    assert [client.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]
    first_delays = {
        XdsConfigClient(XdsClientSettings(server="x:1", backoff_initial_s=10, backoff_random_factor=0.5)).next_delay()
        for _ in range(20)
    }
    assert all(5 <= d <= 15 for d in first_delays) and len(first_delays) > 1


# --------------------------------------------------------------------------------------------------------
# The client wired into the server (what `tokenvoy ratelimit --xds-server` runs)


def _rls_request(user: str = "alice") -> rls_pb2.RateLimitRequest:
    request = rls_pb2.RateLimitRequest(domain="first-listener")
    entries = request.descriptors.add().entries
    entries.add(key="first-route", value="first-route")
    entries.add(key="x-user-id", value=user)
    return request


async def _healthcheck(port: int) -> tuple[int, str]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{port}/healthcheck")
    return answer.status_code, answer.text


async def test_the_server_answers_from_the_tree_the_xds_server_sends(pki: Pki) -> None:
    ads_port = free_port()
    ads = AdsServer(pki, ads_port)
    await ads.start()
    client = XdsConfigClient(settings(pki, ads_port))
    running = await start_server(
        None,
        "127.0.0.1:0",
        xds=client,
        admin_listen="127.0.0.1:0",
        healthy_with_config=True,
        # EG's Envoy reaches its ratelimit over TLS; here with a client certificate required as well
        tls=ServerTls(str(pki.server_cert), str(pki.server_key), str(pki.ca)),
    )
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    assert running.admin is not None
    try:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{running.port}", credentials, options=[("grpc.ssl_target_name_override", "envoy-gateway")]
        ) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)

            # no config yet: an error, so Envoy's failure_mode_deny decides (envoyproxy/ratelimit's answer)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ShouldRateLimit(_rls_request())
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == "no rate limit configuration loaded"
            assert await _healthcheck(running.admin.port) == (500, "no rate limit configuration loaded yet\n")

            ads.publish("1", packed(limit_config(2)))
            await until(lambda: running.service.loaded)
            codes = [(await stub.ShouldRateLimit(_rls_request())).overall_code for _ in range(3)]
            assert codes == [rls_pb2.RateLimitResponse.OK] * 2 + [rls_pb2.RateLimitResponse.OVER_LIMIT]
            assert await _healthcheck(running.admin.port) == (200, "OK")
            async with httpx.AsyncClient() as http:
                shown = (await http.get(f"http://127.0.0.1:{running.admin.port}/rlconfig")).json()
            assert shown == {"loaded": True, "version": "1", "domains": tree_document(running.service.config)}
            assert shown["domains"]["first-listener"]["limits"] == 1

            # a config that does not load: NACKed, the tree in force stays
            ads.publish("2", packed(BROKEN))
            await until(lambda: any(r.error_detail is not None for r in ads.requests))
            over = await stub.ShouldRateLimit(_rls_request())
            assert over.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
            assert over.statuses[0].current_limit.requests_per_unit == 2

            # a raised limit applies live; the counter carries over (4 spent of 5)
            ads.publish("3", packed(limit_config(5)))
            await until(lambda: client.version == "3")
            answer = await stub.ShouldRateLimit(_rls_request())
            assert answer.overall_code == rls_pb2.RateLimitResponse.OK
            assert (answer.statuses[0].current_limit.requests_per_unit, answer.statuses[0].limit_remaining) == (5, 0)

        # without a client certificate the RLS port refuses
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{running.port}",
            grpc.ssl_channel_credentials(pki.ca.read_bytes()),
            options=[("grpc.ssl_target_name_override", "envoy-gateway")],
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(_rls_request(), timeout=WAIT_S)
    finally:
        await running.stop(grace=0)
        await ads.stop()


async def _answers(port: int) -> bool:
    try:
        return (await _healthcheck(port))[0] == 200
    except httpx.HTTPError:
        return False


async def test_waiting_for_the_first_config_serves_nothing_before_it(pki: Pki) -> None:
    # envoyproxy/ratelimit without FORCE_START_WITHOUT_INITIAL_CONFIG: `--xds-wait-for-config`
    ads_port, admin_port = free_port(), free_port()
    ads = AdsServer(pki, ads_port)
    await ads.start()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(
            (),
            "127.0.0.1:0",
            xds=settings(pki, ads_port),
            xds_wait_for_config=True,
            admin_listen=f"127.0.0.1:{admin_port}",
            stop=stop,
        )
    )
    try:
        await until(lambda: len(ads.requests) == 1)  # subscribed, nothing to load yet
        assert not await _answers(admin_port)
        ads.publish("1", packed(limit_config(3)))
        async with asyncio.timeout(WAIT_S):
            while not await _answers(admin_port):
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient() as http:
            shown = (await http.get(f"http://127.0.0.1:{admin_port}/rlconfig")).json()
        assert (shown["loaded"], shown["version"]) == (True, "1")
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
        await ads.stop()


async def test_a_stop_while_waiting_for_the_first_config_ends_cleanly(pki: Pki) -> None:
    ads_port = free_port()
    ads = AdsServer(pki, ads_port)
    await ads.start()
    stop = asyncio.Event()
    waiting = serve((), "127.0.0.1:0", xds=settings(pki, ads_port), xds_wait_for_config=True, stop=stop)
    task = asyncio.create_task(waiting)
    try:
        await until(lambda: len(ads.requests) == 1)
        stop.set()
        assert await asyncio.wait_for(task, WAIT_S) is None
    finally:
        await ads.stop()


async def test_both_or_neither_config_source_is_an_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"give exactly one config source: --config FILE or --xds-server HOST:PORT$"):
        await serve((), "127.0.0.1:0")
    with pytest.raises(ValueError, match="not both"):
        await serve(["a.yaml"], "127.0.0.1:0", xds=settings(pki, 1))

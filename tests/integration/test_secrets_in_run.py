"""Where a provider key does not go under ``tokenvoy run``: other children's environments and Envoy's log,
even once Envoy's log level is raised to trace through its admin API."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway

PROVIDER_KEY = "sk-provider-Do-Not-Leak-4f1c9e"
AWS_SECRET = "aws/Secret+Do-Not-Leak-77"
CLIENT_KEY = "client-key-Do-Not-Leak-2b7d"


def _config(listener_port: int, fake_port: int) -> str:
    policy = {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "BackendSecurityPolicy",
        "metadata": {"name": "fake-key"},
        "spec": {
            "type": "APIKey",
            "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "fake"}],
            "apiKey": {"secretRef": {"name": "fake-key"}},
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fake-key"},
        "stringData": {"apiKey": "${env:TOKENVOY_TEST_PROVIDER_KEY}"},
    }
    documents = [*yaml.safe_load_all(gateway_config(listener_port, fake_port, 100_000)), policy, secret]
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module", params=["direct", "two streams"])
def gateway(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """The one rule goes direct (Envoy injects the key from an SDS file), or (TOKENVOY_NO_DIRECT) extproc's
    upstream filter adds it: either way the key must reach no log."""
    listener_port, fake_port = free_port(), free_port()
    env = {"TOKENVOY_TEST_PROVIDER_KEY": PROVIDER_KEY, "OPENAI_API_KEY": PROVIDER_KEY}
    if request.param == "two streams":
        env["TOKENVOY_NO_DIRECT"] = "1"
    env["AWS_SECRET_ACCESS_KEY"] = AWS_SECRET
    running = start_gateway(
        tmp_path_factory.mktemp("secrets"),
        config_text=_config(listener_port, fake_port),
        env=env,
        fake_port=fake_port,
        listener_port=listener_port,
    )
    try:
        yield running
    finally:
        running.stop()


def _children(gateway: Gateway) -> dict[str, int]:
    health = httpx.get(f"{gateway.admin_url}/healthz").json()
    return {name: child["pid"] for name, child in health["children"].items()}


def test_only_extproc_has_the_provider_secrets_in_its_environment(gateway: Gateway) -> None:
    children = _children(gateway)
    assert len(children) == 4
    for name, pid in children.items():
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        if name == "extproc":
            assert f"TOKENVOY_TEST_PROVIDER_KEY={PROVIDER_KEY}".encode() in environ.split(b"\0")
        else:
            assert PROVIDER_KEY.encode() not in environ, name
            assert AWS_SECRET.encode() not in environ, name


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port``, from the kernel's table (hex, as /proc shows them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:
                found.add(address)
    return found


def test_the_admin_port_is_loopback_only_and_refuses_what_changes_envoy(gateway: Gateway) -> None:
    admin_port = int(gateway.admin_url.rsplit(":", 1)[1])
    assert _listening_addresses(admin_port) == {"0100007F"}  # 127.0.0.1
    for path in ("/logging?level=trace", "/quitquitquit", "/healthcheck/fail", "/runtime_modify?x=1"):
        refused = httpx.post(f"{gateway.admin_url}{path}")
        assert refused.status_code == 405, path
        assert "read-only" in refused.text
    assert httpx.get(f"{gateway.admin_url}/ready").status_code == 200  # Envoy is still up and reachable
    assert "tokenvoy_extproc" in httpx.get(f"{gateway.admin_url}/clusters").text  # reads are forwarded
    socket_path = gateway.run_dir / "envoy-admin.sock"
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600  # Envoy's own admin: its owner only


def test_with_envoy_logging_at_trace_no_credential_reaches_any_log(gateway: Gateway) -> None:
    owner = httpx.Client(transport=httpx.HTTPTransport(uds=str(gateway.run_dir / "envoy-admin.sock")))
    assert owner.post("http://envoy/logging?level=trace").status_code == 200
    try:
        client = OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        assert client.chat.completions.create(model="m", messages=messages).choices[0].message.content
        assert list(client.chat.completions.create(model="m", messages=messages, stream=True))
    finally:
        assert owner.post("http://envoy/logging?level=warning").status_code == 200
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    assert {r["headers"].get("authorization") for r in received} == {f"Bearer {PROVIDER_KEY}"}
    gateway.wait_for_log(lambda entry: entry.get("response_code") == 200)
    logs = gateway.stderr() + gateway.stdout_path.read_text(errors="replace")
    assert "[debug][ext_proc]" in logs and "Received request headers response" in logs  # the dumps were on
    assert "key=authorization value=<redacted>" in logs  # the client's key in the HTTP/1 codec's trace
    if (gateway.run_dir / "secrets").exists():
        assert "Successfully injected credential" in logs  # Envoy added the key itself: extproc never sent it
    else:
        assert 'raw_value: "<redacted>"' in logs  # the key in the upstream filter's header mutation dump
    for secret in (PROVIDER_KEY, CLIENT_KEY, AWS_SECRET):
        assert secret not in logs

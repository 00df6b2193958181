"""TLS to a provider through real Envoy: SNI, the certificate's name and a private CA from BackendTLSPolicy.

The fake provider serves HTTPS with a certificate from a throwaway CA (trustme) for ``api.fake.test``; Envoy
connects to ``localhost`` and must send ``api.fake.test`` as SNI and accept only that name, signed by the CA
the policy names. A wrong name or an unknown CA must be refused, never answered.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme
import yaml
from openai import OpenAI

from tests.integration.conftest import free_port, gateway_config, start_gateway
from tokenvoy.testupstream.server import run_in_thread

PROVIDER_NAME = "api.fake.test"


@contextmanager
def https_provider(ca: trustme.CA, name: str) -> Iterator[tuple[int, list[str | None]]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    sni_seen: list[str | None] = []
    context.sni_callback = lambda _sock, server_name, _ctx: sni_seen.append(server_name)
    with run_in_thread("127.0.0.1", free_port(), ssl=context) as server:
        yield server.port, sni_seen


def _config(listener_port: int, provider_port: int, ca_pem: str | None) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, free_port(), 1_000_000)))
    for doc in documents:
        if doc["kind"] == "Backend":
            doc["metadata"].pop("annotations", None)  # a provider of the test's own, not `tokenvoy run`'s fake
            doc["spec"]["endpoints"] = [{"fqdn": {"hostname": "localhost", "port": provider_port}}]
    validation: dict[str, object] = {"hostname": PROVIDER_NAME}
    if ca_pem is None:
        validation["wellKnownCACertificates"] = "System"
    else:
        validation["caCertificateRefs"] = [{"group": "", "kind": "ConfigMap", "name": "provider-ca"}]
        documents.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "provider-ca"}, "data": {"ca.crt": ca_pem}}
        )
    documents.append(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "BackendTLSPolicy",
            "metadata": {"name": "provider-tls"},
            "spec": {
                "targetRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "fake"}],
                "validation": validation,
            },
        }
    )
    return yaml.safe_dump_all(documents, sort_keys=False)


def test_the_provider_is_reached_over_tls_with_the_policys_name_and_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    with https_provider(ca, PROVIDER_NAME) as (port, sni_seen):
        listener_port = free_port()
        config = _config(listener_port, port, ca.cert_pem.bytes().decode())
        gateway = start_gateway(tmp_path, config_text=config)
        try:
            request_id = f"tls-{uuid.uuid4()}"
            client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=2,
                extra_headers={"x-request-id": request_id},
            )
            entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
        finally:
            gateway.stop()
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    assert sni_seen and set(sni_seen) == {PROVIDER_NAME}
    assert entry["response_code"] == 200 and entry["upstream_host"].endswith(f":{port}")


@pytest.mark.parametrize("problem", ["certificate for another name", "CA not trusted"])
def test_a_provider_certificate_that_does_not_verify_is_refused(tmp_path: Path, problem: str) -> None:
    ca = trustme.CA()
    name = "elsewhere.test" if problem == "certificate for another name" else PROVIDER_NAME
    trusted = ca.cert_pem.bytes().decode() if problem == "certificate for another name" else None
    with https_provider(ca, name) as (port, _):
        gateway = start_gateway(tmp_path, config_text=_config(free_port(), port, trusted))
        try:
            response = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            received = httpx.get(f"https://127.0.0.1:{port}/__testupstream/requests", verify=False).json()
        finally:
            gateway.stop()
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "upstream_unavailable"
    assert "CERTIFICATE_VERIFY_FAILED" in error["message"], error["message"]
    assert received == [], "the request must not reach a provider whose certificate failed"

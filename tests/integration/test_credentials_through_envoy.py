"""Cloud credentials end to end: OpenAI SDK → real Envoy + extproc → the fake provider, which checks them.

- AWSCredentials: the fake re-signs every ``AWS4-HMAC-SHA256`` request with botocore and the secret it knows
  for the access key id, so a 200 proves the gateway's SigV4 signature (host, path, body) is right, and a
  wrong secret is refused by the "provider" with 403 ``InvalidSignatureException``.
- GCPCredentials: a service-account key whose ``token_uri`` is a fake Google token endpoint (in this test
  process) that verifies the JWT grant's RS256 signature; tokens are cached, refreshed before expiry, and the
  backend path gets ``/v1/projects/{project}/locations/{region}``.
- AzureCredentials: azure-identity gets an Entra token from a fake authority over TLS (``AZURE_AUTHORITY_HOST``
  plus ``REQUESTS_CA_BUNDLE`` for the test CA).
- Refused credentials answer 503 naming the policy; no secret reaches logs or rendered files.

The fake runs with ``TESTUPSTREAM_REQUIRE_CREDENTIALS=1``: every provider route refuses a request without its
credential (OpenAI 401, Vertex 401 ``UNAUTHENTICATED``, Bedrock 403 ``MissingAuthenticationTokenException``).
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, start_gateway
from tokenvoy.testupstream import aws_auth, credentials
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

AWS_WRONG_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWRONGKEY"
SESSION_KEY_ID, SESSION_SECRET, SESSION_TOKEN = "ASIATESTSESSION1", "sessionSecret/DoNotLeak+123", "FwoGZXIvYXdzEXAMPLE"
AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_SECRET = (
    "11111111-2222-3333-4444-555555555555",
    "contoso-tenant",
    "az~Secret.Do-Not_Leak",
)
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
VERTEX_MODEL = "claude-3-5-haiku@20241022"
MESSAGES = [{"role": "user", "content": "hello there gateway"}]


def _service_account(email: str, token_uri: str) -> tuple[dict[str, Any], str]:
    """A real RSA service-account key (the private part for the gateway, the public one for the fake)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    info = {
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": uuid.uuid4().hex,
        "private_key": private,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return info, public


def _resource(kind: str, name: str, spec: dict[str, Any], api: str = "aigateway.envoyproxy.io/v1alpha1") -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def _policy(name: str, kind: str, field: str, spec: dict[str, Any]) -> dict[str, Any]:
    target = {"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}
    return _resource("BackendSecurityPolicy", name, {"type": kind, "targetRefs": [target], field: spec})


# model → (AIServiceBackend, schema)
BACKENDS = {
    BEDROCK_MODEL: ("aws-file", {"name": "AWSAnthropic"}),
    "aws-env-model": ("aws-env", {"name": "OpenAI"}),
    "aws-wrong-model": ("aws-wrong", {"name": "OpenAI"}),
    VERTEX_MODEL: ("gcp-long", {"name": "GCPAnthropic"}),
    "gcp-short-model": ("gcp-short", {"name": "OpenAI"}),
    "gcp-refused-model": ("gcp-refused", {"name": "OpenAI"}),
    "azure-gpt": ("azure", {"name": "AzureOpenAI", "version": "2024-10-21"}),
    "azure-wrong-model": ("azure-wrong", {"name": "OpenAI"}),
}


def credentials_config(listener_port: int, fake_port: int, secrets_dir: Path, token_url: str) -> str:
    rules = [
        {
            "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}],
            "backendRefs": [{"name": backend}],
        }
        for model, (backend, _) in BACKENDS.items()
    ]
    gateway_ref = {"name": "tokenvoy", "kind": "Gateway", "group": "gateway.networking.k8s.io"}
    documents: list[dict[str, Any]] = [
        _resource(
            "Gateway",
            "tokenvoy",
            {
                "gatewayClassName": "tokenvoy",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": listener_port}],
            },
            "gateway.networking.k8s.io/v1",
        ),
        _resource("AIGatewayRoute", "clouds", {"parentRefs": [gateway_ref], "rules": rules}),
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": "fake", "annotations": {"tokenvoy.io/fake-provider": "true"}},
            "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": fake_port}}]},
        },
    ]
    for backend, schema in BACKENDS.values():
        backend_ref = {"name": "fake", "kind": "Backend", "group": "gateway.envoyproxy.io"}
        documents.append(_resource("AIServiceBackend", backend, {"schema": schema, "backendRef": backend_ref}))
    aws_file = f"[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n[bedrock]\naws_access_key_id = {aws_auth.EXAMPLE_ACCESS_KEY_ID}\naws_secret_access_key = {aws_auth.EXAMPLE_SECRET_ACCESS_KEY}\n"  # noqa: E501
    wrong_file = (
        f"[default]\naws_access_key_id = {aws_auth.EXAMPLE_ACCESS_KEY_ID}\naws_secret_access_key = {AWS_WRONG_SECRET}\n"
    )
    documents += [
        _policy(
            "aws-file",
            "AWSCredentials",
            "awsCredentials",
            {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "aws-file"}, "profile": "bedrock"}},
        ),
        _secret("aws-file", {"credentials": aws_file}),
        _policy("aws-env", "AWSCredentials", "awsCredentials", {"region": "eu-west-3"}),
        _policy(
            "aws-wrong",
            "AWSCredentials",
            "awsCredentials",
            {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "aws-wrong"}}},
        ),
        _secret("aws-wrong", {"credentials": wrong_file}),
    ]
    for name in ("gcp-long", "gcp-short", "gcp-refused"):
        documents += [
            _policy(
                name,
                "GCPCredentials",
                "gcpCredentials",
                {"projectName": "my-project", "region": "us-east5", "credentialsFile": {"secretRef": {"name": name}}},
            ),
            _secret(name, {"service_account.json": f"${{file:{secrets_dir / (name + '.json')}}}"}),
        ]
    for name, secret in (("azure", AZURE_SECRET), ("azure-wrong", "not-the-secret")):
        documents += [
            _policy(
                name,
                "AzureCredentials",
                "azureCredentials",
                {"clientID": AZURE_CLIENT_ID, "tenantID": AZURE_TENANT_ID, "clientSecretRef": {"name": name}},
            ),
            _secret(name, {"client-secret": secret}),
        ]
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def token_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BackgroundServer, BackgroundServer, Path]]:
    """A plain-HTTP fake Google token endpoint and an HTTPS fake Entra authority (test CA in ``ca.pem``)."""
    directory = tmp_path_factory.mktemp("tokens")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    google, entra = run_in_thread(), run_in_thread(ssl=context)
    entra.app.tokens.azure_clients[AZURE_CLIENT_ID] = AZURE_SECRET
    try:
        yield google, entra, directory
    finally:
        google.close()
        entra.close()


SERVICE_ACCOUNTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, token_servers: tuple[BackgroundServer, BackgroundServer, Path]
) -> Iterator[Gateway]:
    google, entra, ca_dir = token_servers
    directory: Path = tmp_path_factory.mktemp("credentials")
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir()
    token_url = f"{google.url}/__testupstream/gcp/token"
    for name, query in (("gcp-long", ""), ("gcp-short", "?expires_in=3"), ("gcp-refused", "?error=invalid_grant")):
        info, public = _service_account(f"{name}@my-project.iam.gserviceaccount.com", token_url + query)
        google.app.tokens.gcp_public_keys[info["client_email"]] = public
        (secrets_dir / f"{name}.json").write_text(json.dumps(info))
        SERVICE_ACCOUNTS[name] = info
    listener_port, fake_port = free_port(), free_port()
    env = {
        "AWS_ACCESS_KEY_ID": SESSION_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SESSION_SECRET,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_EC2_METADATA_DISABLED": "true",
        aws_auth.KEYS_ENV: f"{SESSION_KEY_ID}:{SESSION_SECRET}:{SESSION_TOKEN}",  # what the fake AWS knows
        credentials.REQUIRE_ENV: "1",  # every provider refuses a request without its credential
        "AZURE_AUTHORITY_HOST": entra.url.replace("http://", "https://"),
        "REQUESTS_CA_BUNDLE": str(ca_dir / "ca.pem"),
    }
    config = credentials_config(listener_port, fake_port, secrets_dir, token_url)
    running = start_gateway(directory, config_text=config, fake_port=fake_port, env=env)
    try:
        yield running
    finally:
        running.stop()


def client(gateway: Gateway, request_id: str) -> OpenAI:
    return OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="client-key-must-not-reach-the-provider",
        default_headers={"x-request-id": request_id},
        max_retries=0,
    )


def chat(gateway: Gateway, model: str, **extra: Any) -> tuple[Any, dict[str, Any]]:
    request_id = f"cred-{uuid.uuid4()}"
    reply = client(gateway, request_id).chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, **extra)
    if extra.get("stream"):
        reply = list(reply)
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return reply, next(r for r in received if r["headers"].get("x-request-id") == request_id)


def grants(server: BackgroundServer, client_id: str, ca: Path | None = None) -> list[dict[str, Any]]:
    """The grants the fake token endpoint issued to ``client_id`` (``ca``: it serves HTTPS with that CA)."""
    url = server.url.replace("http://", "https://") if ca else server.url
    answer = httpx.get(
        f"{url}/__testupstream/tokens", verify=ssl.create_default_context(cafile=ca / "ca.pem") if ca else True
    )
    return [g for g in answer.json()["grants"] if g["client"] == client_id]


def test_the_fake_refuses_a_request_without_credentials_here(gateway: Gateway) -> None:
    """So each 200 below proves the gateway sent the credential (the switch reached the fake's process)."""
    body = {"model": "m", "messages": MESSAGES}
    assert httpx.post(f"{gateway.fake_url}/v1/chat/completions", json=body).status_code == 401
    unsigned = httpx.post(f"{gateway.fake_url}/model/{BEDROCK_MODEL}/invoke", json={"messages": MESSAGES})
    assert (unsigned.status_code, unsigned.json()) == (403, {"message": "Missing Authentication Token"})


# -- AWS ------------------------------------------------------------------------------------------------


def test_bedrock_request_is_signed_with_the_credentials_file_profile_and_verified_by_the_provider(
    gateway: Gateway,
) -> None:
    reply, sent = chat(gateway, BEDROCK_MODEL)
    assert reply.choices[0].message.content
    assert sent["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"  # encoded, and signed so
    authorization = sent["headers"]["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={aws_auth.EXAMPLE_ACCESS_KEY_ID}/")
    assert "/us-east-1/bedrock/aws4_request" in authorization
    assert "SignedHeaders=host;x-amz-date," in authorization
    assert "x-amz-security-token" not in sent["headers"]
    # the fake answered 200, so it verified the signature; check it independently on what it received
    verdict = aws_auth.verify("POST", sent["path"], sent["headers"], sent["body"].encode(), aws_auth.known_keys({}))
    assert isinstance(verdict, aws_auth.Verified), verdict
    tampered = sent["body"].replace("hello", "HELLO").encode()
    assert isinstance(
        aws_auth.verify("POST", sent["path"], sent["headers"], tampered, aws_auth.known_keys({})), aws_auth.Denied
    )


def test_streamed_bedrock_request_is_signed_too(gateway: Gateway) -> None:
    chunks, sent = chat(gateway, BEDROCK_MODEL, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sent["path"].endswith("/invoke-with-response-stream")
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_env_credentials_with_a_session_token_are_signed_for_the_policy_region(gateway: Gateway) -> None:
    reply, sent = chat(gateway, "aws-env-model")
    assert reply.choices[0].message.content
    assert f"Credential={SESSION_KEY_ID}/" in sent["headers"]["authorization"]
    assert "/eu-west-3/bedrock/aws4_request" in sent["headers"]["authorization"]
    assert "x-amz-security-token" in sent["headers"]["authorization"]  # signed
    assert sent["headers"]["x-amz-security-token"] == SESSION_TOKEN


def test_a_wrong_secret_is_refused_by_the_provider_like_aws(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(gateway, "aws-wrong-model")
    assert caught.value.status_code == 403
    assert caught.value.response.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    assert "signature we calculated does not match" in caught.value.response.text


# -- GCP ------------------------------------------------------------------------------------------------


def test_vertex_request_carries_the_service_account_token_and_the_project_location_prefix(
    gateway: Gateway, token_servers: tuple[BackgroundServer, BackgroundServer, Path]
) -> None:
    google = token_servers[0]
    email = SERVICE_ACCOUNTS["gcp-long"]["client_email"]
    reply, first = chat(gateway, VERTEX_MODEL)
    _, second = chat(gateway, VERTEX_MODEL)
    assert reply.choices[0].message.content
    assert first["path"] == (
        "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022:rawPredict"
    )
    issued = grants(google, email)
    assert len(issued) == 1  # fetched once at startup, cached for both requests
    assert issued[0]["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert (
        first["headers"]["authorization"] == second["headers"]["authorization"] == f"Bearer {issued[0]['access_token']}"
    )


def test_a_short_lived_gcp_token_is_refreshed_in_the_background(
    gateway: Gateway, token_servers: tuple[BackgroundServer, BackgroundServer, Path]
) -> None:
    google = token_servers[0]
    email = SERVICE_ACCOUNTS["gcp-short"]["client_email"]
    _, before = chat(gateway, "gcp-short-model")
    count = len(grants(google, email))
    deadline = time.monotonic() + 10
    while len(grants(google, email)) < count + 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # no requests meanwhile: refreshing does not wait for one
    issued = grants(google, email)
    assert len(issued) >= count + 2, issued
    _, after = chat(gateway, "gcp-short-model")
    assert after["headers"]["authorization"] != before["headers"]["authorization"]
    assert after["headers"]["authorization"] in {f"Bearer {g['access_token']}" for g in issued[-2:]}


def test_refused_gcp_credentials_answer_503_naming_the_policy_and_are_logged(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(gateway, "gcp-refused-model")
    assert caught.value.status_code == 503
    message = caught.value.body["message"]
    assert "BackendSecurityPolicy/gcp-refused" in message and "invalid_grant" in message
    assert "BackendSecurityPolicy/gcp-refused: cannot get an access token" in gateway.stderr()


# -- Azure ----------------------------------------------------------------------------------------------


def test_azure_openai_request_carries_an_entra_token_for_the_client_secret(
    gateway: Gateway, token_servers: tuple[BackgroundServer, BackgroundServer, Path]
) -> None:
    _, entra, ca = token_servers
    reply, first = chat(gateway, "azure-gpt")
    _, second = chat(gateway, "azure-gpt")
    assert reply.choices[0].message.content
    assert first["path"].startswith("/openai/deployments/azure-gpt/chat/completions?api-version=2024-10-21")
    issued = grants(entra, AZURE_CLIENT_ID, ca)
    assert [(g["tenant"], g["scope"]) for g in issued] == [
        (AZURE_TENANT_ID, "https://cognitiveservices.azure.com/.default")
    ]
    assert (
        first["headers"]["authorization"] == second["headers"]["authorization"] == f"Bearer {issued[0]['access_token']}"
    )
    assert "api-key" not in first["headers"]


def test_a_wrong_azure_client_secret_answers_503_naming_the_policy(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(gateway, "azure-wrong-model")
    assert caught.value.status_code == 503
    assert "BackendSecurityPolicy/azure-wrong" in caught.value.body["message"]
    assert "Invalid client secret" in caught.value.body["message"]  # Entra's reason, not the secret


# -- secrets stay secret --------------------------------------------------------------------------------


def test_no_secret_reaches_logs_or_rendered_files(gateway: Gateway) -> None:
    chat(gateway, "aws-env-model")
    secrets = [aws_auth.EXAMPLE_SECRET_ACCESS_KEY, AWS_WRONG_SECRET, SESSION_SECRET, AZURE_SECRET]
    secrets += [info["private_key"].splitlines()[5] for info in SERVICE_ACCOUNTS.values()]
    texts = {"stderr": gateway.stderr(), "access log": gateway.stdout_path.read_text()}
    texts |= {
        str(p): p.read_text(errors="replace")
        for p in gateway.run_dir.rglob("*")
        if p.is_file() and p.stat().st_size < 10_000_000
    }
    assert len(texts) > 3
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"

"""GCP and Azure tokens: fetched off the request path, cached, refreshed ahead of expiry, failures explained."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenvoy.config.model import AzureCredentials, GCPCredentials, Secret
from tokenvoy.extproc.credentials import CredentialUnavailable, azure, gcp
from tokenvoy.extproc.credentials.base import TokenRefresher, describe, refresh_wait
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

POLICY = "BackendSecurityPolicy/p"

# -- the refresher --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_refresh_happens_ahead_of_expiry() -> None:
    assert refresh_wait(3600) == pytest.approx(2880)  # 80% of an hour
    assert refresh_wait(900) == pytest.approx(600)  # 5 minutes before a 15-minute token
    assert refresh_wait(4) == pytest.approx(2)  # half of a very short one
    assert refresh_wait(0) == pytest.approx(0.5)  # never a busy loop


def test_no_token_yet_is_unavailable_naming_the_policy_then_the_cached_header_is_served() -> None:
    clock, calls = Clock(), []

    def fetch() -> tuple[str, float]:
        calls.append(clock.now)
        return f"tok-{len(calls)}", clock.now + 3600

    refresher = TokenRefresher(POLICY, fetch, clock=clock)
    with pytest.raises(CredentialUnavailable, match="BackendSecurityPolicy/p has no valid access token"):
        refresher.sign("POST", "h", "/", b"")
    assert refresher.refresh_once() == pytest.approx(2880)
    for _ in range(3):  # the request path only reads: no fetch per request
        assert refresher.sign("POST", "h", "/", b"") == {"authorization": "Bearer tok-1"}
    assert len(calls) == 1


def test_a_failed_refresh_keeps_the_valid_token_and_an_expired_one_is_refused_with_the_reason() -> None:
    clock = Clock()
    outcomes: list[Any] = [("tok-1", clock.now + 100), RuntimeError("token endpoint said no: password=hunter22")]

    def fetch() -> tuple[str, float]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    refresher = TokenRefresher(POLICY, fetch, secrets=["hunter22"], clock=clock)
    refresher.refresh_once()
    with pytest.raises(RuntimeError):
        refresher.refresh_once()
    assert refresher.sign("POST", "h", "/", b"") == {"authorization": "Bearer tok-1"}  # still valid
    clock.now += 101
    with pytest.raises(CredentialUnavailable) as caught:
        refresher.sign("POST", "h", "/", b"")
    assert "the access token expired" in str(caught.value) and "token endpoint said no" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_describe_redacts_secrets_and_keeps_one_line() -> None:
    text = describe(ValueError("bad key sk-abc123 for you\nsecond line sk-abc123"), ["sk-abc123"])
    assert text == "ValueError: bad key *** for you"


def test_the_background_thread_refreshes_without_any_request() -> None:
    fetched = threading.Event()
    count = [0]

    def fetch() -> tuple[str, float]:
        count[0] += 1
        if count[0] >= 3:
            fetched.set()
        return f"tok-{count[0]}", time.time() + 1.2  # refreshed every 0.6 s

    refresher = TokenRefresher(POLICY, fetch)
    refresher.start()
    try:
        assert refresher.wait_ready(5)
        assert fetched.wait(5)
        assert refresher.sign("POST", "h", "/", b"")["authorization"] in {f"Bearer tok-{n}" for n in (3, 4)}
    finally:
        refresher.stop()


def test_the_background_thread_retries_after_a_failure() -> None:
    attempts: list[float] = []
    done = threading.Event()

    def fetch() -> tuple[str, float]:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ConnectionError("token endpoint down")
        done.set()
        return "tok", time.time() + 3600

    refresher = TokenRefresher(POLICY, fetch)
    refresher.start()
    try:
        assert refresher.wait_ready(5)
        assert done.wait(5)
        assert attempts[1] - attempts[0] >= 0.9  # backoff, not a busy loop
        assert refresher.sign("POST", "h", "/", b"") == {"authorization": "Bearer tok"}
    finally:
        refresher.stop()


# -- GCP ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def google() -> Iterator[BackgroundServer]:
    server = run_in_thread()
    try:
        yield server
    finally:
        server.close()


def _key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _service_account(email: str, token_uri: str, private: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "abc123",
            "private_key": private,
            "client_email": email,
            "token_uri": token_uri,
        }
    )


def _grants(server: BackgroundServer, client: str, verify: Any = True) -> list[dict[str, Any]]:
    url = server.url.replace("http://", "https://") if verify is not True else server.url
    answer = httpx.get(f"{url}/__testupstream/tokens", verify=verify).json()
    return [g for g in answer["grants"] if g["client"] == client]


def test_a_service_account_token_is_fetched_with_a_signed_jwt_grant(google: BackgroundServer) -> None:
    private, public = _key()
    email = "sa-ok@proj.iam.gserviceaccount.com"
    google.app.tokens.gcp_public_keys[email] = public  # the fake verifies the RS256 signature
    secret = Secret(
        "literal", _service_account(email, f"{google.url}/__testupstream/gcp/token?expires_in=120", private), "S"
    )
    refresher = gcp.build(POLICY, GCPCredentials("proj", "us-central1", secret))
    before = time.time()
    assert refresher.refresh_once() == pytest.approx(60, abs=2)  # half of a 2-minute token
    (grant,) = _grants(google, email)
    assert grant["scope"] == gcp.SCOPE
    assert refresher.sign("POST", "", "", b"") == {"authorization": f"Bearer {grant['access_token']}"}
    assert refresher._state is not None and before + 110 < refresher._state[1] < time.time() + 121


def test_a_token_endpoint_refusal_is_reported_without_the_key(google: BackgroundServer) -> None:
    private, _ = _key()
    _, other_public = _key()
    email = "sa-rotated@proj.iam.gserviceaccount.com"
    google.app.tokens.gcp_public_keys[email] = other_public  # the key was rotated: the signature fails
    secret = Secret("literal", _service_account(email, f"{google.url}/__testupstream/gcp/token", private), "S")
    refresher = gcp.build(POLICY, GCPCredentials("proj", "us-central1", secret))
    with pytest.raises(Exception) as caught:
        refresher.refresh_once()
    assert "Invalid JWT Signature" in str(caught.value)
    with pytest.raises(CredentialUnavailable) as unavailable:
        refresher.sign("POST", "", "", b"")
    assert "Invalid JWT Signature" in str(unavailable.value) and "PRIVATE KEY" not in str(unavailable.value)


def test_an_unreachable_token_endpoint_is_reported() -> None:
    private, _ = _key()
    secret = Secret("literal", _service_account("sa@p.iam", "http://127.0.0.1:9/token", private), "S")
    refresher = gcp.build(POLICY, GCPCredentials("proj", "us-central1", secret))
    with pytest.raises(Exception):  # noqa: B017 - google-auth's TransportError or RefreshError
        refresher.refresh_once()
    with pytest.raises(CredentialUnavailable, match="BackendSecurityPolicy/p has no valid access token"):
        refresher.sign("POST", "", "", b"")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json {", "is not JSON"),
        ('{"type": "service_account", "client_email": "a@b"}', "missing private_key, token_uri"),
        (
            '{"type": "authorized_user", "client_email": "a", "private_key": "k", "token_uri": "t"}',
            "expected 'service_account'",
        ),
        (
            '{"type": "service_account", "client_email": "a", "private_key": "garbage-key-material", "token_uri": "t"}',
            "private key cannot be loaded",
        ),
    ],
)
def test_an_unusable_service_account_key_fails_at_startup_without_its_content(text: str, message: str) -> None:
    secret = Secret("literal", text, "Secret/gcp key 'service_account.json'")
    with pytest.raises(gcp.GCPConfigError) as caught:
        gcp.build(POLICY, GCPCredentials("proj", "r", secret))
    assert message in str(caught.value) and "Secret/gcp key 'service_account.json'" in str(caught.value)
    assert "garbage-key-material" not in str(caught.value)


# -- Azure ----------------------------------------------------------------------------------------------

TENANT, CLIENT, CLIENT_SECRET = "72f988bf-86f1-41af-91ab-2d7cd011db47", "app-client-1", "az-Secret~value.123"


@pytest.fixture(scope="module")
def entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundServer, Path]]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("entra") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = run_in_thread(ssl=context)
    server.app.tokens.azure_clients[CLIENT] = CLIENT_SECRET
    try:
        yield server, ca_file
    finally:
        server.close()


@pytest.fixture
def authority(entra: tuple[BackgroundServer, Path], monkeypatch: pytest.MonkeyPatch) -> BackgroundServer:
    server, ca_file = entra
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", server.url.replace("http://", "https://"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    return server


def test_an_entra_token_is_fetched_for_the_client_secret_and_cached(
    authority: BackgroundServer, entra: tuple[BackgroundServer, Path]
) -> None:
    refresher = azure.build(POLICY, AzureCredentials(CLIENT, TENANT, Secret("literal", CLIENT_SECRET, "S")))
    refresher.refresh_once()
    verify = ssl.create_default_context(cafile=entra[1])
    (grant,) = _grants(authority, CLIENT, verify)
    assert (grant["tenant"], grant["scope"]) == (TENANT, azure.SCOPE)
    assert refresher.sign("POST", "", "", b"") == {"authorization": f"Bearer {grant['access_token']}"}


def test_a_wrong_client_secret_is_reported_without_the_secret(authority: BackgroundServer) -> None:
    refresher = azure.build(POLICY, AzureCredentials(CLIENT, TENANT, Secret("literal", "wrong-secret-xyz", "S")))
    with pytest.raises(Exception):  # noqa: B017 - azure-core's ClientAuthenticationError
        refresher.refresh_once()
    with pytest.raises(CredentialUnavailable) as caught:
        refresher.sign("POST", "", "", b"")
    assert "Invalid client secret" in str(caught.value) and "wrong-secret-xyz" not in str(caught.value)


def test_a_plain_http_authority_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://127.0.0.1:1")
    with pytest.raises(azure.AzureConfigError, match="https"):
        azure.build(POLICY, AzureCredentials(CLIENT, TENANT, Secret("literal", CLIENT_SECRET, "S")))

"""Client authentication through real Envoy (docs/auth.md): each client's own key (OpenAI, Anthropic and
google-genai SDKs unchanged: ``authorization``, ``x-api-key``, ``x-goog-api-key``), a wrong or missing key
refused with 401 before any provider is contacted, the client key never reaching the provider, the identity
from the key (not a header the client sends) feeding budgets and the access log, per-client model allowlists
(403, the model lists), and JWTs verified against a local JWKS."""

from __future__ import annotations

import http.server
import json
import os
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jwt
import openai
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.integration.conftest import Gateway, gateway_config, start_gateway
from tests.ports import free_port

ALICE_KEY = "tv-alice-" + uuid.uuid4().hex
BOB_KEY = "tv-bob-" + uuid.uuid4().hex
INTERN_KEY = "tv-intern-" + uuid.uuid4().hex
BUDGET = 100_000

API_KEYS = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: client-keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: tokenvoy}]
  apiKeyAuth:
    credentialRefs: [{group: "", kind: Secret, name: client-keys}]
    extractFrom: [{headers: [authorization, x-api-key, x-goog-api-key]}]
---
apiVersion: v1
kind: Secret
metadata: {name: client-keys}
stringData:
  alice: %(alice)s
  bob: ${file:%(bob_file)s}
  intern-1: ${env:TEST_INTERN_KEY}
---
apiVersion: tokenvoy.io/v1alpha1
kind: TokenvoyConfig
metadata: {name: tokenvoy}
spec:
  metrics:
    requestHeaderLabels: {x-user-id: user}
  modelAccess:
    - values: [intern-1]
      models: [gpt-4o-mini, "claude-haiku-*"]
"""


def _fake_requests(gateway: Gateway) -> list[dict[str, Any]]:
    return httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("client-keys")
    bob_file = directory / "bob.key"
    bob_file.write_text(BOB_KEY + "\n")
    port, fake = free_port(), free_port()
    config = gateway_config(port, fake, BUDGET, showcase=True)
    config += API_KEYS % {"alice": ALICE_KEY, "bob_file": bob_file}
    gateway = start_gateway(
        directory, config_text=config, listener_port=port, fake_port=fake, env={"TEST_INTERN_KEY": INTERN_KEY}
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def _openai(gateway: Gateway, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, default_headers=headers, max_retries=0)


def _anthropic(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=key, max_retries=0)


def _by_request_id(gateway: Gateway, request_id: str) -> dict[str, Any]:
    return gateway.wait_for_log(lambda entry: entry.get("x-request-id") == request_id)


def test_each_sdk_is_served_with_its_own_key_and_the_provider_never_sees_it(keyed: Gateway) -> None:
    request_id = str(uuid.uuid4())
    reply = _openai(keyed, ALICE_KEY, **{"x-request-id": request_id}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.parse().choices[0].message.content
    assert reply.headers["x-ratelimit-limit"].startswith(str(BUDGET))  # the default per-user budget applies
    assert _by_request_id(keyed, request_id)["x-user-id"] == "alice"

    message = _anthropic(keyed, BOB_KEY).messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text
    keyed.wait_for_log(lambda entry: entry.get("x-user-id") == "bob" and entry.get("response_code") == 200)

    sent = json.dumps(_fake_requests(keyed))
    assert ALICE_KEY not in sent and BOB_KEY not in sent
    metrics = httpx.get(f"{keyed.metrics_url}/metrics").text  # per-client metrics from the key's client id
    assert 'user="alice"' in metrics and 'user="bob"' in metrics


def test_no_key_is_on_disk_or_in_envoys_config_dump(keyed: Gateway) -> None:
    dump = httpx.get(f"{keyed.admin_url}/config_dump", params={"include_eds": "true"}).text
    assert "tokenvoy.client_api_keys" in dump and "[redacted]" in dump  # the ECDS config, keys masked by Envoy
    assert ALICE_KEY not in dump and INTERN_KEY not in dump
    written = "".join(
        p.read_text(errors="replace")
        for p in keyed.run_dir.rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".json", ".log")
    )
    assert ALICE_KEY not in written and INTERN_KEY not in written
    logs = keyed.stderr() + keyed.stdout_path.read_text()
    assert ALICE_KEY not in logs and BOB_KEY not in logs and INTERN_KEY not in logs


def test_a_wrong_or_missing_key_is_401_in_the_clients_shape_and_no_provider_is_contacted(keyed: Gateway) -> None:
    before = len(_fake_requests(keyed))
    with pytest.raises(openai.AuthenticationError) as refused:
        _openai(keyed, "tv-not-a-key").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 401
    assert refused.value.body["type"] == "authentication_error"
    assert "unknown API key" in refused.value.body["message"]

    with pytest.raises(anthropic.AuthenticationError) as refused_anthropic:
        _anthropic(keyed, "tv-not-a-key").messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused_anthropic.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": refused_anthropic.value.body["error"]["message"]},
    }

    missing = httpx.post(
        f"{keyed.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert missing.status_code == 401
    assert "missing or unknown API key" in missing.json()["error"]["message"]
    assert httpx.get(f"{keyed.url}/v1/models").status_code == 401
    assert len(_fake_requests(keyed)) == before


def test_the_identity_comes_from_the_key_not_from_a_header_the_client_sends(keyed: Gateway) -> None:
    request_id = str(uuid.uuid4())
    client = _openai(keyed, ALICE_KEY, **{"x-user-id": "mallory", "x-request-id": request_id})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert _by_request_id(keyed, request_id)["x-user-id"] == "alice"


def test_a_model_outside_the_clients_allowlist_is_403_naming_it(keyed: Gateway) -> None:
    before = len(_fake_requests(keyed))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        _openai(keyed, INTERN_KEY).chat.completions.create(
            model="azure-gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert "'azure-gpt-4o-mini' is not allowed" in denied.value.body["message"]
    assert "x-user-id: intern-1" in denied.value.body["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as denied_anthropic:
        _anthropic(keyed, INTERN_KEY).messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied_anthropic.value.body["error"]["type"] == "permission_error"
    assert "'claude-sonnet-4-6' is not allowed" in denied_anthropic.value.body["error"]["message"]
    assert len(_fake_requests(keyed)) == before

    # exact and prefix entries are served
    intern = _openai(keyed, INTERN_KEY)
    assert intern.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices
    message = _anthropic(keyed, INTERN_KEY).messages.create(
        model="claude-haiku-4-5@20251001", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content


def test_the_model_list_holds_what_the_caller_may_use(keyed: Gateway) -> None:
    intern_models = [model.id for model in _openai(keyed, INTERN_KEY).models.list()]
    assert intern_models == ["gpt-4o-mini", "claude-haiku-4-5@20251001"]
    assert [model.id for model in _anthropic(keyed, INTERN_KEY).models.list()] == intern_models
    alice_models = [model.id for model in _openai(keyed, ALICE_KEY).models.list()]
    assert set(intern_models) < set(alice_models) and "claude-sonnet-4-6" in alice_models


def _gemini(gateway: Gateway, key: str) -> genai.Client:
    """As gemini-cli with GEMINI_API_KEY: the key goes in `x-goog-api-key`."""
    return genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=gateway.url, timeout=30_000))


def test_a_gemini_client_is_served_with_its_key_in_x_goog_api_key(keyed: Gateway) -> None:
    before = len(_fake_requests(keyed))
    client = _gemini(keyed, ALICE_KEY)
    config = genai_types.GenerateContentConfig(max_output_tokens=5)
    for model in ("gemini-2.5-flash", "gpt-4o-mini"):  # as it came to Vertex AI, translated to OpenAI
        assert client.models.generate_content(model=model, contents="hi", config=config).text
    sent = _fake_requests(keyed)[before:]
    assert ":generateContent" in sent[0]["path"] and sent[1]["path"] == "/v1/chat/completions"
    assert ALICE_KEY not in json.dumps(sent)  # the key was removed before the provider
    assert all("x-goog-api-key" not in {name.lower() for name in request["headers"]} for request in sent)
    keyed.wait_for_log(
        lambda entry: entry.get("x-user-id") == "alice" and entry.get("genai_model_name") == "gemini-2.5-flash"
    )

    stranger, intern = _gemini(keyed, "tv-not-a-key"), _gemini(keyed, INTERN_KEY)  # held: a dropped client closes
    with pytest.raises(genai_errors.ClientError) as refused:
        stranger.models.generate_content(model="gpt-4o-mini", contents="hi", config=config)
    assert refused.value.code == 401 and refused.value.status == "UNAUTHENTICATED"
    with pytest.raises(genai_errors.ClientError) as denied:
        intern.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)
    assert denied.value.code == 403 and "'gemini-2.5-flash' is not allowed" in (denied.value.message or "")
    assert [model.name for model in intern.models.list()] == ["models/gpt-4o-mini", "models/claude-haiku-4-5@20251001"]
    assert len(_fake_requests(keyed)) == before + 2


def _served(gateway: Gateway, key: str) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"x-api-key": key}).status_code


def test_an_edited_key_takes_effect_without_a_restart(keyed: Gateway) -> None:
    """Runs last on this gateway: it replaces alice's key."""
    config = keyed.run_dir.parent / "gateway.yaml"
    new_key = "tv-alice-rotated-" + uuid.uuid4().hex
    config.write_text(config.read_text().replace(ALICE_KEY, new_key))
    deadline = time.monotonic() + 60
    while _served(keyed, new_key) != 200:
        assert time.monotonic() < deadline, f"the new key is still refused:\n{keyed.stderr()[-3000:]}"
        time.sleep(0.5)
    assert _served(keyed, ALICE_KEY) == 401
    assert _served(keyed, BOB_KEY) == 200


# --- JWT ------------------------------------------------------------------------------------------------

ISSUER = "https://sso.example.com"

JWT_POLICY = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: sso}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: tokenvoy}]
  jwt:
    providers:
      - name: corp
        issuer: %(issuer)s
        audiences: [tokenvoy]
        localJWKS: {type: ValueRef, valueRef: {group: "", kind: ConfigMap, name: corp-jwks}}
        claimToHeaders: [{claim: sub, header: x-user-id}, {claim: team, header: x-team}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: corp-jwks}
data:
  jwks: '${file:%(jwks)s}'
---
apiVersion: tokenvoy.io/v1alpha1
kind: TokenvoyConfig
metadata: {name: tokenvoy}
spec:
  modelAccess:
    - header: x-team
      values: [interns]
      models: ["gpt-4o-*"]
"""


def _key_pair() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(private_key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {"keys": [{**public, "kid": kid, "alg": "RS256", "use": "sig"}]}


SIGNING_KEY = _key_pair()


def _token(private_key: rsa.RSAPrivateKey = SIGNING_KEY, lifetime: int = 300, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": "tokenvoy", "sub": "carol", "iat": now, "exp": now + lifetime, **claims}
    return jwt.encode(payload, private_key, algorithm="RS256", headers={"kid": "corp-1"})


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("jwt")
    jwks_file = Path(directory / "jwks.json")
    jwks_file.write_text(json.dumps(_jwks(SIGNING_KEY, "corp-1")))
    port, fake = free_port(), free_port()
    config = gateway_config(port, fake, BUDGET) + JWT_POLICY % {"issuer": ISSUER, "jwks": jwks_file}
    gateway = start_gateway(directory, config_text=config, listener_port=port, fake_port=fake)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_a_jwt_from_the_local_jwks_is_served_and_its_claim_is_the_identity(sso: Gateway) -> None:
    request_id = str(uuid.uuid4())
    token = _token(sub="carol")
    client = _openai(sso, token, **{"x-request-id": request_id, "x-user-id": "mallory"})
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.parse().choices
    assert reply.headers["x-ratelimit-limit"].startswith(str(BUDGET))
    assert _by_request_id(sso, request_id)["x-user-id"] == "carol"
    assert token not in json.dumps(_fake_requests(sso))


@pytest.mark.parametrize(
    ("token", "refusal", "error_type"),
    [
        pytest.param(_token(_key_pair()), openai.AuthenticationError, "authentication_error", id="another-key"),
        pytest.param(_token(lifetime=-120), openai.AuthenticationError, "authentication_error", id="expired"),
        pytest.param("not-a-jwt", openai.AuthenticationError, "authentication_error", id="garbage"),
        # a valid token for another audience: Envoy's jwt_authn answers 403 (authenticated, not for this gateway)
        pytest.param(_token(aud="other"), openai.PermissionDeniedError, "permission_error", id="wrong-audience"),
    ],
)
def test_a_bad_jwt_is_refused_in_openais_shape_and_no_provider_is_contacted(
    sso: Gateway, token: str, refusal: type[openai.APIStatusError], error_type: str
) -> None:
    before = len(_fake_requests(sso))
    with pytest.raises(refusal) as refused:
        _openai(sso, token).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["type"] == error_type
    assert "jwt_authn_access_denied" in refused.value.body["message"]
    assert len(_fake_requests(sso)) == before


def test_a_claim_selects_the_model_allowlist(sso: Gateway) -> None:
    intern = _openai(sso, _token(sub="dave", team="interns"))
    assert intern.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.PermissionDeniedError) as denied:
        intern.chat.completions.create(model="o3", messages=[{"role": "user", "content": "hi"}])
    assert "'o3' is not allowed for this client (x-team: interns)" in denied.value.body["message"]
    # a caller outside the rule may use any model
    other = _openai(sso, _token(sub="erin", team="research"))
    assert other.chat.completions.create(model="o3", messages=[{"role": "user", "content": "hi"}]).choices


# --- a remote JWKS, fetched over TLS and cached ---------------------------------------------------------

JWKS_HOST = "sso.fake.test"


class _JwksServer(http.server.ThreadingHTTPServer):
    jwks: bytes = b""
    fetches: int = 0


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    server: _JwksServer

    def do_GET(self) -> None:
        self.server.fetches += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.server.jwks)))
        self.end_headers()
        self.wfile.write(self.server.jwks)

    def log_message(self, *args: object) -> None:
        pass


REMOTE_POLICY = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: sso}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: tokenvoy}]
  jwt:
    providers:
      - name: corp
        issuer: %(issuer)s
        remoteJWKS:
          uri: https://%(host)s/.well-known/jwks.json
          cacheDuration: 10m
          backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: sso}]
        claimToHeaders: [{claim: sub, header: x-user-id}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: sso}
spec:
  endpoints: [{fqdn: {hostname: localhost, port: %(port)d}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: sso-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: sso}]
  validation:
    hostname: %(host)s
    caCertificateRefs: [{group: "", kind: ConfigMap, name: sso-ca}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: sso-ca}
data:
  ca.crt: |
%(ca)s
"""


def test_a_remote_jwks_is_fetched_over_tls_once_and_cached(tmp_path: Path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(JWKS_HOST).configure_cert(context)
    server = _JwksServer(("127.0.0.1", free_port()), _JwksHandler)
    server.jwks = json.dumps(_jwks(SIGNING_KEY, "corp-1")).encode()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, fake = free_port(), free_port()
    ca_pem = "\n".join(f"    {line}" for line in ca.cert_pem.bytes().decode().splitlines())
    values = {"issuer": ISSUER, "host": JWKS_HOST, "port": server.server_address[1], "ca": ca_pem}
    gateway = start_gateway(
        tmp_path, config_text=gateway_config(port, fake, BUDGET) + REMOTE_POLICY % values, listener_port=port
    )
    try:
        for user in ("carol", "dave", "erin"):
            request_id = str(uuid.uuid4())
            client = _openai(gateway, _token(sub=user), **{"x-request-id": request_id})
            assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
            assert _by_request_id(gateway, request_id)["x-user-id"] == user
        with pytest.raises(openai.AuthenticationError):
            _openai(gateway, _token(_key_pair())).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        # Fetched once by Envoy's main thread before the listener opened, then served from its cache
        # (cacheDuration) to every worker.
        assert server.fetches == 1
    finally:
        gateway.stop()
        server.shutdown()


def test_authentication_turned_on_by_a_live_edit_applies_without_a_restart(tmp_path: Path) -> None:
    port, fake = free_port(), free_port()
    gateway = start_gateway(
        tmp_path,
        config_text=gateway_config(port, fake, BUDGET),
        listener_port=port,
        env={"TEST_INTERN_KEY": INTERN_KEY},
    )
    try:
        assert _served(gateway, "anything") == 200  # no SecurityPolicy: every caller is served
        bob_file = tmp_path / "bob.key"
        bob_file.write_text(BOB_KEY)
        config = tmp_path / "gateway.yaml"
        config.write_text(config.read_text() + API_KEYS % {"alice": ALICE_KEY, "bob_file": bob_file})
        deadline = time.monotonic() + 60
        while _served(gateway, "anything") != 401:
            assert time.monotonic() < deadline, f"still served without a key:\n{gateway.stderr()[-6000:]}"
            time.sleep(0.5)
        assert _served(gateway, ALICE_KEY) == 200
    finally:
        gateway.stop()


def test_while_extproc_restarts_no_request_is_served_unauthenticated(tmp_path: Path) -> None:
    port, fake = free_port(), free_port()
    bob_file = tmp_path / "bob.key"
    bob_file.write_text(BOB_KEY)
    config = gateway_config(port, fake, BUDGET) + API_KEYS % {"alice": ALICE_KEY, "bob_file": bob_file}
    env = {"TEST_INTERN_KEY": INTERN_KEY}
    gateway = start_gateway(tmp_path, config_text=config, listener_port=port, fake_port=fake, env=env)
    try:
        assert _served(gateway, ALICE_KEY) == 200
        before = len(_fake_requests(gateway))
        pid = httpx.get(f"{gateway.admin_url}/healthz").json()["children"]["extproc"]["pid"]
        os.kill(int(pid), signal.SIGKILL)
        # Envoy's 401 passes through the ext_proc filter on its way out: with extproc down it becomes extproc's 500
        assert _served(gateway, "tv-not-a-key") in (401, 500)
        deadline = time.monotonic() + 60
        while _served(gateway, ALICE_KEY) != 200:
            assert time.monotonic() < deadline, f"never served again:\n{gateway.stderr()[-3000:]}"
            time.sleep(0.5)
        assert _served(gateway, "tv-not-a-key") == 401
        sent = _fake_requests(gateway)[before:]
        assert len(sent) == 1  # only alice's request once extproc was back
    finally:
        gateway.stop()

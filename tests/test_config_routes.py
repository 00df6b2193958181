"""Per-rule timeouts, `/v1/models` fields, header/body mutations and BackendTrafficPolicy retries: loaded,
validated (every problem names file, resource and field), rendered, and accepted by real Envoy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
import yaml

from tests.crds import crd_errors
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import BodyMutation, HeaderMutation, RetrySettings
from tokenvoy.extproc.mutations import merge
from tokenvoy.extproc.runtime import Runtime, anthropic_models_body, models_list_body
from tokenvoy.render import bootstrap
from tokenvoy.render.bootstrap import render_bootstrap
from tokenvoy.render.envoy import RETRY_ON, EnvoyOptions
from tokenvoy.runner.run import envoy_binary


def retry_policy(rule):
    """The route's retry policy as the JSON Envoy reads, or None."""
    policy = bootstrap.retry_policy(rule)
    return None if policy is None else bootstrap.to_json(policy)


OPTIONS = EnvoyOptions(extproc_address="127.0.0.1:1063", ratelimit_address="127.0.0.1:8081")

FULL = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: tokenvoy
  listeners: [{name: http, protocol: HTTP, port: 18080}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: chat, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  rules:
    - matches:
        - headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o}]
        - headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o-mini}]
      modelsOwnedBy: OpenAI
      modelsCreatedAt: "2024-05-21T10:00:00Z"
      timeouts: {request: 1m30s, backendRequest: 20s}
      backendRefs:
        - name: primary
          priority: 0
          headerMutation:
            set: [{name: X-Team, value: route}]
            remove: [x-drop-me]
          bodyMutation:
            set: [{path: service_tier, value: '"flex"'}, {path: temperature, value: "0.2"}]
            remove: [user]
        - {name: fallback, priority: 1}
    - matches:
        - headers: [{type: Exact, name: x-ai-eg-model, value: claude-sonnet-4}]
        - headers: [{type: RegularExpression, name: x-ai-eg-model, value: "claude-.*"}]
      timeouts: {request: 500ms}
      backendRefs:
        - {name: fallback}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: primary}
spec:
  schema: {name: OpenAI}
  backendRef: {name: primary, kind: Backend, group: gateway.envoyproxy.io}
  headerMutation:
    set: [{name: x-team, value: backend}, {name: x-region, value: eu}]
  bodyMutation:
    set: [{path: user, value: gateway}, {path: metadata, value: '{"k": [1, 2]}'}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: fallback}
spec:
  schema: {name: OpenAI}
  backendRef: {name: fallback, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: primary}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 18090}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: fallback}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 18091}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: chat-retries}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: chat}]
  retry:
    numRetries: 3
    numAttemptsPerPriority: 2
    retryOn:
      triggers: [connect-failure, retriable-status-codes, reset]
      httpStatusCodes: [429, 503]
    perRetry:
      timeout: 10s
      backOff: {baseInterval: 100ms, maxInterval: 2s}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_text(text, "gw.yaml")
    return error.value.problems


def _route_entries(config) -> dict[str, dict]:
    listener = render_bootstrap(config, OPTIONS)["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return {entry["name"]: entry["route"] for entry in hcm["route_config"]["virtual_hosts"][0]["routes"]}


def test_the_full_example_is_valid_against_the_published_crds() -> None:
    for resource in yaml.safe_load_all(FULL):
        assert crd_errors(resource) == [], f"{resource['kind']}/{resource['metadata']['name']}"


def test_everything_is_read_into_the_model() -> None:
    config = load_text(FULL)
    first, second = config.routes[0].rules
    assert (first.request_timeout_ms, first.backend_request_timeout_ms) == (90_000, 20_000)
    assert (second.request_timeout_ms, second.backend_request_timeout_ms) == (500, None)
    assert first.models_owned_by == "OpenAI"
    assert first.models_created_at == 1716285600
    assert second.models_owned_by == "Envoy AI Gateway"
    assert second.models_created_at == 1704067200  # the route's creationTimestamp
    assert (
        first.retry
        == second.retry
        == RetrySettings(
            policy="BackendTrafficPolicy/chat-retries",
            num_retries=3,
            num_attempts_per_priority=2,
            triggers=("connect-failure", "retriable-status-codes", "reset"),
            http_status_codes=(429, 503),
            per_try_timeout_ms=10_000,
            backoff_base_ms=100,
            backoff_max_ms=2000,
        )
    )
    ref = first.backend_refs[0]
    assert ref.header_mutation == HeaderMutation(set=(("x-team", "route"),), remove=("x-drop-me",))
    assert ref.body_mutation == BodyMutation(
        set=(("service_tier", b'"flex"'), ("temperature", b"0.2")), remove=("user",)
    )
    backend = config.backends["primary"]
    # A value that is not a JSON literal is a string, as in Envoy AI Gateway.
    assert backend.body_mutation == BodyMutation(set=(("user", b'"gateway"'), ("metadata", b'{"k":[1,2]}')))


@pytest.mark.parametrize(
    ("duration", "milliseconds"),
    [("30s", 30_000), ("1m", 60_000), ("500ms", 500), ("1h2m", 3_720_000), ("0s", 0), ("1h1m1s1ms", 3_661_001)],
)
def test_gateway_api_durations(duration: str, milliseconds: int) -> None:
    config = load_text(FULL.replace("{request: 500ms}", f"{{request: {duration}}}"))
    assert config.routes[0].rules[1].request_timeout_ms == milliseconds


def test_route_timeouts_and_the_default() -> None:
    routes = _route_entries(load_text(FULL))
    assert routes["chat/rule/0/match/0"]["timeout"] == "90s"
    assert routes["chat/rule/1/match/0"]["timeout"] == "0.500s"
    without = FULL.replace("      timeouts: {request: 500ms}\n", "")
    assert _route_entries(load_text(without))["chat/rule/1/match/0"]["timeout"] == "300s"  # unchanged default


def test_the_retry_policy_overrides_each_default_it_sets() -> None:
    policy = _route_entries(load_text(FULL))["chat/rule/0/match/0"]["retry_policy"]
    assert policy["retry_on"] == "connect-failure,retriable-status-codes,reset"
    assert policy["retriable_status_codes"] == [429, 503]
    assert policy["num_retries"] == 3
    assert policy["per_try_timeout"] == "20s"  # the rule's timeouts.backendRequest wins over perRetry.timeout
    assert policy["retry_back_off"] == {"base_interval": "0.100s", "max_interval": "2s"}
    assert policy["retry_priority"]["typed_config"]["update_frequency"] == 2
    assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    # One backend: no fallback predicates, the policy's other fields still apply.
    single = _route_entries(load_text(FULL))["chat/rule/1/match/0"]["retry_policy"]
    assert single["num_retries"] == 3 and single["per_try_timeout"] == "10s"
    assert "retry_priority" not in single


def test_without_a_policy_the_defaults_are_unchanged() -> None:
    text = FULL.split("---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy")[0]
    config = load_text(text.replace("timeouts: {request: 1m30s, backendRequest: 20s}", "timeouts: {}"))
    first, second = config.routes[0].rules
    policy = retry_policy(first)
    assert policy is not None
    assert policy["retry_on"] == RETRY_ON and policy["num_retries"] == 1
    assert policy["retriable_status_codes"] == [429]
    assert policy["retry_back_off"] == {"base_interval": "0.010s", "max_interval": "0.100s"}
    assert "per_try_timeout" not in policy
    assert retry_policy(second) is None


def test_partial_retry_settings_keep_the_other_defaults() -> None:
    text = FULL.replace(
        """    numRetries: 3
    numAttemptsPerPriority: 2
    retryOn:
      triggers: [connect-failure, retriable-status-codes, reset]
      httpStatusCodes: [429, 503]
    perRetry:
      timeout: 10s
      backOff: {baseInterval: 100ms, maxInterval: 2s}
""",
        "    numRetries: 0\n    perRetry:\n      backOff: {baseInterval: 1s}\n",
    )
    policy = _route_entries(load_text(text))["chat/rule/0/match/0"]["retry_policy"]
    assert policy["num_retries"] == 0
    assert policy["retry_on"] == RETRY_ON and policy["retriable_status_codes"] == [429]
    assert policy["retry_back_off"] == {"base_interval": "1s", "max_interval": "10s"}  # Envoy's 10x base


def test_a_gateway_wide_policy_applies_to_every_route() -> None:
    text = FULL.replace(
        "targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: chat}]",
        "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]",
    )
    assert all(rule.retry is not None for _, rule in load_text(text).rules())


def test_real_envoy_accepts_the_rendered_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(render_bootstrap(load_text(FULL), OPTIONS)))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_invalid_values_are_reported_with_file_resource_and_field() -> None:
    text = (
        FULL.replace("{request: 1m30s, backendRequest: 20s}", "{request: 10s, backendRequest: 1m, idle: 3s}")
        .replace("{request: 500ms}", "{request: 5 seconds}")
        .replace('modelsCreatedAt: "2024-05-21T10:00:00Z"', "modelsCreatedAt: yesterday")
        .replace("[connect-failure, retriable-status-codes, reset]", "[connect-failure, 5xx, teapot]")
        .replace("{baseInterval: 100ms, maxInterval: 2s}", "{baseInterval: 2s, maxInterval: 100ms}")
        .replace("numRetries: 3", "numRetries: -1")
        .replace("remove: [x-drop-me]", "remove: [content-length, 'bad header']")
        .replace("""value: '{"k": [1, 2]}'""", """value: '{"k": [1, 2}'""")
        .replace("remove: [user]", "remove: [stream, a.b]")
    )
    route, backend, policy = (
        "gw.yaml: AIGatewayRoute/chat",
        "gw.yaml: AIServiceBackend/primary",
        "gw.yaml: BackendTrafficPolicy/chat-retries",
    )
    assert sorted(_problems(text)) == sorted(
        [
            f"{route}: spec.rules[0].timeouts.idle: unknown field (known: backendRequest, request)",
            f"{route}: spec.rules[0].timeouts.backendRequest: must not be longer than timeouts.request (10s)",
            f"{route}: spec.rules[0].modelsCreatedAt: must be an RFC 3339 timestamp with a time zone such as "
            "2024-05-21T10:00:00Z, got 'yesterday'",
            f"{route}: spec.rules[0].backendRefs[0].headerMutation.remove[0]: 'content-length' cannot be changed: "
            "the gateway sets it",
            f"{route}: spec.rules[0].backendRefs[0].headerMutation.remove[1]: must be an HTTP header name, "
            "got 'bad header'",
            f"{route}: spec.rules[0].backendRefs[0].bodyMutation.remove[0]: 'stream' cannot be changed: the gateway "
            "reads the client's `stream` to handle the response",
            f"{route}: spec.rules[0].backendRefs[0].bodyMutation.remove[1]: only top-level fields can be changed, "
            "got the path 'a.b'",
            f"{route}: spec.rules[1].timeouts.request: must be a Gateway API duration such as 30s, 500ms or 1h2m, "
            "got '5 seconds'",
            f"{backend}: spec.bodyMutation.set[1].value: is not valid JSON: '{{\"k\": [1, 2}}'",
            f"{policy}: spec.retry.numRetries: must be an integer >= 0, got -1",
            f"{policy}: spec.retry.retryOn.triggers[2]: unknown retry trigger 'teapot' (known: 5xx, gateway-error, "
            "reset, reset-before-request, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, "
            "cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)",
            f"{policy}: spec.retry.retryOn.httpStatusCodes: has no effect without the retriable-status-codes "
            "trigger in retryOn.triggers",
            f"{policy}: spec.retry.perRetry.backOff.maxInterval: must not be shorter than baseInterval",
        ]
    )


def test_a_header_name_with_a_trailing_newline_is_refused() -> None:
    """A newline in a header name would split the header Envoy writes: refused like any other non-token."""
    text = FULL.replace("remove: [x-drop-me]", 'remove: ["x-drop-me\\n"]')
    assert _problems(text) == [
        "gw.yaml: AIGatewayRoute/chat: spec.rules[0].backendRefs[0].headerMutation.remove[0]: "
        "must be an HTTP header name, got 'x-drop-me\\n'"
    ]


def test_two_retry_policies_for_one_route_are_a_conflict() -> None:
    second = FULL.split("---\n")[-1].replace("name: chat-retries", "name: more-retries")
    problems = _problems(FULL + "---\n" + second)
    assert problems == [
        "gw.yaml: BackendTrafficPolicy/more-retries: spec.retry: AIGatewayRoute/chat already has retries from "
        "BackendTrafficPolicy/chat-retries"
    ]


def test_duplicate_and_contradictory_mutations_are_errors() -> None:
    text = FULL.replace(
        "set: [{name: X-Team, value: route}]", "set: [{name: X-Team, value: route}, {name: x-team, value: again}]"
    ).replace("remove: [x-drop-me]", "remove: [X-TEAM]")
    text = text.replace("remove: [user]", "remove: [user, temperature, user]")
    assert _problems(text) == [
        "gw.yaml: AIGatewayRoute/chat: spec.rules[0].backendRefs[0].headerMutation.set[1].name: 'x-team' is set twice",
        "gw.yaml: AIGatewayRoute/chat: spec.rules[0].backendRefs[0].headerMutation.remove[0]: 'x-team' is both set "
        "and removed",
        "gw.yaml: AIGatewayRoute/chat: spec.rules[0].backendRefs[0].bodyMutation.remove[1]: 'temperature' is both "
        "set and removed",
    ]


def test_a_field_removed_twice_is_removed_once() -> None:
    config = load_text(FULL.replace("remove: [user]", "remove: [user, user]"), "gw.yaml")
    (ref, _) = config.routes[0].rules[0].backend_refs
    assert ref.body_mutation is not None and ref.body_mutation.remove == ("user",)


def test_the_backend_ref_mutation_wins_over_the_backend_one() -> None:
    config = load_text(FULL)
    ref = config.routes[0].rules[0].backend_refs[0]
    mutations = merge(config.backends["primary"], ref)
    assert mutations is not None
    assert mutations.set_headers == {"x-team": "route", "x-region": "eu"}
    assert mutations.remove_headers == ("x-drop-me",)
    # The backend sets `user`, the route removes it: removed.
    assert sorted(mutations.set_fields) == ["metadata", "service_tier", "temperature"]
    assert mutations.remove_fields == ("user",)
    body = mutations.apply_body(b'{"model": "gpt-4o", "user": "u1", "temperature": 1, "messages": []}')
    assert orjson.loads(body) == {
        "model": "gpt-4o",
        "temperature": 0.2,
        "messages": [],
        "service_tier": "flex",
        "metadata": {"k": [1, 2]},
    }
    set_headers, remove = {"x-region": "client", ":path": "/v1/chat/completions"}, {"x-team", "x-other"}
    mutations.apply_headers(set_headers, remove)
    assert set_headers == {"x-region": "eu", "x-team": "route", ":path": "/v1/chat/completions"}
    assert remove == {"x-other", "x-drop-me"}
    assert merge(config.backends["fallback"], config.routes[0].rules[0].backend_refs[1]) is None


def test_a_route_set_cancels_a_backend_remove() -> None:
    text = FULL.replace(
        "    set: [{name: x-team, value: backend}, {name: x-region, value: eu}]",
        "    remove: [x-team]",
    )
    config = load_text(text)
    mutations = merge(config.backends["primary"], config.routes[0].rules[0].backend_refs[0])
    assert mutations is not None
    assert mutations.set_headers == {"x-team": "route"}
    assert mutations.remove_headers == ("x-drop-me",)


def test_the_models_list_is_precomputed_in_openai_shape() -> None:
    config = load_text(FULL)
    assert orjson.loads(models_list_body(config, loaded_at=42)) == {
        "object": "list",
        "data": [
            {"id": "gpt-4o", "object": "model", "created": 1716285600, "owned_by": "OpenAI"},
            {"id": "gpt-4o-mini", "object": "model", "created": 1716285600, "owned_by": "OpenAI"},
            {"id": "claude-sonnet-4", "object": "model", "created": 1704067200, "owned_by": "Envoy AI Gateway"},
        ],
    }
    # No modelsCreatedAt and no creationTimestamp: the time the config was loaded.
    bare = FULL.replace(', creationTimestamp: "2024-01-01T00:00:00Z"', "")
    data = orjson.loads(models_list_body(load_text(bare), loaded_at=42))["data"]
    assert [model["created"] for model in data] == [1716285600, 1716285600, 42]
    assert orjson.loads(Runtime(config).models_body)["data"][0]["created"] == 1716285600  # built at load


def test_the_anthropic_models_list_has_the_same_models_in_anthropic_shape() -> None:
    config = load_text(FULL)
    body = orjson.loads(anthropic_models_body(config, loaded_at=42))
    assert body == {
        "data": [
            {"type": "model", "id": "gpt-4o", "display_name": "gpt-4o", "created_at": "2024-05-21T10:00:00Z"},
            {
                "type": "model",
                "id": "gpt-4o-mini",
                "display_name": "gpt-4o-mini",
                "created_at": "2024-05-21T10:00:00Z",
            },
            {
                "type": "model",
                "id": "claude-sonnet-4",
                "display_name": "claude-sonnet-4",
                "created_at": "2024-01-01T00:00:00Z",
            },
        ],
        "has_more": False,
        "first_id": "gpt-4o",
        "last_id": "claude-sonnet-4",
    }
    assert Runtime(config).anthropic_models_body == anthropic_models_body(config, Runtime(config).loaded_at)

"""AIGatewayRoute ``hostnames``, ``streamIdleTimeout`` and ``filterConfig``: loaded, rendered, matched."""

from __future__ import annotations

import orjson
import pytest

from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.summary import summarize
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.render.bootstrap import route_configuration, to_json
from tokenvoy.render.envoy import EnvoyOptions

BASE = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: openai}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
"""


def _route(name: str, extra: str = "", rule: str = "", model: str = "m") -> str:
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}}}
spec:
{extra}  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{name: openai}}]
{rule}"""


OPTIONS = EnvoyOptions(extproc_address="unix:/e", ratelimit_address="unix:/r")


def test_hostnames_are_loaded_and_checked():
    config = load_text(BASE + _route("a", "  hostnames: [a.example.com, '*.b.example.com']\n"))
    assert config.routes[0].hostnames == ("a.example.com", "*.b.example.com")
    for bad, why in (
        ("[A.example.com]", "must be a lower-case DNS name"),
        ("['10.0.0.1']", "not an IP address"),
        ("[a.example.com, a.example.com]", "listed twice"),
    ):
        with pytest.raises(ConfigError) as excinfo:
            load_text(BASE + _route("a", f"  hostnames: {bad}\n"))
        assert any("spec.hostnames[" in p and why in p for p in excinfo.value.problems), excinfo.value.problems


def test_each_hostname_gets_a_virtual_host_with_the_routes_for_every_host():
    config = load_text(BASE + _route("a", "  hostnames: [a.example.com]\n", model="ma") + _route("any", model="m"))
    routes = to_json(route_configuration(config, OPTIONS))
    assert routes["ignore_port_in_host_matching"] is True
    hosts = {
        vhost["name"]: (vhost["domains"], [r["name"] for r in vhost["routes"]]) for vhost in routes["virtual_hosts"]
    }
    assert hosts == {
        "tokenvoy/a.example.com": (["a.example.com"], ["a/rule/0/match/0", "any/rule/0/match/0"]),
        "tokenvoy": (["*"], ["any/rule/0/match/0"]),
    }


def test_without_hostnames_one_virtual_host_serves_everything():
    routes = to_json(route_configuration(load_text(BASE + _route("any")), OPTIONS))
    assert [vhost["domains"] for vhost in routes["virtual_hosts"]] == [["*"]]
    assert "ignore_port_in_host_matching" not in routes


def test_extproc_picks_the_rule_envoys_virtual_host_would():
    text = (
        BASE
        + _route("a", "  hostnames: [a.example.com]\n", model="shared")
        + _route("wild", "  hostnames: ['*.example.com']\n", model="shared")
        + _route("any", model="shared")
    )
    runtime = Runtime(load_text(text))

    def route(authority: str) -> str | None:
        rule = runtime.match({":authority": authority, "x-ai-eg-model": "shared"})
        return rule.route.name if rule else None

    assert route("a.example.com") == "a"
    assert route("A.EXAMPLE.COM:8080") == "a"
    assert route("b.example.com") == "wild"
    assert route("x.y.example.com") == "wild"
    assert route("example.com") == "any"
    assert route("127.0.0.1:1975") == "any"
    assert route("[::1]:1975") == "any"


def test_stream_idle_timeout_is_envoys_per_try_idle_timeout():
    config = load_text(BASE + _route("a", rule="      streamIdleTimeout: 1500ms\n"))
    assert config.routes[0].rules[0].stream_idle_timeout_ms == 1500
    route = to_json(route_configuration(config, OPTIONS))["virtual_hosts"][0]["routes"][0]
    assert route["route"]["retry_policy"]["per_try_idle_timeout"] == "1.500s"
    plain = to_json(route_configuration(load_text(BASE + _route("a")), OPTIONS))["virtual_hosts"][0]["routes"][0]
    assert "retry_policy" not in plain["route"]


def test_filter_config_is_reported_as_ignored_with_its_reason():
    config = load_text(BASE + _route("a", "  filterConfig: {type: ExternalProcessor}\n"))
    assert any("AIGatewayRoute/a" in line and "spec.filterConfig ignored" in line for line in config.ignored)


def test_the_model_lists_are_those_of_the_requests_host():
    text = BASE + _route("a", "  hostnames: [a.example.com]\n", model="only-a") + _route("any", model="everyone")
    runtime = Runtime(load_text(text))

    def listed(authority: str) -> tuple[list[str], list[str], list[str]]:
        models, openai_body, anthropic_body = runtime.models_for(authority)
        ids = [m["id"] for m in orjson.loads(openai_body)["data"]]
        return models, ids, [m["id"] for m in orjson.loads(anthropic_body)["data"]]

    assert listed("a.example.com:1975") == (["everyone", "only-a"], ["only-a", "everyone"], ["only-a", "everyone"])
    assert listed("127.0.0.1:1975") == (["everyone"], ["everyone"], ["everyone"])


def test_validate_shows_hosts_and_stream_idle_timeout():
    text = BASE + _route("a", "  hostnames: [a.example.com]\n", rule="      streamIdleTimeout: 2s\n")
    assert "    hosts a.example.com; stream idle timeout 2s" in summarize(load_text(text)).splitlines()

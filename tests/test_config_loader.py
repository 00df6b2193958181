"""Gateway config loading: the default config, every error at once with its location, and secrets kept secret."""

from __future__ import annotations

import base64
import copy
import re

import pytest
import yaml

from tests.crds import crd_errors
from tokenvoy.config import loader
from tokenvoy.config.defaults import (
    DEFAULT_BUDGET_TOKENS_PER_HOUR,
    FAKE_PROVIDER_PORT,
    SHOWCASE_MODELS,
    default_config_yaml,
)
from tokenvoy.config.loader import ConfigError, documents, load_config, load_text
from tokenvoy.config.model import (
    BackendRef,
    BudgetSelector,
    BudgetSelectorType,
    CostType,
    Endpoint,
    HeaderMatch,
    HeaderMatchType,
    RequestCost,
)

OPENAI_ENV = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1"}
DEFAULT_COSTS = (
    RequestCost("llm_input_token", CostType.INPUT_TOKEN),
    RequestCost("llm_cached_input_token", CostType.CACHED_INPUT_TOKEN),
    RequestCost("llm_output_token", CostType.OUTPUT_TOKEN),
    RequestCost("llm_total_token", CostType.TOTAL_TOKEN),
)


def _problems(text: str, source: str = "gw.yaml") -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_text(text, source)
    return excinfo.value.problems


def _one_problem(problems: list[str], *needles: str) -> str:
    found = [p for p in problems if all(n in p for n in needles)]
    assert len(found) == 1, (needles, problems)
    return found[0]


# ---- the embedded default config ------------------------------------------------------------------------


def _check_default_shape(config) -> None:
    assert config.listener.address == "127.0.0.1"
    assert config.listener.port == 1975
    (route,) = config.routes
    assert route.name == "default"
    assert route.costs == DEFAULT_COSTS
    (rule,) = route.rules
    assert rule.matches == ()  # every model name is accepted
    (budget,) = config.budgets
    assert budget.selectors == (BudgetSelector("x-user-id", BudgetSelectorType.DISTINCT),)
    assert (budget.limit, budget.unit) == (DEFAULT_BUDGET_TOKENS_PER_HOUR, "Hour")
    assert budget.request_cost == 0  # a pure check on the request path
    assert budget.response_cost_key == "llm_total_token"
    assert budget.routes == ("default",)
    assert config.ignored == ()


def test_default_config_without_api_key_uses_the_fake_provider():
    config = load_text(default_config_yaml({}, showcase=False))
    _check_default_shape(config)
    assert config.routes[0].rules[0].backend_refs == (BackendRef("fake"),)
    backend = config.backends["fake"]
    assert backend.schema == "OpenAI"
    assert backend.path_prefix == "/v1"
    assert backend.endpoint == Endpoint("127.0.0.1", FAKE_PROVIDER_PORT, tls=False)
    assert backend.fake_provider
    assert backend.security is None


def test_the_default_config_shows_one_model_per_schema_on_the_fake_provider():
    config = load_text(default_config_yaml({}))
    (route,) = config.routes
    *showcase, catch_all = route.rules
    assert catch_all.matches == () and catch_all.backend_refs == (BackendRef("fake"),)
    routed = {}
    for rule in showcase:
        (ref,) = rule.backend_refs
        for (match,) in rule.matches:
            routed[match.value] = config.backends[ref.backend].schema
    assert routed == {model: schema for model, _, schema in SHOWCASE_MODELS}
    assert set(routed.values()) == loader.SUPPORTED_SCHEMAS, "every schema is shown"
    assert all(b.fake_provider and b.endpoint.port == FAKE_PROVIDER_PORT for b in config.backends.values())
    assert config.backends["fake-azure"].schema_version  # Azure needs an api-version
    assert config.exact_models() == sorted(routed)


def test_default_config_with_openai_key_and_base_url(monkeypatch):
    text = default_config_yaml(OPENAI_ENV)
    assert "sk-test" not in text  # the key is read from the environment, never written into the config
    config = load_text(text)
    _check_default_shape(config)
    assert config.routes[0].rules[0].backend_refs == (BackendRef("openai"),)
    backend = config.backends["openai"]
    assert backend.endpoint == Endpoint("127.0.0.1", 9999, tls=False)
    assert backend.path_prefix == "/v1"
    assert not backend.fake_provider
    assert backend.security is not None
    assert backend.security.type == "APIKey"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert backend.security.api_key.read() == "sk-from-env"


@pytest.mark.parametrize(
    ("base_url", "endpoint", "prefix"),
    [
        (None, Endpoint("api.openai.com", 443, tls=True), "/v1"),
        ("https://llm.internal:8443/openai/v1/", Endpoint("llm.internal", 8443, tls=True), "/openai/v1"),
        ("http://localhost:8000", Endpoint("localhost", 8000, tls=False), ""),
    ],
)
def test_default_config_follows_openai_base_url(base_url, endpoint, prefix):
    env = {"OPENAI_API_KEY": "sk-test"} | ({"OPENAI_BASE_URL": base_url} if base_url else {})
    backend = load_text(default_config_yaml(env)).backends["openai"]
    assert backend.endpoint == endpoint
    assert backend.path_prefix == prefix


# ---- the default config is valid against the published CRDs ----------------------------------------------


CRD_KINDS = {
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "BackendTrafficPolicy",
    "Gateway",
}


@pytest.mark.parametrize("env", [{}, OPENAI_ENV, {"OPENAI_API_KEY": "sk-test"}], ids=["fake", "base-url", "openai"])
def test_default_config_is_valid_against_the_published_crds(env):
    documents = list(yaml.safe_load_all(default_config_yaml(env)))
    checked = set()
    for resource in documents:
        if resource["kind"] == "Secret":
            assert resource["apiVersion"] == "v1"
            continue
        assert crd_errors(resource) == [], resource["kind"]
        checked.add(resource["kind"])
    assert checked == CRD_KINDS  # the fake default holds the showcase Anthropic backend's key policy


def test_crd_check_rejects_what_kubernetes_would_reject():
    # The validator is not vacuous: a wrong type, a bad enum and a missing required field are caught.
    route, budget = (
        d
        for d in yaml.safe_load_all(default_config_yaml({}, showcase=False))
        if d["kind"] in {"AIGatewayRoute", "BackendTrafficPolicy"}
    )
    bad_route = copy.deepcopy(route)
    bad_route["spec"]["rules"][0]["backendRefs"][0]["weight"] = "heavy"
    bad_route["spec"]["llmRequestCosts"][0]["type"] = "InputTokens"
    assert len(crd_errors(bad_route)) == 2
    bad_budget = copy.deepcopy(budget)
    del bad_budget["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["unit"]
    assert crd_errors(bad_budget)


# ---- errors: all at once, each with file, kind/name and field path ----------------------------------------

BROKEN = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: chat}
spec:
  rules:
    - matches:
        - headers:
            - {name: x-ai-eg-model, type: Prefix, value: gpt}
            - {name: x-ai-eg-model, type: RegularExpression, value: "gpt-(4"}
      backendRefs:
        - name: nowhere
    - backendRefs:
        - name: openai
      retries: 3
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
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
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: openai-key}
spec:
  type: APIKey
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}]
  apiKey: {secretRef: {name: missing-secret}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: chat}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
          limit: {requests: 10, unit: Fortnight}
"""


def test_every_problem_is_reported_at_once_with_its_location(tmp_path):
    good = tmp_path / "gateway.yaml"
    good.write_text(BROKEN)
    bad_yaml = tmp_path / "typo.yaml"
    bad_yaml.write_text("kind: Backend\nmetadata: {name: x\nspec: {}\n")
    kindless = tmp_path / "kindless.yaml"
    kindless.write_text("apiVersion: v1\nmetadata: {name: orphan}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config([good, bad_yaml, kindless])
    problems = excinfo.value.problems
    route = f"{good}: AIGatewayRoute/chat: spec.rules"
    expected = [
        (f"{route}[1].retries: ", "unknown field"),
        (f"{route}[0].backendRefs[0].name: ", "AIServiceBackend/nowhere does not exist"),
        (f"{route}[0].matches[0].headers[0].type: ", "'Prefix'"),
        (f"{route}[0].matches[0].headers[1].value: ", "invalid regular expression"),
        (f"{good}: BackendSecurityPolicy/openai-key: spec.apiKey.secretRef.name: ", "Secret/missing-secret"),
        (f"{good}: BackendTrafficPolicy/budget: spec.rateLimit.global.rules[0].limit.unit: ", "'Fortnight'"),
        (f"{bad_yaml}: invalid YAML at line ", ""),
        (f"{kindless}: ", "without `kind`"),
    ]
    for prefix, detail in expected:
        found = [p for p in problems if p.startswith(prefix) and detail in p]
        assert len(found) == 1, (prefix, detail, problems)
    assert len(problems) == len(expected), problems
    assert str(excinfo.value) == "\n".join(problems)


def test_unknown_fields_are_reported_where_a_typo_would_change_meaning():
    # `header:` instead of `headers:` would otherwise make a rule that matches every model.
    text = default_config_yaml({}, showcase=False).replace(
        "    - backendRefs:\n        - name: fake\n",
        "    - matches:\n        - header: [{name: x-ai-eg-model, value: gpt-4o}]\n"
        "      backendRefs:\n        - name: fake\n          wieght: 3\n",
    )
    problems = _problems(text)
    _one_problem(problems, "gw.yaml: AIGatewayRoute/default: spec.rules[0].matches[0].header:", "unknown field")
    _one_problem(problems, "gw.yaml: AIGatewayRoute/default: spec.rules[0].backendRefs[0].wieght:", "unknown field")


def test_fields_of_the_published_api_are_accepted():
    text = default_config_yaml({}, showcase=False).replace(
        "    - backendRefs:\n        - name: fake\n",
        "    - name: everything\n"
        "      timeouts: {request: 60s}\n"
        "      streamIdleTimeout: 5m\n"
        "      matches:\n        - headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o}]\n"
        "      backendRefs:\n"
        "        - {name: fake, kind: AIServiceBackend, group: aigateway.envoyproxy.io, weight: 2, priority: 1,\n"
        "           modelNameOverride: gpt-4o-2024-08-06}\n",
    )
    (rule,) = load_text(text).routes[0].rules
    assert rule.matches == ((HeaderMatch("x-ai-eg-model", "gpt-4o", HeaderMatchType.EXACT),),)
    assert rule.backend_refs == (BackendRef("fake", weight=2, priority=1, model_name_override="gpt-4o-2024-08-06"),)


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("  rules:\n", "  rules: everything\n  unused:\n", "spec.rules"),
        ("    - backendRefs:\n", "    - matches: [x-ai-eg-model]\n      backendRefs:\n", "spec.rules[0].matches[0]"),
        ("        - name: fake\n", "        - fake\n", "spec.rules[0].backendRefs[0]"),
        (
            "    - metadataKey: llm_input_token\n      type: InputToken\n",
            "    - llm_input_token\n",
            "llmRequestCosts[0]",
        ),
        (
            "        - clientSelectors:\n",
            "        - clientSelectors: x-user-id\n          unused:\n",
            "clientSelectors",
        ),
        ("          limit:\n            requests: 100000\n", "          limit: 100000\n          unused:\n", "limit"),
    ],
)
def test_wrong_shapes_are_reported_not_crashed_on(old, new, path):
    text = default_config_yaml({}, showcase=False)
    assert old in text
    problems = _problems(text.replace(old, new, 1))
    assert any(path in p and "must be a" in p for p in problems), problems


@pytest.mark.parametrize(
    ("regex", "problem"),
    [
        ("gpt-(4", "invalid regular expression"),
        ("gpt-4o(?!-mini)", "lookaround"),
        ("(gpt)-\\\\1", "backreferences"),
        ("gpt-4o\\\\Z", "\\Z is not supported"),
    ],
)
def test_regular_expressions_envoy_cannot_run_are_rejected(regex, problem):
    # Envoy uses RE2: a Perl-only pattern that Python accepts would stop Envoy from starting.
    text = default_config_yaml({}, showcase=False).replace(
        "    - backendRefs:\n",
        f'    - matches: [{{headers: [{{type: RegularExpression, name: x-ai-eg-model, value: "{regex}"}}]}}]\n'
        "      backendRefs:\n",
    )
    found = _one_problem(_problems(text), "AIGatewayRoute/default: spec.rules[0].matches[0].headers[0].value:")
    assert problem in found


def test_a_cel_cost_is_checked_at_load():
    text = default_config_yaml({}, showcase=False).replace(
        "  llmRequestCosts:\n",
        "  llmRequestCosts:\n"
        "    - metadataKey: llm_weighted\n      type: CEL\n      cel: double(input_tokens) * 1.5\n"
        "    - metadataKey: llm_broken\n      type: CEL\n      cel: 'input_tokens +'\n",
    )
    problems = _problems(text)
    assert "llm_weighted" in _one_problem(problems, "AIGatewayRoute/default: spec.llmRequestCosts[0].cel:", "integer")
    assert "llm_broken" in _one_problem(problems, "AIGatewayRoute/default: spec.llmRequestCosts[1].cel:", "invalid")


def test_no_route_at_all_is_an_error():
    problems = _problems("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {apiKey: x}\n")
    assert any("no AIGatewayRoute" in p for p in problems)


def test_ignored_kinds_are_reported_not_rejected():
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\n"
        "spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n---\n"
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata: {name: proxy}\nspec: {}\n---\n"
        + default_config_yaml({}, showcase=False)
    )
    config = load_text(text, "eaig.yaml")
    assert len(config.ignored) == 2
    assert config.ignored[0].startswith("GatewayClass/eg (eaig.yaml): ignored")
    assert config.ignored[1].startswith("EnvoyProxy/proxy (eaig.yaml): ignored")


def test_unknown_kind_is_an_error():
    problems = _problems(
        default_config_yaml({}, showcase=False) + "---\nkind: HTTPRoutee\nmetadata: {name: r}\nspec: {}\n"
    )
    _one_problem(problems, "gw.yaml: HTTPRoutee/r: kind: unsupported kind")


# ---- budgets (BackendTrafficPolicy) with Envoy Gateway's semantics -------------------------------------------


def _budget_text(rule: str, target: str = "{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: default}"):
    before, _, _ = default_config_yaml({}, showcase=False).partition(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend"
    )
    fake_backend = default_config_yaml({}, showcase=False)[len(before) :]
    policy = (
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: extra}\n"
        f"spec:\n  targetRefs: [{target}]\n  rateLimit:\n    type: Global\n    global:\n      rules:\n{rule}"
    )
    return before + fake_backend + "---\n" + policy


def _extra_budget(rule: str, **kwargs):
    (budget,) = [b for b in load_text(_budget_text(rule, **kwargs)).budgets if b.name.startswith("extra/")]
    return budget


def test_budget_on_the_gateway_applies_to_every_route():
    # Envoy AI Gateway's token_ratelimit example attaches the policy to the Gateway.
    rule = "        - limit: {requests: 5, unit: Minute}\n"
    budget = _extra_budget(rule, target="{group: gateway.networking.k8s.io, kind: Gateway, name: tokenvoy}")
    assert budget.routes == ()
    problems = _problems(_budget_text(rule, target="{kind: Gateway, name: other}"))
    _one_problem(problems, "BackendTrafficPolicy/extra: spec.targetRefs[0].name:", "Gateway/other")


def test_budget_without_request_cost_counts_each_request_as_one():
    # Envoy Gateway: no `cost.request` means every request costs 1, also when `cost.response` is set.
    rule = (
        "        - limit: {requests: 1000, unit: Day}\n"
        "          cost:\n            response:\n              from: Metadata\n"
        "              metadata: {namespace: io.envoy.ai_gateway, key: llm_output_token}\n"
    )
    budget = _extra_budget(rule)
    assert (budget.request_cost, budget.response_cost_key) == (1, "llm_output_token")
    plain = _extra_budget("        - limit: {requests: 60, unit: Minute}\n")
    assert (plain.request_cost, plain.response_cost_key) == (1, None)


def test_exact_budget_selector():
    rule = (
        "        - clientSelectors: [{headers: [{name: X-Team, type: Exact, value: research}]}]\n"
        "          limit: {requests: 5, unit: Week}\n"
    )
    assert _extra_budget(rule).selectors == (BudgetSelector("x-team", BudgetSelectorType.EXACT, "research"),)


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ("        - limit: {unit: Hour}\n", "rules[0].limit.requests", "required"),
        ("        - clientSelectors: [{headers: [{name: x}]}]\n          limit: {requests: 1, unit: Hour}\n",
         "headers[0].value", "required when type is Exact"),
        ("        - clientSelectors: [{headers: [{name: x, value: a, invert: true}]}]\n"
         "          limit: {requests: 1, unit: Hour}\n", "headers[0].invert", "not supported"),
        ("        - clientSelectors: [{sourceCIDR: {type: Distinct, value: 0.0.0.0/0}}]\n"
         "          limit: {requests: 1, unit: Hour}\n", "clientSelectors[0].sourceCIDR", "not supported"),
        ("        - limit: {requests: 1, unit: Hour}\n          shadowMode: true\n",
         "rules[0].shadowMode", "not supported"),
        ("        - limit: {requests: 1, unit: Hour}\n"
         "          cost: {request: {from: Metadata, metadata: {key: k}}}\n", "cost.request.from", "only Number"),
        ("        - limit: {requests: 1, unit: Hour}\n          cost: {response: {from: Number, number: 3}}\n",
         "cost.response.from", "only Metadata"),
    ],
)  # fmt: skip
def test_budget_errors(rule, path, message):
    problem = _one_problem(_problems(_budget_text(rule)), "gw.yaml: BackendTrafficPolicy/extra: spec.rateLimit.global.")
    assert path in problem
    assert message in problem


# ---- secrets ------------------------------------------------------------------------------------------


def _with_secret(secret_body: str) -> str:
    text = default_config_yaml({"OPENAI_API_KEY": "x"})
    head, _, _ = text.partition("stringData:\n")
    return head + secret_body


@pytest.mark.parametrize(
    ("secret_body", "source", "value"),
    [
        ("stringData:\n  apiKey: ${OPENAI_API_KEY}\n", "env", "sk-env-789"),
        ("stringData:\n  apiKey: ${env:OPENAI_API_KEY}\n", "env", "sk-env-789"),
        ("stringData:\n  apiKey: sk-literal-123\n", "literal", "sk-literal-123"),
        (f"data:\n  apiKey: {base64.b64encode(b'sk-base64-456').decode()}\n", "literal", "sk-base64-456"),
    ],
)
def test_secret_sources(secret_body, source, value, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-789")
    secret = load_text(_with_secret(secret_body)).backends["openai"].security.api_key
    assert secret.source == source
    assert secret.read() == value


def test_secret_from_file(tmp_path):
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-file-000\n")
    secret = load_text(_with_secret(f"stringData:\n  apiKey: ${{file:{key_file}}}\n")).backends["openai"]
    assert secret.security.api_key.read() == "sk-file-000"


def test_unset_environment_variable_is_reported_when_read_without_the_name_of_other_secrets(monkeypatch):
    monkeypatch.delenv("TOKENVOY_TEST_UNSET", raising=False)
    secret = load_text(_with_secret("stringData:\n  apiKey: ${TOKENVOY_TEST_UNSET}\n")).backends["openai"]
    with pytest.raises(ValueError, match=r"Secret/openai-api-key.*TOKENVOY_TEST_UNSET"):
        secret.security.api_key.read()


def test_invalid_base64_is_an_error():
    problem = _one_problem(_problems(_with_secret("data:\n  apiKey: '%%%not-base64'\n")), "Secret/openai-api-key")
    assert "data.apiKey" in problem
    assert "%%%" not in problem


SECRET = "sk-proj-DoNotLeakMe-0123456789"


def test_secret_value_never_in_repr():
    for body in (
        f"stringData:\n  apiKey: {SECRET}\n",
        f"data:\n  apiKey: {base64.b64encode(SECRET.encode()).decode()}\n",
    ):
        config = load_text(_with_secret(body))
        assert config.backends["openai"].security.api_key.read() == SECRET
        assert SECRET not in repr(config)
        assert SECRET not in str(config)


@pytest.mark.parametrize("yaml_loader", ["C", "pure-Python"])
def test_secret_value_never_in_error_messages(yaml_loader, monkeypatch):
    if yaml_loader == "pure-Python":  # the fallback when libyaml is missing quotes the offending line
        monkeypatch.setattr(documents, "_YamlLoader", yaml.SafeLoader)
    broken = [
        # A YAML error on the secret's own line.
        _with_secret(f"stringData:\n  apiKey: {SECRET}: oops\n"),
        _with_secret(f'stringData:\n  apiKey: "{SECRET}\n'),
        # Config errors elsewhere while the secret is valid.
        _with_secret(f"stringData:\n  apiKey: {SECRET}\n").replace("type: APIKey", "type: APIKeys"),
        # The secret pasted where a mapping belongs.
        _with_secret(f"stringData: {SECRET}\n"),
        _with_secret(f"stringData:\n  apiKey: {SECRET}\n").replace(
            "apiKey:\n    secretRef:", f"apiKey: {SECRET}\n    x:"
        ),
    ]
    for text in broken:
        with pytest.raises(ConfigError) as excinfo:
            load_text(text)
        assert SECRET not in str(excinfo.value)
        assert re.search(r"\S", str(excinfo.value))


# ---- tokenvoy.io/responses-api on an AIServiceBackend ------------------------------------------------------


def _with_responses_api(value: str, schema: str = "OpenAI") -> str:
    documents = list(yaml.safe_load_all(default_config_yaml({})))
    for doc in documents:
        if doc["kind"] == "AIServiceBackend" and doc["metadata"]["name"] == "fake":
            doc["metadata"]["annotations"] = {"tokenvoy.io/responses-api": value}
            doc["spec"]["schema"]["name"] = schema
    return yaml.safe_dump_all(documents)


def test_an_openai_backend_can_be_marked_as_serving_no_responses_api():
    assert load_text(_with_responses_api("chat-completions")).backends["fake"].responses_via_chat is True
    assert load_text(_with_responses_api("native")).backends["fake"].responses_via_chat is False
    assert load_text(default_config_yaml({})).backends["fake"].responses_via_chat is False


def test_a_wrong_responses_api_annotation_is_reported():
    _one_problem(_problems(_with_responses_api("chat")), "tokenvoy.io/responses-api", "native or chat-completions")
    problem = _one_problem(_problems(_with_responses_api("native", "Anthropic")), "tokenvoy.io/responses-api")
    assert "always translated" in problem

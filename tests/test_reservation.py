"""Reservation mode (bounded overshoot): config, Envoy rendering, the estimate and what extproc writes."""

from __future__ import annotations

import subprocess

import orjson
import pytest
import yaml

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import AI_GATEWAY_METADATA_NAMESPACE, Budget, BudgetSelector, BudgetSelectorType
from tokenvoy.extproc.costs import CallContext
from tokenvoy.extproc.estimate import (
    output_tokens,
    prompt_tokens,
    reservation_values,
    route_reservations,
)
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.ratelimit.config import load_config
from tokenvoy.ratelimit.limiter import Descriptor, LimitRequest, decide, plan
from tokenvoy.render.bootstrap import budget_rate_limits, render_bootstrap
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.runner.run import envoy_binary

NS = AI_GATEWAY_METADATA_NAMESPACE


def _config_text(annotations: dict[str, str] | None = None, costs: list[dict] | None = None) -> str:
    documents = list(yaml.safe_load_all(default_config_yaml({})))
    for doc in documents:
        if doc["kind"] == "BackendTrafficPolicy" and annotations is not None:
            doc["metadata"]["annotations"] = annotations
        if doc["kind"] == "AIGatewayRoute" and costs is not None:
            doc["spec"]["llmRequestCosts"] = costs
    return yaml.safe_dump_all(documents, sort_keys=False)


def _budget(**changes: object) -> Budget:
    base = Budget("b/rule/0", (BudgetSelector("x-user-id", BudgetSelectorType.DISTINCT),), 1000, "Hour", 0)
    return Budget(**{**base.__dict__, **changes})


# --- config ----------------------------------------------------------------------------------------------


def test_default_budget_mode_is_check_then_charge() -> None:
    (budget,) = load_text(_config_text()).budgets
    assert not budget.reservation
    assert budget.reserved_metadata_key is None


def test_reservation_annotation_and_default_cap() -> None:
    text = _config_text({"tokenvoy.io/budget-mode": "reservation", "tokenvoy.io/default-max-tokens": "1024"})
    (budget,) = load_text(text).budgets
    assert budget.reservation
    assert budget.default_max_tokens == 1024
    assert budget.reserved_metadata_key == "llm_total_token_reserved"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"tokenvoy.io/budget-mode": "reserve"}, "must be check, reservation or concurrency"),
        ({"tokenvoy.io/budget-mode": "reservation", "tokenvoy.io/default-max-tokens": "lots"}, "positive integer"),
        ({"tokenvoy.io/default-max-tokens": "0"}, "positive integer"),
    ],
)
def test_bad_budget_annotations_are_config_errors(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(_config_text(annotations))


# --- Envoy rendering ---------------------------------------------------------------------------------------


def test_check_then_charge_renders_envoy_gateways_shape() -> None:
    check, charge = budget_rate_limits([_budget()])
    assert check["hits_addend"] == {"number": 0}
    assert "apply_on_stream_done" not in check
    assert charge == {
        "actions": check["actions"],
        "apply_on_stream_done": True,
        "hits_addend": {"format": f"%DYNAMIC_METADATA({NS}:llm_total_token)%"},
    }


def test_reservation_holds_then_releases_the_rls_token_and_charges_at_stream_done() -> None:
    reserve, release, charge = budget_rate_limits([_budget(reservation=True)], "llm")
    estimate = f"%DYNAMIC_METADATA({NS}:llm_total_token_reserved)%"
    budget_actions = charge["actions"]
    assert budget_actions[:2] == [
        {"generic_key": {"descriptor_key": "budget", "descriptor_value": "b/rule/0"}},
        {"generic_key": {"descriptor_key": "route", "descriptor_value": "llm"}},  # shared: false
    ]
    hold = {"generic_key": {"descriptor_key": "tokenvoy_hold", "descriptor_value": "reserve"}}
    assert reserve == {"actions": [*budget_actions, hold], "hits_addend": {"format": estimate}}
    # the release gives back what the RLS says it held (its answer's metadata), never extproc's estimate
    release_entry = {
        "metadata": {
            "descriptor_key": "tokenvoy_hold",
            "metadata_key": {"key": "envoy.filters.http.ratelimit", "path": [{"key": "b/rule/0_hold"}]},
        }  # source: DYNAMIC, the default
    }
    assert release == {
        "actions": [*budget_actions, release_entry],
        "apply_on_stream_done": True,
        "hits_addend": {
            "format": "%DYNAMIC_METADATA(envoy.filters.http.ratelimit:b/rule/0)%",
            "is_negative_hits": True,
        },
    }
    assert charge == {
        "actions": budget_actions,
        "apply_on_stream_done": True,
        "hits_addend": {"format": f"%DYNAMIC_METADATA({NS}:llm_total_token)%"},
    }


def test_reservation_bootstrap_is_accepted_by_envoy(tmp_path) -> None:
    config = load_text(_config_text({"tokenvoy.io/budget-mode": "reservation"}))
    bootstrap = render_bootstrap(config, EnvoyOptions("127.0.0.1:9000", "127.0.0.1:9001"))
    path = tmp_path / "envoy.json"
    path.write_bytes(orjson.dumps(bootstrap))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is_negative_hits" in path.read_text()


# --- the estimate ------------------------------------------------------------------------------------------


def test_prompt_estimate_is_bytes_over_four_plus_four_per_message() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * 10},
            {"role": "user", "content": [{"type": "text", "text": "y" * 7}, {"type": "image_url"}]},
        ]
    }
    assert prompt_tokens(body) == 5 + 2 * 4  # ceil(17 / 4) + 4 per message
    assert prompt_tokens({"system": "abcd", "messages": [{"role": "user", "content": "é"}]}) == 2 + 4  # UTF-8 bytes
    assert prompt_tokens({}) == 0


def test_a_gemini_api_request_is_estimated_from_its_contents_and_generation_config() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "x" * 10}]},
        "contents": [{"role": "user", "parts": [{"text": "y" * 7}, {"inlineData": {"data": "zz"}}]}],
        "generationConfig": {"maxOutputTokens": 40, "candidateCount": 2},
    }
    assert prompt_tokens(body) == 5 + 4  # ceil(17 / 4) + 4 for the one turn
    assert output_tokens(body, 4096) == 80
    assert output_tokens({"generation_config": {"max_output_tokens": 9}}, 4096) == 9  # snake_case, as Google takes
    assert output_tokens({"contents": []}, 4096) == 4096


def test_output_cap_precedence_choices_and_default() -> None:
    assert output_tokens({"max_completion_tokens": 50, "max_tokens": 10}, 4096) == 50
    assert output_tokens({"max_tokens": 10}, 4096) == 10
    assert output_tokens({"max_output_tokens": 7}, 4096) == 7
    assert output_tokens({"max_tokens": 10, "n": 3}, 4096) == 30
    assert output_tokens({"max_tokens": True}, 4096) == 4096
    assert output_tokens({}, 99) == 99


def test_reservation_is_in_the_budgets_unit_cel_included() -> None:
    costs = [
        {"metadataKey": "llm_total_token", "type": "TotalToken"},
        {"metadataKey": "llm_cost_cents", "type": "CEL", "cel": "input_tokens * 1 + output_tokens * 4"},
    ]
    documents = list(yaml.safe_load_all(_config_text({"tokenvoy.io/budget-mode": "reservation"}, costs)))
    for doc in documents:
        if doc["kind"] == "BackendTrafficPolicy":
            rule = dict(doc["spec"]["rateLimit"]["global"]["rules"][0])
            rule["cost"] = {"response": {"from": "Metadata", "metadata": {"key": "llm_cost_cents"}}}
            doc["spec"]["rateLimit"]["global"]["rules"].append(rule)
    config = load_text(yaml.safe_dump_all(documents))
    (route,) = config.routes
    reservation = route_reservations(config)[route.name]
    assert Runtime(config).reservations == {route.name: reservation}  # precomputed at config load
    body = {"messages": [{"role": "user", "content": "abcdefgh"}], "max_tokens": 10}  # 2 + 4 in, 10 out
    rule = Runtime(config).rules[0]
    values = reservation_values(body, reservation, rule.cost_values, CallContext("m", "", route.name))
    assert values == {"llm_total_token_reserved": 16, "llm_cost_cents_reserved": 6 + 40}


def test_no_reservation_without_a_reservation_budget() -> None:
    assert route_reservations(load_text(_config_text())) == {}


# --- what extproc writes -----------------------------------------------------------------------------------


def _router_messages(stream: RouterStream, body: dict) -> ep.ProcessingResponse:
    headers = {":path": "/v1/chat/completions", ":method": "POST", "content-type": "application/json"}
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )
    message = ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=header_map))
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"connection.id": 7, "request.time": "2026-11-22T12:00:00.000001+00:00", "request.id": "r-1"})
    stream.handle(message)
    return stream.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(body), end_of_stream=True)))


@pytest.mark.parametrize("reservation", [True, False])
def test_request_body_response_carries_the_estimate_only_in_reservation_mode(reservation: bool) -> None:
    annotations = {"tokenvoy.io/budget-mode": "reservation"} if reservation else {}
    runtime = Runtime(load_text(_config_text(annotations)))
    stream = RouterStream(runtime, RequestRegistry())
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 10}
    response = _router_messages(stream, body)
    assert response.WhichOneof("response") == "request_body"
    metadata = response.dynamic_metadata.fields
    if reservation:
        assert metadata[NS].struct_value.fields["llm_total_token_reserved"].number_value == 3 + 4 + 10
    else:
        assert NS not in metadata
    stream.close()


# --- the limiter: reserve, then refund the estimate and charge the actual ------------------------------------


def test_limiter_reserve_refund_charge_settles_to_the_actual() -> None:
    text = "domain: d\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 100}\n"
    config = load_config([("d.yaml", text)])
    counters: dict[str, int] = {}

    def call(*descriptors: Descriptor) -> int:
        p = plan(config, LimitRequest("d", descriptors), 1_700_000_000)
        counts = []
        for op in p.ops:
            counters[op.key] = max(0, counters.get(op.key, 0) + op.delta)
            counts.append(counters[op.key])
        return decide(p, counts).overall_code

    entries = (("user", "a"),)
    assert call(Descriptor(entries, 60)) == 1  # reserve 60: fits
    assert call(Descriptor(entries, 60)) == 2  # another 60 does not (120 > 100) ...
    call(Descriptor(entries, 60, is_negative_hits=True))  # ... and its stream-done refund gives it back
    call(Descriptor(entries, 60, is_negative_hits=True), Descriptor(entries, 25))  # settle the first: 25
    assert list(counters.values()) == [25]

"""Envoy Gateway's generated rate limit configs load into the same tree over ADS as from their YAML.

For every BackendTrafficPolicy case of EG's translator tests, EG publishes the envoyproxy/ratelimit config it
generates (its ``RateLimitConfig`` protos written as YAML). tokenvoy's ratelimit, run in place of EG's,
receives those protos over ADS; the tree it builds from them must be the one ``ratelimit/config.py`` builds
from the YAML: same domains, descriptors, limits, shadow modes and statistics keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2
from tokenvoy.ratelimit.config import (
    DescriptorNode,
    RateLimitConfig,
    RateLimitConfigError,
    Unit,
    load_config,
    tree_document,
)
from tokenvoy.ratelimit.xds_config import (
    RATE_LIMIT_CONFIG_TYPE_URL,
    config_from_eg_yaml,
    config_from_protos,
    protos_from_eg_yaml,
)

GOLDENS = Path(__file__).resolve().parents[1].parent / "shared" / "envoy-gateway" / "ratelimit-config"
CASES = sorted(p.name.removesuffix(".yaml") for p in GOLDENS.glob("*.yaml") if not p.name.endswith(".routes.yaml"))


def node_signature(node: DescriptorNode) -> Any:
    """Everything a lookup can observe in a subtree, as comparable values (nodes compare by identity)."""
    return (
        node.limit,
        sorted((key, node_signature(child)) for key, child in node.exact.items()),
        sorted((key, [(p, node_signature(c)) for p, c in pairs]) for key, pairs in node.wildcards.items()),
        sorted((key, node_signature(child)) for key, child in node.by_key.items()),
    )


def tree_signature(config: RateLimitConfig) -> Any:
    return sorted((name, d.limit_count, node_signature(d.root)) for name, d in config.domains.items())


def file_tree(case: str) -> RateLimitConfig:
    """What ``tokenvoy ratelimit --config`` loads: one file per domain, i.e. each YAML document on its own."""
    documents = (GOLDENS / f"{case}.yaml").read_text().split("\n---\n")
    return load_config((f"{case}.yaml#{i}", doc) for i, doc in enumerate(documents))


def over_the_wire(case: str) -> list[rls_conf_pb2.RateLimitConfig]:
    """The protos EG serves for this case, packed into ``Any`` and decoded as the ADS client receives them."""
    received = []
    for proto in protos_from_eg_yaml((GOLDENS / f"{case}.yaml").read_text(), case):
        packed = any_pb2.Any()
        packed.Pack(proto)
        assert packed.type_url == RATE_LIMIT_CONFIG_TYPE_URL
        wire = any_pb2.Any.FromString(packed.SerializeToString())
        decoded = rls_conf_pb2.RateLimitConfig()
        assert wire.Unpack(decoded)
        received.append(decoded)
    return received


def test_every_published_case_is_here() -> None:
    assert len(CASES) == 26, CASES


@pytest.mark.parametrize("case", CASES)
def test_ads_tree_equals_file_tree(case: str) -> None:
    from_file = file_tree(case)
    from_ads = config_from_protos(over_the_wire(case))
    assert tree_signature(from_ads) == tree_signature(from_file)
    assert tree_document(from_ads) == tree_document(from_file)  # what /rlconfig shows
    assert sum(d.limit_count for d in from_ads.domains.values()) > 0


def test_trees_of_different_cases_differ() -> None:
    # the comparison sees a changed limit, so the equalities above mean something
    assert tree_signature(file_tree("month-year-rule")) != tree_signature(file_tree("multiple-rules"))
    protos = over_the_wire("month-year-rule")
    protos[0].descriptors[0].descriptors[0].rate_limit.requests_per_unit += 1
    assert tree_signature(config_from_protos(protos)) != tree_signature(file_tree("month-year-rule"))
    assert tree_document(config_from_protos(protos)) != tree_document(file_tree("month-year-rule"))


def test_a_loaded_golden_answers_the_descriptor_its_route_sends() -> None:
    config = config_from_eg_yaml((GOLDENS / "month-year-rule.yaml").read_text())
    match = ("rule-0-match-0", "rule-0-match-0")
    first = config.get_limit("first-listener", [("first-route", "first-route"), match])
    second = config.get_limit("first-listener", [("second-route", "second-route"), match])
    assert first is not None and (first.requests_per_unit, first.unit) == (5, Unit.MONTH)
    assert second is not None and (second.requests_per_unit, second.unit) == (1, Unit.YEAR)
    assert first.full_key == "first-listener.first-route_first-route.rule-0-match-0_rule-0-match-0"


def test_shadow_mode_from_eg_reaches_the_limit() -> None:
    config = config_from_protos(over_the_wire("global-shadow-mode"))
    entries = [
        ("first-route", "first-route"),
        ("rule-0-match-0", "rule-0-match-0"),
        ("rule-0-match-1", "rule-0-match-1"),
        ("rule-0-match-2", "rule-0-match-2"),
        ("masked_remote_address", "0.0.0.0/0"),
    ]
    limit = config.get_limit("first-listener", entries)
    assert limit is not None and limit.shadow_mode and limit.requests_per_unit == 5


def _one_descriptor(**fields: Any) -> rls_conf_pb2.RateLimitConfig:
    return rls_conf_pb2.RateLimitConfig(
        name="l", domain="d", descriptors=[rls_conf_pb2.RateLimitDescriptor(key="k", **fields)]
    )


@pytest.mark.parametrize(
    ("proto", "expected"),
    [
        (
            _one_descriptor(rate_limit=rls_conf_pb2.RateLimitPolicy(requests_per_unit=5)),
            'xDS resource "l": domain "d" descriptor k: rate_limit: unit is required',
        ),
        (
            _one_descriptor(rate_limit=rls_conf_pb2.RateLimitPolicy(unit=rls_conf_pb2.HOUR, unlimited=True)),
            "rate_limit: unit must not be set when unlimited is true",
        ),
        (
            _one_descriptor(quota_mode=True, rate_limit=rls_conf_pb2.RateLimitPolicy(unit=1, requests_per_unit=1)),
            "descriptor k: quota_mode is not supported by tokenvoy's ratelimit",
        ),
        (_one_descriptor(shadow_mode=True), "descriptor k: shadow_mode needs a rate_limit on the same descriptor"),
        (rls_conf_pb2.RateLimitConfig(name="empty"), 'xDS resource "empty": domain must not be empty'),
        (
            rls_conf_pb2.RateLimitConfig(domain="d", descriptors=[rls_conf_pb2.RateLimitDescriptor()]),
            "descriptor #1: key must not be empty",
        ),
    ],
)
def test_a_config_tokenvoy_cannot_honour_is_refused_with_its_path(
    proto: rls_conf_pb2.RateLimitConfig, expected: str
) -> None:
    with pytest.raises(RateLimitConfigError) as info:
        config_from_protos([proto])
    assert expected in str(info.value)


def test_metadata_is_refused_rather_than_dropped() -> None:
    proto = _one_descriptor(rate_limit=rls_conf_pb2.RateLimitPolicy(unit=1, requests_per_unit=1))
    proto.descriptors[0].metadata.update({"team": "a"})
    with pytest.raises(RateLimitConfigError, match="metadata is not supported"):
        config_from_protos([proto])


def test_two_resources_for_one_domain_are_refused() -> None:
    one = rls_conf_pb2.RateLimitConfig(name="a", domain="d")
    two = rls_conf_pb2.RateLimitConfig(name="b", domain="d")
    with pytest.raises(RateLimitConfigError, match='duplicate domain "d"'):
        config_from_protos([one, two])


def test_eg_yaml_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(RateLimitConfigError, match="'domian' is not a RateLimitConfig field"):
        protos_from_eg_yaml("name: a\ndomian: a\n")


def test_shadow_mode_on_a_parent_of_an_enforced_limit_is_still_refused() -> None:
    # EG's pattern (every limit below in shadow mode) loads; a parent flag that would suggest inheritance does not
    text = (
        "domain: ai\ndescriptors:\n  - key: a\n    shadow_mode: true\n    descriptors:\n"
        "      - key: b\n        rate_limit: {unit: hour, requests_per_unit: 1}\n"
    )
    with pytest.raises(RateLimitConfigError, match="descriptor a: shadow_mode needs a rate_limit"):
        load_config([("budgets.yaml", text)])

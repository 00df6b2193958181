"""Rate limit config: the envoyproxy/ratelimit YAML format, matching precedence and error messages."""

from __future__ import annotations

import textwrap

import pytest

from tokenvoy.ratelimit.config import (
    MAX_UINT32,
    RateLimit,
    RateLimitConfig,
    RateLimitConfigError,
    Unit,
    load_config,
    parse_domain,
)


def cfg(text: str, source: str = "budgets.yaml") -> RateLimitConfig:
    return load_config([(source, textwrap.dedent(text))])


def limit_of(config: RateLimitConfig, *entries: tuple[str, str], domain: str = "ai") -> RateLimit | None:
    return config.get_limit(domain, entries)


def config_error(text: str, source: str = "budgets.yaml") -> str:
    with pytest.raises(RateLimitConfigError) as info:
        cfg(text, source)
    return str(info.value)


PRECEDENCE = """
domain: ai
descriptors:
  - key: model
    rate_limit: {unit: minute, requests_per_unit: 3, name: any-model}
  - key: model
    value: gpt-*
    rate_limit: {unit: minute, requests_per_unit: 2, name: gpt-family}
  - key: model
    value: gpt-4*
    rate_limit: {unit: minute, requests_per_unit: 20, name: never-reached}
  - key: model
    value: gpt-4
    rate_limit: {unit: minute, requests_per_unit: 1, name: gpt-4-exact}
"""


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("gpt-4", "gpt-4-exact"),  # exact beats both wildcards and key-only
        ("gpt-4o", "gpt-family"),  # first wildcard in config order wins, as upstream
        ("gpt-", "gpt-family"),  # the prefix itself matches
        ("claude-3", "any-model"),  # key-only catches the rest
        ("GPT-4", "any-model"),  # values are case-sensitive
    ],
)
def test_exact_then_wildcard_then_key_only(value: str, name: str) -> None:
    limit = limit_of(cfg(PRECEDENCE), ("model", value))
    assert limit is not None and limit.name == name


def test_remembered_matches_answer_as_the_walk_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    config = cfg(PRECEDENCE)
    monkeypatch.setattr("tokenvoy.ratelimit.config._MAX_REMEMBERED_MATCHES", 8)
    values = [f"gpt-{i}" for i in range(20)] + ["claude-3", "gpt-4", "gpt-4o"]
    for _ in range(2):  # the second pass is answered from the memo (or from a fresh walk after it filled)
        for value in values:
            entries = (("model", value),)
            assert config.get_limit("ai", entries) == config.match("ai", entries)
            assert config.get_limit("other", entries) is None
    assert config.get_limit("ai", (("no-such-key", "x"),)) is None
    assert config.get_limit("ai", (("no-such-key", "x"),)) is None  # a remembered miss is still a miss
    assert len(config._matches) <= 8


def test_wildcard_matches_key_exactly_and_value_by_prefix() -> None:
    config = cfg(
        """
        domain: ai
        descriptors:
          - key: a
            value: b*
            rate_limit: {unit: second, requests_per_unit: 1}
        """
    )
    assert limit_of(config, ("a", "bcd")) is not None
    # upstream compares "key_value" strings, so key "a_bx" would match "a_b*"; we compare the key exactly
    assert limit_of(config, ("a_bx", "y")) is None


def test_limit_applies_at_the_node_of_the_last_entry() -> None:
    config = cfg(
        """
        domain: ai
        descriptors:
          - key: x-user-id
            rate_limit: {unit: hour, requests_per_unit: 100, name: per-user}
            descriptors:
              - key: model
                value: gpt-4
                rate_limit: {unit: hour, requests_per_unit: 10, name: per-user-gpt-4}
              - key: model
          - key: route
            value: chat
            rate_limit: {unit: second, requests_per_unit: 5, name: leaf}
        """
    )
    per_user = limit_of(config, ("x-user-id", "alice"))
    assert per_user is not None and per_user.name == "per-user"
    nested = limit_of(config, ("x-user-id", "alice"), ("model", "gpt-4"))
    assert nested is not None and nested.name == "per-user-gpt-4"
    # the last entry reaches a node without rate_limit: no limit, the parent's does not leak down
    assert limit_of(config, ("x-user-id", "alice"), ("model", "claude")) is None
    # a request deeper than the tree: no limit even though an intermediate node has one (upstream Example 4)
    assert limit_of(config, ("route", "chat"), ("x-user-id", "alice")) is None
    assert limit_of(config, ("x-user-id", "alice"), ("model", "gpt-4"), ("extra", "1")) is None
    assert limit_of(config) is None
    assert limit_of(config, ("x-user-id", "alice"), domain="other") is None


def test_no_backtracking_to_a_less_specific_sibling() -> None:
    # Upstream picks the most specific child per level and never retries a sibling when the walk dead-ends.
    config = cfg(
        """
        domain: ai
        descriptors:
          - key: tier
            value: free
          - key: tier
            descriptors:
              - key: x-user-id
                rate_limit: {unit: day, requests_per_unit: 1}
        """
    )
    assert limit_of(config, ("tier", "paid"), ("x-user-id", "a")) is not None
    assert limit_of(config, ("tier", "free"), ("x-user-id", "a")) is None


@pytest.mark.parametrize(
    ("text", "unit", "seconds"),
    [
        ("second", Unit.SECOND, 1),
        ("Minute", Unit.MINUTE, 60),
        ("HOUR", Unit.HOUR, 3600),
        ("day", Unit.DAY, 86400),
        ("week", Unit.WEEK, 604800),
        ("month", Unit.MONTH, 30 * 86400),  # envoyproxy/ratelimit: fixed 30 days
        ("year", Unit.YEAR, 365 * 86400),
    ],
)
def test_units_are_case_insensitive_with_upstream_lengths(text: str, unit: Unit, seconds: int) -> None:
    limit = limit_of(
        cfg(
            f"""
            domain: ai
            descriptors:
              - key: k
                rate_limit: {{unit: {text}, requests_per_unit: 7}}
            """
        ),
        ("k", "v"),
    )
    assert limit == RateLimit(requests_per_unit=7, unit=unit, full_key="ai.k")
    assert unit.seconds == seconds


def test_unit_wire_numbers_match_envoy() -> None:
    assert [(u.name, u.value) for u in Unit] == [
        ("SECOND", 1),
        ("MINUTE", 2),
        ("HOUR", 3),
        ("DAY", 4),
        ("MONTH", 5),
        ("YEAR", 6),
        ("WEEK", 7),
    ]


def test_all_fields_are_loaded() -> None:
    config = cfg(
        """
        domain: ai
        descriptors:
          - key: model
            value: gpt-4
            shadow_mode: true
            detailed_metric: true
            rate_limit:
              unit: minute
              requests_per_unit: 0
              name: blocked
              replaces: [{name: free}]
          - key: tier
            value: free
            rate_limit: {unit: day, requests_per_unit: 4294967295, name: free}
          - key: ldap
            rate_limit: {unlimited: true}
          - key: to_number
            value: 500
            rate_limit: {unit: day, requests_per_unit: 1}
          - key: code
            value: 010
            rate_limit: {unit: day, requests_per_unit: 1}
        """
    )
    assert limit_of(config, ("model", "gpt-4")) == RateLimit(
        requests_per_unit=0,
        unit=Unit.MINUTE,
        name="blocked",
        replaces=("free",),
        shadow_mode=True,
        detailed_metric=True,
        full_key="ai.model_gpt-4",
    )
    free = limit_of(config, ("tier", "free"))
    assert free is not None and free.requests_per_unit == MAX_UINT32
    ldap = limit_of(config, ("ldap", "anything"))
    assert ldap is not None and ldap.unlimited
    assert limit_of(config, ("to_number", "500")) is not None  # unquoted integers are values too
    assert limit_of(config, ("code", "010")) is not None  # as written, not YAML 1.1 octal 8
    assert limit_of(config, ("code", "8")) is None
    assert config.domains["ai"].limit_count == 5
    assert config.domains["ai"].source == "budgets.yaml"


def test_several_files_and_domains() -> None:
    config = load_config(
        [
            ("a.yaml", "domain: ai\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"),
            ("b.yaml", "domain: other\n"),
        ]
    )
    assert sorted(config.domains) == ["ai", "other"]
    assert limit_of(config, ("k", "v")) is not None
    assert limit_of(config, ("k", "v"), domain="other") is None


def test_duplicate_domain_names_both_files() -> None:
    with pytest.raises(RateLimitConfigError) as info:
        load_config([("a.yaml", "domain: ai\n"), ("b.yaml", "domain: ai\n")])
    assert str(info.value) == 'b.yaml: duplicate domain "ai" (already defined in a.yaml)'


def test_lookup_structure_is_immutable() -> None:
    config = cfg(PRECEDENCE)
    root = config.domains["ai"].root
    with pytest.raises(TypeError):
        root.by_key["x"] = root  # type: ignore[index]
    with pytest.raises(TypeError):
        config.domains["x"] = config.domains["ai"]  # type: ignore[index]
    limit = limit_of(config, ("model", "gpt-4"))
    assert limit is not None
    with pytest.raises(AttributeError):
        limit.requests_per_unit = 5  # type: ignore[misc]


NESTED_BAD_RPU = """
domain: ai
descriptors:
  - key: x-user-id
    descriptors:
      - key: model
        value: gpt-4
        rate_limit: {unit: hour, requests_per_unit: -1}
"""


def test_error_names_file_domain_and_descriptor_path() -> None:
    assert config_error(NESTED_BAD_RPU) == (
        'budgets.yaml: domain "ai" descriptor x-user-id > model=gpt-4: '
        "rate_limit: requests_per_unit must be an integer from 0 to 4294967295, got -1"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "budgets.yaml: empty file, expected a mapping with 'domain' and 'descriptors'"),
        ("- a\n", "budgets.yaml: expected a mapping with 'domain' and 'descriptors', got list"),
        ("descriptors: []\n", "budgets.yaml: domain is required"),
        ("domain: ai\ndomian: x\n", "budgets.yaml: unknown key 'domian', did you mean \"domain\"?"),
        ("domain: ''\n", "budgets.yaml: domain must not be empty"),
        ("domain: ai\ndomain: b\n", "budgets.yaml: invalid YAML at line 2, column 1: found duplicate key 'domain'"),
        ("domain: [ai\n", "budgets.yaml: invalid YAML at line 2, column 1"),
        ("domain: ai\ndescriptors: {key: a}\n", 'domain "ai": descriptors must be a list, got dict'),
        ("domain: ai\ndescriptors:\n  - value: x\n", 'domain "ai" descriptor #1: key is required'),
        ("domain: ai\ndescriptors:\n  - key: 1.5\n", "descriptor #1: key must be a string, got 1.5 (quote it)"),
        ("domain: ai\ndescriptors:\n  - key: a\n    value: true\n", "value must be a string, got True"),
        ("domain: ai\ndescriptors:\n  - key: a\n  - key: a\n", "descriptor a: duplicate descriptor"),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    value: b\n  - key: a\n    value: b\n",
            "descriptor a=b: duplicate descriptor",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limt: {}\n",
            "descriptor a: unknown key 'rate_limt', did you mean \"rate_limit\"?",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, request_per_unit: 1}\n",
            "descriptor a: rate_limit: unknown key 'request_per_unit', did you mean \"requests_per_unit\"?",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
            "rate_limit: unit 'fortnight' is not one of second, minute, hour, day, week, month, year",
        ),
        ("domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {requests_per_unit: 1}\n", "unit is required"),
        ("domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour}\n", "requests_per_unit is required"),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: 4294967296}\n",
            "requests_per_unit must be an integer from 0 to 4294967295, got 4294967296",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: '10'}\n",
            "requests_per_unit must be an integer from 0 to 4294967295, got '10'",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: true}\n",
            "requests_per_unit must be an integer",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, unit: hour}\n",
            "descriptor a: rate_limit: unit must not be set when unlimited is true",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: yes please}\n",
            "rate_limit: unlimited must be true or false, got 'yes please'",
        ),
        ("domain: ai\ndescriptors:\n  - key: a\n    rate_limit: 5\n", "rate_limit must be a mapping, got 5"),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    shadow_mode: true\n",
            "descriptor a: shadow_mode needs a rate_limit on the same descriptor",
        ),
        ("domain: ai\ndescriptors:\n  - key: a\n    detailed_metric: 1\n", "detailed_metric must be true or false"),
        (
            "domain: ai\ndescriptors:\n  - key: a\n"
            "    rate_limit: {unit: hour, requests_per_unit: 1, replaces: [{name: nope}]}\n",
            'descriptor a: rate_limit: replaces names "nope", but no rate_limit in this domain has it',
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n"
            "    rate_limit: {unit: hour, requests_per_unit: 1, name: me, replaces: [{name: me}]}\n",
            'replaces must not name the limit itself ("me")',
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n"
            "    rate_limit: {unit: hour, requests_per_unit: 1, replaces: [{}]}\n",
            "replaces entries need a name",
        ),
        (
            "domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: 1, replaces: [x]}\n",
            "replaces entries must be mappings like {name: other}, got 'x'",
        ),
        ("domain: ai\ndescriptors:\n  - 3\n", "descriptor #1: each descriptor must be a mapping, got 3"),
    ],
)
def test_config_errors(text: str, expected: str) -> None:
    message = config_error(text)
    assert message.startswith("budgets.yaml: ")
    assert expected in message


def test_replaces_may_name_a_limit_defined_later_in_the_file() -> None:
    config = cfg(
        """
        domain: ai
        descriptors:
          - key: a
            rate_limit: {unit: hour, requests_per_unit: 1, replaces: [{name: later}]}
          - key: b
            rate_limit: {unit: hour, requests_per_unit: 1, name: later}
        """
    )
    limit = limit_of(config, ("a", "x"))
    assert limit is not None and limit.replaces == ("later",)


def test_empty_descriptor_lists_and_yaml_merge_keys_are_fine() -> None:
    domain = parse_domain(
        textwrap.dedent(
            """
            domain: ai
            descriptors:
              - &base
                key: a
                rate_limit: {unit: hour, requests_per_unit: 1}
                descriptors:
              - <<: *base
                key: b
            """
        ),
        "x.yaml",
    )
    assert domain.limit_count == 2
    assert domain.root.child("b", "v") is not None

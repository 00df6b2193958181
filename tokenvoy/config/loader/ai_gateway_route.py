"""``AIGatewayRoute`` (Envoy AI Gateway): rules (header matches, weighted and prioritised backendRefs,
timeouts, ``/v1/models`` fields), ``llmRequestCosts`` and ``hostnames``."""

from __future__ import annotations

import re
from dataclasses import replace

from tokenvoy.config.cel import cel_cost_problem
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.inert import SCOPE_ONLY
from tokenvoy.config.loader.mutations import body_mutation, header_mutation
from tokenvoy.config.loader.values import duration_ms, is_ip_address, regex_problem, rfc3339_seconds
from tokenvoy.config.model import (
    Backend,
    BackendRef,
    CostType,
    HeaderMatch,
    HeaderMatchType,
    RequestCost,
    Route,
    Rule,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    "spec.parentRefs": "a standalone gateway has one listener: every route is attached to it",
    "spec.rules[].name": "names the rule for Kubernetes policy attachment; tokenvoy names rules <route>/rule/<n>",
    "spec.rules[].backendRefs[].namespace": SCOPE_ONLY,
}

_COST_TYPES = {item.value: item for item in CostType}


# Field names as published in the AIGatewayRoute CRD (v1alpha1 and v1beta1); `filterConfig` is from
# earlier releases: accepted, and reported as ignored.
_ROUTE_FIELDS = {"parentRefs", "rules", "llmRequestCosts", "hostnames", "filterConfig"}
_RULE_FIELDS = {"name", "matches", "backendRefs", "timeouts", "modelsOwnedBy", "modelsCreatedAt", "streamIdleTimeout"}
_MATCH_FIELDS = {"headers"}
_HEADER_MATCH_FIELDS = {"name", "type", "value"}
_BACKEND_REF_FIELDS = {
    "name",
    "namespace",
    "group",
    "kind",
    "weight",
    "priority",
    "modelNameOverride",
    "headerMutation",
    "bodyMutation",
}
_COST_FIELDS = {"metadataKey", "type", "cel"}
_FILTER_CONFIG_IGNORED = (
    "it sizes Envoy AI Gateway's external processor container (earlier releases); tokenvoy runs its own extproc"
)


def read_routes(
    items: dict[str, Resource], backends: dict[str, Backend], problems: Problems, ignored: list[str]
) -> list[Route]:
    found = []
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        if not spec.fields(_ROUTE_FIELDS):
            continue
        if spec.get("filterConfig") is not None:
            ignored.append(f"{resource.ref} ({resource.source}): spec.filterConfig ignored, {_FILTER_CONFIG_IGNORED}")
        # `/v1/models` `created` defaults to the route's creation, as in Envoy AI Gateway.
        route_created_at = rfc3339_seconds(Cursor.root(resource, problems)["metadata"]["creationTimestamp"])
        rules = []
        for index, rule_spec in enumerate(spec["rules"].items()):
            rule = _rule(rule_spec, f"{resource.name}/rule/{index}", backends, route_created_at)
            if rule is not None:
                rules.append(rule)
        costs = [cost for cost in map(_cost, spec["llmRequestCosts"].items()) if cost is not None]
        hostnames = _hostnames(spec["hostnames"])
        found.append(Route(name=resource.name, rules=tuple(rules), costs=tuple(costs), hostnames=hostnames))
    return found


def _rule(cursor: Cursor, name: str, backends: dict[str, Backend], route_created_at: int | None) -> Rule | None:
    if not cursor.fields(_RULE_FIELDS):
        return None
    matches = []
    for match in cursor["matches"].items():
        if match.fields(_MATCH_FIELDS):
            matches.append(tuple(header for header in map(_header_match, match["headers"].items()) if header))
    ref_specs = cursor["backendRefs"].items()
    refs = [ref for ref in (_backend_ref(ref, backends) for ref in ref_specs) if ref is not None]
    if not refs:
        if not ref_specs:  # otherwise each bad entry is reported already
            cursor["backendRefs"].report("required: at least one backend")
        return None
    request_ms, backend_ms = _timeouts(cursor["timeouts"])
    idle_ms = duration_ms(cursor["streamIdleTimeout"])
    owned_by = cursor["modelsOwnedBy"].string(required=False)
    created_at = rfc3339_seconds(cursor["modelsCreatedAt"])
    rule = Rule(name=name, matches=tuple(matches), backend_refs=tuple(refs))
    return replace(
        rule,
        request_timeout_ms=request_ms,
        backend_request_timeout_ms=backend_ms,
        models_owned_by=owned_by or rule.models_owned_by,
        models_created_at=created_at if created_at is not None else route_created_at,
        stream_idle_timeout_ms=idle_ms or None,
    )


def _header_match(cursor: Cursor) -> HeaderMatch | None:
    if not cursor.fields(_HEADER_MATCH_FIELDS):
        return None
    match_type = cursor.get("type", "Exact")
    if match_type not in ("Exact", "RegularExpression"):
        cursor["type"].report(f"unknown match type {match_type!r} (known: Exact, RegularExpression)")
        return None
    name = cursor["name"].string()
    value = cursor["value"].string()
    if match_type == "RegularExpression" and value is not None and (error := regex_problem(value)):
        cursor["value"].report(error)
    if name and value is not None:
        return HeaderMatch(name.lower(), value, HeaderMatchType(match_type))
    return None


def _backend_ref(cursor: Cursor, backends: dict[str, Backend]) -> BackendRef | None:
    if not cursor.fields(_BACKEND_REF_FIELDS):
        return None
    cursor.reference_kind("AIServiceBackend", "aigateway.envoyproxy.io")
    name = cursor["name"].string()
    if name is None:
        return None
    if name not in backends:
        cursor["name"].report(f"AIServiceBackend/{name} does not exist")
        return None
    override = cursor["modelNameOverride"]
    return BackendRef(
        backend=name,
        weight=cursor["weight"].integer(1, 0),
        priority=cursor["priority"].integer(0, 0),
        model_name_override=override.string(required=False) if override.value else None,
        header_mutation=header_mutation(cursor["headerMutation"]),
        body_mutation=body_mutation(cursor["bodyMutation"]),
    )


def _cost(cursor: Cursor) -> RequestCost | None:
    """One ``llmRequestCosts`` entry; a CEL expression is compiled (and tried) now."""
    if not cursor.fields(_COST_FIELDS):
        return None
    key = cursor["metadataKey"].string()
    cost_type = _COST_TYPES.get(cursor.get("type"))
    if cost_type is None:
        cursor["type"].report(f"must be one of {', '.join(_COST_TYPES)}, got {cursor.get('type')!r}")
        return None
    cel = cursor.get("cel")
    if cost_type is CostType.CEL:
        cel = cursor["cel"].string()
        if cel is None:
            return None
        if key and (error := cel_cost_problem(key, cel)):
            cursor["cel"].report(error)
            return None
    return RequestCost(key, cost_type, cel) if key else None


# Gateway API `Hostname` (as the AIGatewayRoute CRD validates it): a DNS name, optionally `*.`-prefixed.
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_HOSTNAMES = 16


def _hostnames(cursor: Cursor) -> tuple[str, ...]:
    """``spec.hostnames``: the route serves only requests whose Host (port aside) is one of them."""
    names: list[str] = []
    items = cursor.items()
    if len(items) > _MAX_HOSTNAMES:
        cursor.report(f"at most {_MAX_HOSTNAMES} entries, got {len(items)}")
    for item in items:
        name = item.value
        if not isinstance(name, str) or len(name) > 253 or not _HOSTNAME.match(name):
            item.report(f"must be a lower-case DNS name, optionally *.-prefixed (no IP), got {name!r}")
        elif is_ip_address(name):
            item.report(f"must be a DNS name, not an IP address, got {name!r}")
        elif name in names:
            item.report(f"{name!r} is listed twice")
        else:
            names.append(name)
    return tuple(names)


_TIMEOUT_FIELDS = {"request", "backendRequest"}


def _timeouts(cursor: Cursor) -> tuple[int | None, int | None]:
    if not cursor.present or not cursor.fields(_TIMEOUT_FIELDS):
        return None, None
    request = duration_ms(cursor["request"])
    backend = duration_ms(cursor["backendRequest"])
    if request and backend is not None and (backend == 0 or backend > request):
        cursor["backendRequest"].report(f"must not be longer than timeouts.request ({cursor.get('request')})")
    return request, backend


# Route targets: an AIGatewayRoute, or the HTTPRoute Envoy AI Gateway generates with the same name.
ROUTE_TARGET_KINDS = {"AIGatewayRoute", "HTTPRoute"}

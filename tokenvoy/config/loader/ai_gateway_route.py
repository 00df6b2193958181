"""``AIGatewayRoute`` (Envoy AI Gateway): rules (header matches, weighted and prioritised backendRefs,
timeouts, ``/v1/models`` fields), ``llmRequestCosts`` and ``hostnames``."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from tokenvoy.config.loader.cursor import _check_fields, _integer, _list, _Problems, _reference_kind, _Resource, _string
from tokenvoy.config.loader.mutations import _body_mutation, _header_mutation
from tokenvoy.config.loader.values import _duration_ms, _is_ip_address, _regex_problem, _rfc3339_seconds
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


def _routes(
    items: dict[str, _Resource], backends: dict[str, Backend], problems: _Problems, ignored: list[str]
) -> list[Route]:
    routes = []
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _ROUTE_FIELDS, problems):
            continue
        if spec.get("filterConfig") is not None:
            ignored.append(f"{resource.ref} ({resource.source}): spec.filterConfig ignored, {_FILTER_CONFIG_IGNORED}")
        # `/v1/models` `created` defaults to the route's creation, as in Envoy AI Gateway.
        created = resource.metadata.get("creationTimestamp")
        route_created_at = _rfc3339_seconds(resource, created, "metadata.creationTimestamp", problems)
        rules = []
        for rule_index, rule_spec in enumerate(_list(resource, spec.get("rules"), "spec.rules", problems)):
            path = f"spec.rules[{rule_index}]"
            if not _check_fields(resource, rule_spec, path, _RULE_FIELDS, problems):
                continue
            matches = []
            for match_index, match in enumerate(_list(resource, rule_spec.get("matches"), f"{path}.matches", problems)):
                match_path = f"{path}.matches[{match_index}]"
                if not _check_fields(resource, match, match_path, _MATCH_FIELDS, problems):
                    continue
                headers = []
                for header_index, header in enumerate(
                    _list(resource, match.get("headers"), f"{match_path}.headers", problems)
                ):
                    header_path = f"{match_path}.headers[{header_index}]"
                    if not _check_fields(resource, header, header_path, _HEADER_MATCH_FIELDS, problems):
                        continue
                    match_type = header.get("type", "Exact")
                    if match_type not in ("Exact", "RegularExpression"):
                        problems.add(
                            resource,
                            f"{header_path}.type",
                            f"unknown match type {match_type!r} (known: Exact, RegularExpression)",
                        )
                        continue
                    name = _string(resource, header.get("name"), f"{header_path}.name", problems)
                    value = _string(resource, header.get("value"), f"{header_path}.value", problems)
                    if match_type == "RegularExpression" and value is not None and (error := _regex_problem(value)):
                        problems.add(resource, f"{header_path}.value", error)
                    if name and value is not None:
                        headers.append(HeaderMatch(name.lower(), value, HeaderMatchType(match_type)))
                matches.append(tuple(headers))
            refs = []
            ref_specs = _list(resource, rule_spec.get("backendRefs"), f"{path}.backendRefs", problems)
            for ref_index, ref in enumerate(ref_specs):
                ref_path = f"{path}.backendRefs[{ref_index}]"
                if not _check_fields(resource, ref, ref_path, _BACKEND_REF_FIELDS, problems):
                    continue
                _reference_kind(resource, ref, ref_path, "AIServiceBackend", "aigateway.envoyproxy.io", problems)
                ref_name = _string(resource, ref.get("name"), f"{ref_path}.name", problems)
                if ref_name is None:
                    continue
                if ref_name not in backends:
                    problems.add(resource, f"{ref_path}.name", f"AIServiceBackend/{ref_name} does not exist")
                    continue
                refs.append(
                    BackendRef(
                        backend=ref_name,
                        weight=_integer(resource, ref.get("weight"), f"{ref_path}.weight", problems, 1, 0),
                        priority=_integer(resource, ref.get("priority"), f"{ref_path}.priority", problems, 0, 0),
                        model_name_override=_string(
                            resource,
                            ref.get("modelNameOverride") or None,
                            f"{ref_path}.modelNameOverride",
                            problems,
                            False,
                        ),
                        header_mutation=_header_mutation(
                            resource, ref.get("headerMutation"), f"{ref_path}.headerMutation", problems
                        ),
                        body_mutation=_body_mutation(
                            resource, ref.get("bodyMutation"), f"{ref_path}.bodyMutation", problems
                        ),
                    )
                )
            if not refs:
                if not ref_specs:  # otherwise each bad entry is reported already
                    problems.add(resource, f"{path}.backendRefs", "required: at least one backend")
                continue
            rule_name = f"{resource.name}/rule/{rule_index}"
            request_ms, backend_ms = _timeouts(resource, rule_spec.get("timeouts"), f"{path}.timeouts", problems)
            idle_ms = _duration_ms(resource, rule_spec.get("streamIdleTimeout"), f"{path}.streamIdleTimeout", problems)
            owned_by = _string(resource, rule_spec.get("modelsOwnedBy"), f"{path}.modelsOwnedBy", problems, False)
            created_at = _rfc3339_seconds(
                resource, rule_spec.get("modelsCreatedAt"), f"{path}.modelsCreatedAt", problems
            )
            rule = Rule(name=rule_name, matches=tuple(matches), backend_refs=tuple(refs))
            rules.append(
                replace(
                    rule,
                    request_timeout_ms=request_ms,
                    backend_request_timeout_ms=backend_ms,
                    models_owned_by=owned_by or rule.models_owned_by,
                    models_created_at=created_at if created_at is not None else route_created_at,
                    stream_idle_timeout_ms=idle_ms or None,
                )
            )
        costs = []
        for cost_index, cost in enumerate(
            _list(resource, spec.get("llmRequestCosts"), "spec.llmRequestCosts", problems)
        ):
            cost_path = f"spec.llmRequestCosts[{cost_index}]"
            if not _check_fields(resource, cost, cost_path, _COST_FIELDS, problems):
                continue
            key = _string(resource, cost.get("metadataKey"), f"{cost_path}.metadataKey", problems)
            cost_type = _COST_TYPES.get(cost.get("type"))
            if cost_type is None:
                problems.add(
                    resource, f"{cost_path}.type", f"must be one of {', '.join(_COST_TYPES)}, got {cost.get('type')!r}"
                )
                continue
            cel = cost.get("cel")
            if cost_type is CostType.CEL:
                cel = _string(resource, cel, f"{cost_path}.cel", problems)
                if cel is None:
                    continue
                if key and (error := _cel_error(key, cel)):
                    problems.add(resource, f"{cost_path}.cel", error)
                    continue
            if key:
                costs.append(RequestCost(key, cost_type, cel))
        hostnames = _hostnames(resource, spec.get("hostnames"), problems)
        routes.append(Route(name=resource.name, rules=tuple(rules), costs=tuple(costs), hostnames=hostnames))
    return routes


# Gateway API `Hostname` (as the AIGatewayRoute CRD validates it): a DNS name, optionally `*.`-prefixed.
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_HOSTNAMES = 16


def _hostnames(resource: _Resource, value: Any, problems: _Problems) -> tuple[str, ...]:
    """``spec.hostnames``: the route serves only requests whose Host (port aside) is one of them."""
    names: list[str] = []
    items = _list(resource, value, "spec.hostnames", problems)
    if len(items) > _MAX_HOSTNAMES:
        problems.add(resource, "spec.hostnames", f"at most {_MAX_HOSTNAMES} entries, got {len(items)}")
    for index, name in enumerate(items):
        path = f"spec.hostnames[{index}]"
        if not isinstance(name, str) or len(name) > 253 or not _HOSTNAME.match(name):
            problems.add(resource, path, f"must be a lower-case DNS name, optionally *.-prefixed (no IP), got {name!r}")
        elif _is_ip_address(name):
            problems.add(resource, path, f"must be a DNS name, not an IP address, got {name!r}")
        elif name in names:
            problems.add(resource, path, f"{name!r} is listed twice")
        else:
            names.append(name)
    return tuple(names)


_TIMEOUT_FIELDS = {"request", "backendRequest"}


def _timeouts(resource: _Resource, value: Any, path: str, problems: _Problems) -> tuple[int | None, int | None]:
    if value is None or not _check_fields(resource, value, path, _TIMEOUT_FIELDS, problems):
        return None, None
    request = _duration_ms(resource, value.get("request"), f"{path}.request", problems)
    backend = _duration_ms(resource, value.get("backendRequest"), f"{path}.backendRequest", problems)
    if request and backend is not None and (backend == 0 or backend > request):
        problems.add(
            resource, f"{path}.backendRequest", f"must not be longer than timeouts.request ({value.get('request')})"
        )
    return request, backend


def _cel_error(key: str, expression: str) -> str | None:
    """Compile and test-evaluate a CEL cost now, so ``tokenvoy validate`` reports what extproc would refuse."""
    from tokenvoy.extproc.costs import CostConfigError, compile_costs  # imports celpy: only when CEL is used

    try:
        compile_costs((RequestCost(key, CostType.CEL, expression),))
    except CostConfigError as exc:
        return str(exc)
    return None


# Route targets: an AIGatewayRoute, or the HTTPRoute Envoy AI Gateway generates with the same name.
_ROUTE_TARGET_KINDS = {"AIGatewayRoute", "HTTPRoute"}

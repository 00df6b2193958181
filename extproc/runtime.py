"""Everything the hot path needs, precomputed once from a ``GatewayConfig``.

Rule matchers, translator factories, credentials and compiled costs are built here at load time, so a
gRPC message handler only does dict lookups and calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tokenvoy.config.model import Backend, BackendRef, GatewayConfig, HeaderMatchType, Route, Rule
from tokenvoy.extproc.costs import CompiledCost, compile_costs
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, Translator
from tokenvoy.render.envoy import endpoint_id

_AUTH_HEADERS = {
    "APIKey": ("authorization", "Bearer {}"),
    "AzureAPIKey": ("api-key", "{}"),
    "AnthropicAPIKey": ("x-api-key", "{}"),
}


class RuntimeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BackendRuntime:
    backend: Backend
    auth_headers: dict[str, str]

    def translator(self, api: ClientAPI) -> Translator | None:
        factory = translator_for(api, self.backend.schema)
        return factory() if factory else None


@dataclass(frozen=True)
class RuleRuntime:
    route: Route
    rule: Rule
    costs: tuple[CompiledCost, ...]
    matchers: tuple[tuple[Callable[[dict[str, str]], bool], ...], ...]

    def matches(self, headers: dict[str, str]) -> bool:
        if not self.matchers:
            return True
        return any(all(check(headers) for check in conjunction) for conjunction in self.matchers)


def _matcher(name: str, value: str, kind: HeaderMatchType) -> Callable[[dict[str, str]], bool]:
    if kind is HeaderMatchType.REGULAR_EXPRESSION:
        pattern = re.compile(value)
        return lambda headers: (v := headers.get(name)) is not None and pattern.fullmatch(v) is not None
    return lambda headers: headers.get(name) == value


class Runtime:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.backends = {name: BackendRuntime(b, _auth_headers(b)) for name, b in config.backends.items()}
        self.rules: list[RuleRuntime] = []
        self.endpoints: dict[str, tuple[BackendRuntime, BackendRef]] = {}
        for route in config.routes:
            costs = compile_costs(route.costs)
            for rule in route.rules:
                matchers = tuple(
                    tuple(_matcher(h.name, h.value, h.type) for h in conjunction) for conjunction in rule.matches
                )
                self.rules.append(RuleRuntime(route, rule, costs, matchers))
                for index, ref in enumerate(rule.backend_refs):
                    self.endpoints[endpoint_id(rule, index)] = (self.backends[ref.backend], ref)
        self.models = config.exact_models()

    def match(self, headers: dict[str, str]) -> RuleRuntime | None:
        for rule in self.rules:
            if rule.matches(headers):
                return rule
        return None


def _auth_headers(backend: Backend) -> dict[str, str]:
    policy = backend.security
    if policy is None or policy.api_key is None:
        return {}
    header, template = _AUTH_HEADERS[policy.type]
    try:
        key = policy.api_key.read()
    except ValueError as exc:
        raise RuntimeConfigError(f"AIServiceBackend/{backend.name}: {exc}") from None
    return {header: template.format(key)}

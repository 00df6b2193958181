"""Everything the hot path needs, precomputed once from a ``GatewayConfig``.

Rule matchers, translator factories, credentials and compiled costs are built here at load time, so a
gRPC message handler only does dict lookups and calls.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from tokenvoy.apis.backend_schemas import CREDENTIAL_KINDS
from tokenvoy.apis.client_apis import FAMILIES, Family
from tokenvoy.config.catalog import BUNDLED_PRICES
from tokenvoy.config.direct import direct_ref_index
from tokenvoy.config.loader import ConfigError
from tokenvoy.config.model import (
    Backend,
    BackendRef,
    BudgetSelectorType,
    GatewayConfig,
    HeaderMatchType,
    ModelAccessRule,
    Route,
    Rule,
)
from tokenvoy.contract import (
    COST_USD_CENTICENTS_KEY,
    COST_USD_KEY,
    COST_USD_MICROS_KEY,
    MODEL_HEADER,
    USD_COST_KEYS,
    endpoint_id,
)
from tokenvoy.extproc.client_keys import api_key_auth_config
from tokenvoy.extproc.costs import CallContext, CompiledCost, CostConfigError, compile_costs
from tokenvoy.extproc.credentials import Signer, build_signer
from tokenvoy.extproc.estimate import route_reservations
from tokenvoy.extproc.mutations import Mutations
from tokenvoy.extproc.mutations import merge as merge_mutations
from tokenvoy.extproc.pricing import PICO_PER_MICRO, PriceBook, centicents, cost_pico, micros
from tokenvoy.extproc.translate import translator_for_backend
from tokenvoy.extproc.translate.base import ClientAPI, Translator
from tokenvoy.extproc.usage import TokenUsage

log = logging.getLogger(__name__)


class RuntimeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BackendRuntime:
    backend: Backend
    auth_headers: dict[str, str]  # API keys: static headers
    signer: Signer | None = None  # cloud credentials: SigV4 or a refreshed token, per attempt

    def translator(self, api: ClientAPI) -> Translator | None:
        factory = translator_for_backend(api, self.backend)
        return factory() if factory else None


@dataclass(frozen=True)
class RuleRuntime:
    route: Route
    rule: Rule
    costs: tuple[CompiledCost, ...]
    matchers: tuple[tuple[Callable[[dict[str, str]], bool], ...], ...]
    prices: PriceBook = field(default_factory=lambda: PriceBook(()))
    usd_budget: bool = False  # a USD budget applies to the route: an unpriced model is refused, never free
    # The endpoint every request of a direct rule reaches (tokenvoy/config/direct.py): the router stream edits
    # the request for it once, and Envoy's direct route skips the upstream filter. None: two streams.
    direct_endpoint: str | None = None

    @property
    def cost_keys(self) -> tuple[str, ...]:
        """Every metadata key a response of this rule carries a cost under (0 on failures)."""
        usd = (*USD_COST_KEYS, COST_USD_KEY) if self.prices else ()
        return (*(cost.metadata_key for cost in self.costs), *usd)

    def cost_values(self, usage: TokenUsage, call: CallContext) -> dict[str, int | float]:
        """The ``llmRequestCosts`` values and, when the model has a price, the USD cost, computed once."""
        values: dict[str, int | float] = {cost.metadata_key: cost.evaluate(usage, call) for cost in self.costs}
        price = None
        if self.prices:
            # before a backend is picked (a reservation's estimate) the model sent may be an override's
            overrides = (ref.model_name_override for ref in self.rule.backend_refs)
            price = self.prices.first(call.response_model, call.model, call.client_model, *overrides)
        if price is not None:
            pico = cost_pico(price, usage)
            micro_usd = micros(pico)
            values[COST_USD_MICROS_KEY] = micro_usd
            values[COST_USD_CENTICENTS_KEY] = centicents(pico)
            values[COST_USD_KEY] = micro_usd / PICO_PER_MICRO
        return values

    def priced(self, model: str) -> bool:
        """Whether a request for ``model`` has a price: its own, or that of a model the rule sends instead."""
        if self.prices.lookup(model) is not None:
            return True
        overrides = [ref.model_name_override for ref in self.rule.backend_refs if ref.model_name_override]
        return bool(overrides) and all(self.prices.lookup(name) is not None for name in overrides)

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
        self.signers = _signers(config)  # one per cloud BackendSecurityPolicy, shared by its backends
        self.backends = {
            name: BackendRuntime(b, _auth_headers(b), self.signers.get(b.security.name) if b.security else None)
            for name, b in config.backends.items()
        }
        self.rules: list[RuleRuntime] = []
        self.endpoints: dict[str, tuple[BackendRuntime, BackendRef]] = {}
        self.mutations: dict[str, Mutations] = {}  # endpoint id -> header/body mutations (absent: none)
        self.prices = PriceBook(config.pricing, BUNDLED_PRICES if config.cost.catalog else ())
        usd_routes = usd_budget_routes(config)
        for route in config.routes:
            costs = compile_costs(route.costs)
            usd = route.name in usd_routes
            for rule in route.rules:
                matchers = tuple(
                    tuple(_matcher(h.name, h.value, h.type) for h in conjunction) for conjunction in rule.matches
                )
                index = direct_ref_index(config, rule)
                direct = endpoint_id(rule, index) if index is not None else None
                self.rules.append(RuleRuntime(route, rule, costs, matchers, self.prices, usd, direct))
                for index, ref in enumerate(rule.backend_refs):
                    self.endpoints[endpoint_id(rule, index)] = (self.backends[ref.backend], ref)
                    if (mutations := merge_mutations(config.backends[ref.backend], ref)) is not None:
                        self.mutations[endpoint_id(rule, index)] = mutations
        self.hostnames = list(dict.fromkeys(name for route in config.routes for name in route.hostnames))
        self._host_rules = {
            host: [r for r in self.rules if not r.route.hostnames or host in r.route.hostnames]
            for host in self.hostnames
        }
        self._any_host_rules = [r for r in self.rules if not r.route.hostnames]
        wildcards = [(name[1:], name) for name in self.hostnames if name.startswith("*.")]  # (".example.com", name)
        self._wildcards = sorted(wildcards, key=lambda item: -len(item[0]))
        self.models = config.exact_models()
        self.named_models = config.named_models()  # metrics label other models `other`
        self.loaded_at = int(time.time())
        self.models_body = models_list_body(config, self.loaded_at)  # GET /v1/models
        self.anthropic_models_body = anthropic_models_body(config, self.loaded_at)  # GET /anthropic/v1/models
        # per virtual host (None: every host): the models and the two lists of the rules it serves
        self._models: dict[str | None, tuple[list[str], bytes, bytes]] = {
            None: (self.models, self.models_body, self.anthropic_models_body)
        }
        if self.hostnames:
            self._models[None] = self._host_models(self._any_host_rules)
            self._models.update({host: self._host_models(self._host_rules[host]) for host in self.hostnames})
        self.reservations = route_reservations(config)  # route name → reservation-mode budgets' estimate keys
        self.identity_headers = identity_headers(config)  # budget selector headers (request.check_identity_headers)
        self.client_keys_config = _client_keys_config(config)  # api_key_auth over ECDS (extproc/ecds.py)
        self.model_access = ModelAccess(config.model_access)
        self._caller_models: dict[tuple[str | None, tuple[ModelAccessRule, ...]], tuple[bytes, bytes]] = {}
        # (model, created, owned_by) per virtual host: the lists of a caller whose modelAccess narrows them
        self._served = {
            host: [
                (model, created, owner)
                for model, (created, owner) in _served_models(
                    config, self.loaded_at, self._host_rule_list(host)
                ).items()
            ]
            for host in self._models
        }
        # GET /v1beta/models (Google's list) per virtual host, and per (host, allowlist) once asked for
        self._gemini_models = {
            host: gemini_models_body(config, self.loaded_at, self._host_rule_list(host)) for host in self._models
        }
        self._caller_gemini_models: dict[tuple[str | None, tuple[ModelAccessRule, ...]], bytes] = {}
        self.cost_header = config.cost.response_header
        self.unpriced = self._unpriced_models()
        if self.unpriced:
            log.warning(
                "no price for model%s %s (TokenvoyConfig spec.pricing, catalog %s): their requests have no USD "
                "cost unless the provider answers with a priced model name%s",
                "" if len(self.unpriced) == 1 else "s",
                ", ".join(self.unpriced),
                "on" if config.cost.catalog else "off",
                "; a route with a USD budget refuses them" if usd_routes else "",
            )

    def _unpriced_models(self) -> list[str]:
        """The models rules name exactly that would have no USD cost (warned about at load)."""
        unpriced = []
        for rule in self.rules:
            for conjunction in rule.rule.matches:
                for match in conjunction:
                    if match.name != MODEL_HEADER or match.type is not HeaderMatchType.EXACT:
                        continue
                    if not rule.priced(match.value) and match.value not in unpriced:
                        unpriced.append(match.value)
        return unpriced

    def _host_rule_list(self, host: str | None) -> list[Rule] | None:
        """The rules the virtual host ``host`` serves (None: every rule, when no route names a hostname)."""
        if not self.hostnames:
            return None
        return [rule.rule for rule in (self._any_host_rules if host is None else self._host_rules[host])]

    def _host_models(self, rules: list[RuleRuntime]) -> tuple[list[str], bytes, bytes]:
        scoped = [rule.rule for rule in rules]
        served = _served_models(self.config, self.loaded_at, scoped)
        return (
            sorted(served),
            models_list_body(self.config, self.loaded_at, scoped),
            anthropic_models_body(self.config, self.loaded_at, scoped),
        )

    def start_credentials(self, timeout: float = 10.0) -> None:
        """Start refreshing cloud tokens and wait (at most ``timeout`` s in all) for each first attempt, so the
        gateway usually serves with tokens in hand. Failures are logged by the signers and retried; requests to
        their backends answer 503 meanwhile. Blocking: call it off the event loop, once extproc serves."""
        for signer in self.signers.values():
            signer.start()
        deadline = time.monotonic() + timeout
        for signer in self.signers.values():
            signer.wait_ready(max(deadline - time.monotonic(), 0.0))

    def stop_credentials(self) -> None:
        for signer in self.signers.values():
            signer.stop()

    def match(self, headers: dict[str, str]) -> RuleRuntime | None:
        """The first rule matching ``headers`` among those Envoy's virtual host for the request's Host serves."""
        for rule in self.rules_for_host(headers.get(":authority", "")) if self.hostnames else self.rules:
            if rule.matches(headers):
                return rule
        return None

    def rules_for_host(self, authority: str) -> list[RuleRuntime]:
        """The rules of the virtual host Envoy picks for ``authority`` (routes without hostnames serve every host)."""
        host = self.virtual_host(authority)
        return self._any_host_rules if host is None else self._host_rules[host]

    def virtual_host(self, authority: str) -> str | None:
        """As Envoy picks a virtual host (render/bootstrap.py): the exact hostname, else the longest ``*.``
        suffix, else None (every host); the port is ignored."""
        if not self.hostnames:
            return None
        host = _host_of(authority)
        if host in self._host_rules:
            return host
        for suffix, name in self._wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return name
        return None

    def models_for(self, authority: str) -> tuple[list[str], bytes, bytes]:
        """The models served to the request's Host (exact names) and its model lists (OpenAI's, Anthropic's)."""
        return self._models[self.virtual_host(authority)]

    def model_lists_for(self, headers: dict[str, str]) -> tuple[bytes, bytes]:
        """``/v1/models`` for this caller: the Host's lists, less the models its ``modelAccess`` rules deny."""
        host = self.virtual_host(headers.get(":authority", ""))
        _, openai_body, anthropic_body = self._models[host]
        rules = self.model_access.rules_for(headers)
        if not rules:
            return openai_body, anthropic_body
        key = (host, rules)
        if key not in self._caller_models:  # one entry per (host, allowlist): a handful
            allowed = self._allowed_served(host, rules)
            self._caller_models[key] = (
                orjson.dumps(FAMILIES[Family.OPENAI].models_document(allowed)),
                orjson.dumps(FAMILIES[Family.ANTHROPIC].models_document(allowed)),
            )
        return self._caller_models[key]

    def _allowed_served(self, host: str | None, rules: tuple[ModelAccessRule, ...]) -> list[tuple[str, int, str]]:
        return [served for served in self._served[host] if any(rule.allows(served[0]) for rule in rules)]

    def gemini_model_list_for(self, headers: dict[str, str]) -> bytes:
        """``GET /v1beta/models`` for this caller: Google's list of the Host's models its ``modelAccess`` allows."""
        host = self.virtual_host(headers.get(":authority", ""))
        rules = self.model_access.rules_for(headers)
        if not rules:
            return self._gemini_models[host]
        key = (host, rules)
        if key not in self._caller_gemini_models:
            document = FAMILIES[Family.GOOGLE].models_document(self._allowed_served(host, rules))
            self._caller_gemini_models[key] = orjson.dumps(document)
        return self._caller_gemini_models[key]

    def gemini_model_for(self, headers: dict[str, str], model: str) -> bytes | None:
        """``GET /v1beta/models/{model}``: the model's entry in this caller's list, None when not in it."""
        wanted = f"models/{model}"
        listed = orjson.loads(self.gemini_model_list_for(headers))["models"]
        return next((orjson.dumps(entry) for entry in listed if entry["name"] == wanted), None)


def _host_of(authority: str) -> str:
    """The host of a ``:authority`` (``Host``) value, lower case, without its port."""
    host = authority.lower()
    if host.startswith("["):  # an IPv6 literal
        return host.split("]", 1)[0] + "]"
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def usd_budget_routes(config: GatewayConfig) -> set[str]:
    """Routes some budget charges in USD (its cost key is one of the price catalog's)."""
    routes: set[str] = set()
    for budget in config.budgets:
        if budget.response_cost_key in USD_COST_KEYS:
            routes.update(budget.routes or (route.name for route in config.routes))
    return routes


class ModelAccess:
    """``TokenvoyConfig`` ``spec.modelAccess``, indexed: header → value → the allowlists that apply."""

    def __init__(self, rules: tuple[ModelAccessRule, ...]) -> None:
        index: dict[str, dict[str, tuple[ModelAccessRule, ...]]] = {}
        for rule in rules:
            by_value = index.setdefault(rule.header, {})
            for value in rule.values:
                by_value[value] = (*by_value.get(value, ()), rule)
        self._index = index

    def __bool__(self) -> bool:
        return bool(self._index)

    def rules_for(self, headers: dict[str, str]) -> tuple[ModelAccessRule, ...]:
        """The allowlists of this caller (empty: every model); a caller several rules name gets their union."""
        found: tuple[ModelAccessRule, ...] = ()
        for header, by_value in self._index.items():
            value = headers.get(header)
            if value is not None and value in by_value:
                found += by_value[value]
        return found

    def denial(self, headers: dict[str, str], model: str) -> str | None:
        """Why ``model`` is refused to this caller, or None when it is allowed."""
        rules = self.rules_for(headers)
        if not rules or any(rule.allows(model) for rule in rules):
            return None
        who = ", ".join(dict.fromkeys(f"{rule.header}: {headers[rule.header]}" for rule in rules))
        allowed = "; ".join(rule.describe() for rule in rules)
        return f"model {model!r} is not allowed for this client ({who}); allowed: {allowed}"


def _client_keys_config(config: GatewayConfig) -> bytes | None:
    """The api_key_auth filter config, keys read now: a missing env variable or file is a startup error."""
    auth = config.client_auth
    if auth is None or auth.api_keys is None:
        return None
    keys = {}
    for credential in auth.api_keys.credentials:
        try:
            key = credential.key.read()
        except ValueError as exc:
            raise RuntimeConfigError(f"{auth.policy}: {exc}") from None
        if not key:
            raise RuntimeConfigError(f"{auth.policy}: {credential.key.origin} is empty")
        keys[credential.client] = key
    return api_key_auth_config(auth.api_keys, keys)


def identity_headers(config: GatewayConfig) -> dict[str, bool]:
    """Every header a budget selects clients by → whether some budget counts per value of it (``Distinct``)."""
    headers: dict[str, bool] = {}
    for budget in config.budgets:
        for selector in budget.selectors:
            distinct = selector.type is BudgetSelectorType.DISTINCT
            headers[selector.header] = headers.get(selector.header, False) or distinct
    return headers


def _served_models(
    config: GatewayConfig, loaded_at: int, rules: list[Rule] | None = None
) -> dict[str, tuple[int, str]]:
    """Every Exact ``x-ai-eg-model`` match, in config order → (created, owned_by): the rule's
    ``modelsCreatedAt`` (else ``loaded_at``) and ``modelsOwnedBy``."""
    models: dict[str, tuple[int, str]] = {}
    for rule in [rule for _, rule in config.rules()] if rules is None else rules:
        created = rule.models_created_at if rule.models_created_at is not None else loaded_at
        for conjunction in rule.matches:
            for match in conjunction:
                if match.name == MODEL_HEADER and match.type is HeaderMatchType.EXACT and match.value not in models:
                    models[match.value] = (created, rule.models_owned_by)
    return models


def _models_body(family: Family, config: GatewayConfig, loaded_at: int, rules: list[Rule] | None) -> bytes:
    served = [(model, created, owner) for model, (created, owner) in _served_models(config, loaded_at, rules).items()]
    return orjson.dumps(FAMILIES[family].models_document(served))


def models_list_body(config: GatewayConfig, loaded_at: int, rules: list[Rule] | None = None) -> bytes:
    """OpenAI's model list (``GET /v1/models``)."""
    return _models_body(Family.OPENAI, config, loaded_at, rules)


def anthropic_models_body(config: GatewayConfig, loaded_at: int, rules: list[Rule] | None = None) -> bytes:
    """Anthropic's model list (``GET /v1/models`` of the Messages API, one page holding every model)."""
    return _models_body(Family.ANTHROPIC, config, loaded_at, rules)


def gemini_models_body(config: GatewayConfig, loaded_at: int, rules: list[Rule] | None = None) -> bytes:
    """Google's model list (``GET /v1beta/models``: ``models.list``, one page holding every model, so no
    ``nextPageToken``). The gateway knows names only: no token limits or versions it would have to invent."""
    return _models_body(Family.GOOGLE, config, loaded_at, rules)


def _signers(config: GatewayConfig) -> dict[str, Signer]:
    """Load every cloud credential now: a missing or malformed one is a startup error naming its policy."""
    signers: dict[str, Signer] = {}
    for backend in config.backends.values():
        policy = backend.security
        if policy is None or policy.name in signers:
            continue
        try:
            signer = build_signer(policy)
        except ValueError as exc:
            raise RuntimeConfigError(f"AIServiceBackend/{backend.name}: {exc}") from None
        if signer is not None:
            signers[policy.name] = signer
    return signers


def _auth_headers(backend: Backend) -> dict[str, str]:
    policy = backend.security
    if policy is None or policy.api_key is None:
        return {}
    kind = CREDENTIAL_KINDS[policy.type]  # an API key kind: it names the header and the value around the key
    try:
        key = policy.api_key.read()
    except ValueError as exc:
        raise RuntimeConfigError(f"AIServiceBackend/{backend.name}: {exc}") from None
    return {kind.header: kind.template.format(key)}


def build_runtime(config: GatewayConfig) -> Runtime:
    """The runtime for ``config``; what only the data plane can check (credentials, CEL costs) is a
    ``ConfigError`` like the loader's, so ``tokenvoy run`` refuses it at start and at a reload the same way."""
    try:
        return Runtime(config)
    except (RuntimeConfigError, CostConfigError) as exc:
        raise ConfigError([str(exc)]) from None

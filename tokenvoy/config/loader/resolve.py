"""Cross-resource resolution: the kinds read in dependency order (Secrets and Backends first, routes
then budgets) into one ``GatewayConfig``, or a ``ConfigError`` listing every problem found."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tokenvoy.config.loader.ai_gateway_route import read_routes
from tokenvoy.config.loader.ai_service_backend import read_backends
from tokenvoy.config.loader.backend import check_envoy_backends, envoy_endpoint
from tokenvoy.config.loader.backend_security_policy import read_security_policies
from tokenvoy.config.loader.backend_tls_policy import read_tls_validations
from tokenvoy.config.loader.budgets import read_budgets
from tokenvoy.config.loader.cursor import ConfigError, Problems, Resource
from tokenvoy.config.loader.documents import REFERENCED_KINDS, index_resources, parse_yaml, read_files
from tokenvoy.config.loader.gateway import read_listener
from tokenvoy.config.loader.retries import apply_retries
from tokenvoy.config.loader.security_policy import read_client_auth
from tokenvoy.config.loader.tokenvoy_config import (
    read_anthropic_betas,
    read_cost_settings,
    read_model_access,
    read_settings,
    read_tracing_settings,
    with_anthropic_betas,
)
from tokenvoy.config.model import (
    Endpoint,
    GatewayConfig,
)


def load_config(paths: Iterable[str | os.PathLike[str]]) -> GatewayConfig:
    """Read one or more multi-document YAML files of gateway resources."""
    problems = Problems()
    sources = [str(path) for path in paths]
    documents = read_files(sources, problems)
    config = load_documents(documents, problems)
    return GatewayConfig(
        listener=config.listener,
        routes=config.routes,
        backends=config.backends,
        budgets=config.budgets,
        sources=tuple(sources),
        ignored=config.ignored,
        metrics=config.metrics,
        pricing=config.pricing,
        cost=config.cost,
        tracing=config.tracing,
        client_auth=config.client_auth,
        model_access=config.model_access,
    )


def load_text(text: str, source: str = "<config>") -> GatewayConfig:
    """The gateway config of one YAML text; ``source`` names it in the problems reported."""
    problems = Problems()
    documents = [(source, doc) for doc in parse_yaml(source, text, problems)]
    return load_documents(documents, problems)


def load_documents(documents: list[tuple[str, Any]], problems: Problems | None = None) -> GatewayConfig:
    """Resolve parsed ``(source, document)`` pairs into a ``GatewayConfig``; ConfigError lists every problem."""
    problems = problems or Problems()
    resources, ignored = index_resources(documents, problems)

    def of_kind(kind: str) -> dict[str, Resource]:
        return resources.get(kind, {})

    # What the others refer to first: Secrets, ConfigMaps, Backends and how their certificates are verified.
    secrets, config_maps, envoy_backends = of_kind("Secret"), of_kind("ConfigMap"), of_kind("Backend")
    check_envoy_backends(envoy_backends, problems)
    tls, used_config_maps = read_tls_validations(
        of_kind("BackendTLSPolicy"), envoy_backends, config_maps, secrets, problems
    )

    def jwks_backend(name: str) -> Endpoint | None:
        backend = envoy_backends.get(name)
        return None if backend is None else envoy_endpoint(backend, tls.get(name), problems)

    client_auth = read_client_auth(
        of_kind("SecurityPolicy"),
        secrets,
        config_maps,
        jwks_backend,
        set(of_kind("AIGatewayRoute")),
        set(of_kind("Gateway")),
        used_config_maps,
        problems,
    )
    ignored += [
        f"{resource.ref} ({resource.source}): ignored, {REFERENCED_KINDS[resource.kind]}"
        for resource in config_maps.values()
        if resource.name not in used_config_maps
    ]
    # Then backends (with their credentials), routes (to backends), and what targets routes.
    policies = read_security_policies(of_kind("BackendSecurityPolicy"), secrets, problems)
    backends = read_backends(of_kind("AIServiceBackend"), envoy_backends, policies, problems, tls=tls)
    routes = read_routes(of_kind("AIGatewayRoute"), backends, problems, ignored)
    route_names = {route.name for route in routes}
    budgets = read_budgets(of_kind("BackendTrafficPolicy"), route_names, set(of_kind("Gateway")), problems)
    routes = apply_retries(of_kind("BackendTrafficPolicy"), routes, problems)
    listener = read_listener(of_kind("Gateway"), problems)
    settings = of_kind("TokenvoyConfig")
    metrics, pricing = read_settings(settings, problems)
    tracing = read_tracing_settings(settings, problems)
    backends = with_anthropic_betas(backends, read_anthropic_betas(settings, problems))
    cost = read_cost_settings(settings, problems)
    model_access = read_model_access(settings, client_auth, problems)
    if not routes and not problems.items:
        problems.items.append("no AIGatewayRoute found: the gateway would answer 404 to every request")
    if problems.items:
        raise ConfigError(problems.items)
    return GatewayConfig(
        listener=listener,
        routes=tuple(routes),
        backends=backends,
        budgets=tuple(budgets),
        ignored=tuple(ignored),
        metrics=metrics,
        pricing=pricing,
        cost=cost,
        tracing=tracing,
        client_auth=client_auth,
        model_access=model_access,
    )

"""How a Backend's certificate is verified: Gateway API ``BackendTLSPolicy`` and the Envoy Gateway
Backend's own ``spec.tls`` (CA bundles from ConfigMaps or Secrets)."""

from __future__ import annotations

from typing import Any

from tokenvoy.config.loader.backend import endpoint_host
from tokenvoy.config.loader.cursor import Problems, Resource, _check_fields, _list, _mapping, _string, _unsupported
from tokenvoy.config.loader.secrets import secret_value
from tokenvoy.config.model import (
    TLSValidation,
)

_TLS_POLICY_FIELDS = {"targetRefs", "validation", "options"}
_TLS_VALIDATION_FIELDS = {"caCertificateRefs", "hostname", "subjectAltNames", "wellKnownCACertificates"}
_BACKEND_TLS_FIELDS = {
    "sni",
    "caCertificateRefs",
    "wellKnownCACertificates",
    "insecureSkipVerify",
    "alpnProtocols",
    "autoSNIFromEndpointHostname",
    "ciphers",
    "clientCertificateRef",
    "ecdhCurves",
    "fingerprints",
    "maxVersion",
    "minVersion",
    "signatureAlgorithms",
}
_BACKEND_TLS_UNSUPPORTED = {
    "insecureSkipVerify": "tokenvoy always verifies provider certificates; trust a private CA with caCertificateRefs",
    "clientCertificateRef": "client certificates (mTLS) to providers are not supported yet",
    "fingerprints": "certificate pinning is not supported yet",
    "ciphers": "tokenvoy uses Envoy's default cipher suites",
    "ecdhCurves": "tokenvoy uses Envoy's default curves",
    "signatureAlgorithms": "tokenvoy uses Envoy's default signature algorithms",
    "minVersion": "tokenvoy uses Envoy's default (TLS 1.2 and up)",
    "maxVersion": "tokenvoy uses Envoy's default (TLS 1.2 and up)",
    "alpnProtocols": "tokenvoy speaks HTTP/1.1 to providers",
}


def _tls_validations(
    policies: dict[str, Resource],
    envoy_backends: dict[str, Resource],
    config_maps: dict[str, Resource],
    secrets: dict[str, Resource],
    problems: Problems,
) -> tuple[dict[str, TLSValidation], set[str]]:
    """Backend name → how its certificate is verified, from ``BackendTLSPolicy`` (Gateway API) and the
    Envoy Gateway Backend's own ``spec.tls``; also the ConfigMaps they read (the others are ignored)."""
    validations: dict[str, TLSValidation] = {}
    used: set[str] = set()
    for resource in envoy_backends.values():
        spec = _mapping(resource, resource.spec.get("tls"), "spec.tls", problems)
        if not spec or not _check_fields(resource, spec, "spec.tls", _BACKEND_TLS_FIELDS, problems):
            continue
        _unsupported(resource, spec, "spec.tls", _BACKEND_TLS_UNSUPPORTED, problems)
        host = endpoint_host(resource)
        sni = _string(resource, spec.get("sni"), "spec.tls.sni", problems, required=False) or host
        if sni is None:
            continue
        ca = _ca_bundle(resource, spec, "spec.tls", config_maps, secrets, used, problems)
        if ca is not None or sni != host:  # else the defaults: SNI and verified name are the host, system CAs
            validations[resource.name] = TLSValidation(sni, ca, (), resource.ref)
    for resource in policies.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _TLS_POLICY_FIELDS, problems):
            continue
        _unsupported(resource, spec, "spec", {"options": "TLS options are not supported"}, problems)
        validation = _mapping(resource, spec.get("validation"), "spec.validation", problems)
        if not _check_fields(resource, validation, "spec.validation", _TLS_VALIDATION_FIELDS, problems):
            continue
        hostname = _string(resource, validation.get("hostname"), "spec.validation.hostname", problems)
        names = []
        for index, item in enumerate(
            _list(resource, validation.get("subjectAltNames"), "spec.validation.subjectAltNames", problems)
        ):
            path = f"spec.validation.subjectAltNames[{index}]"
            item = _mapping(resource, item, path, problems)
            if item.get("type", "Hostname") != "Hostname":
                problems.add(resource, f"{path}.type", f"{item.get('type')!r} is not supported (only Hostname)")
                continue
            if (name := _string(resource, item.get("hostname"), f"{path}.hostname", problems)) is not None:
                names.append(name)
        ca = _ca_bundle(resource, validation, "spec.validation", config_maps, secrets, used, problems)
        if hostname is None:
            continue
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems)):
            path = f"spec.targetRefs[{index}]"
            target = _mapping(resource, target, path, problems)
            _unsupported(resource, target, path, {"sectionName": "a policy applies to the whole Backend"}, problems)
            name = _string(resource, target.get("name"), f"{path}.name", problems)
            if name is None:
                continue
            if target.get("kind", "Backend") != "Backend" or name not in envoy_backends:
                problems.add(resource, path, f"{target.get('kind', 'Backend')}/{name} is not a Backend of this config")
                continue
            validations[name] = TLSValidation(hostname, ca, tuple(names), resource.ref)
    return validations, used


def _ca_bundle(
    resource: Resource,
    spec: dict[str, Any],
    path: str,
    config_maps: dict[str, Resource],
    secrets: dict[str, Resource],
    used: set[str],
    problems: Problems,
) -> str | None:
    """The PEM of ``caCertificateRefs`` (ConfigMap or Secret key ``ca.crt``); None = the system bundle."""
    well_known = spec.get("wellKnownCACertificates")
    if well_known not in (None, "System"):
        problems.add(resource, f"{path}.wellKnownCACertificates", f"must be System, got {well_known!r}")
    refs = _list(resource, spec.get("caCertificateRefs"), f"{path}.caCertificateRefs", problems)
    if refs and well_known is not None:
        problems.add(resource, path, "set caCertificateRefs or wellKnownCACertificates, not both")
    bundles = []
    for index, ref in enumerate(refs):
        ref_path = f"{path}.caCertificateRefs[{index}]"
        ref = _mapping(resource, ref, ref_path, problems)
        kind = ref.get("kind", "ConfigMap")
        name = _string(resource, ref.get("name"), f"{ref_path}.name", problems)
        if name is None:
            continue
        source = (config_maps if kind == "ConfigMap" else secrets if kind == "Secret" else {}).get(name)
        if source is None:
            problems.add(resource, f"{ref_path}.name", f"{kind}/{name} does not exist")
            continue
        if kind == "ConfigMap":
            used.add(name)
            data = _mapping(source, source.raw.get("data"), "data", problems)
            pem = data.get("ca.crt")
        else:
            secret = secret_value(source, "ca.crt", problems)
            try:
                pem = secret.read() if secret is not None else None
            except ValueError as exc:
                problems.add(source, "data.ca.crt", str(exc))
                continue
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
            problems.add(source, "data.ca.crt", "must hold a PEM certificate bundle (-----BEGIN CERTIFICATE-----)")
            continue
        bundles.append(pem.strip() + "\n")
    return "".join(bundles) or None

"""How a Backend's certificate is verified: Gateway API ``BackendTLSPolicy`` and the Envoy Gateway
Backend's own ``spec.tls`` (CA bundles from ConfigMaps or Secrets)."""

from __future__ import annotations

from tokenvoy.config.loader.backend import endpoint_host
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.inert import SYSTEM_CAS
from tokenvoy.config.loader.secrets import secret_value
from tokenvoy.config.model import (
    TLSValidation,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    "spec.targetRefs[].group": "the target is an Envoy Gateway Backend of this config (its kind is checked)",
    "spec.validation.wellKnownCACertificates": SYSTEM_CAS,
}

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


def read_tls_validations(
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
        tls = Cursor.spec(resource, problems)["tls"]
        if not tls.mapping(_BACKEND_TLS_FIELDS):
            continue
        tls.unsupported(_BACKEND_TLS_UNSUPPORTED)
        host = endpoint_host(resource)
        sni = tls["sni"].string(required=False) or host
        if sni is None:
            continue
        ca = _ca_bundle(tls, config_maps, secrets, used)
        if ca is not None or sni != host:  # else the defaults: SNI and verified name are the host, system CAs
            validations[resource.name] = TLSValidation(sni, ca, (), resource.ref)
    for resource in policies.values():
        spec = Cursor.spec(resource, problems)
        if not spec.fields(_TLS_POLICY_FIELDS):
            continue
        spec.unsupported({"options": "TLS options are not supported"})
        validation = spec["validation"]
        validation.mapping(_TLS_VALIDATION_FIELDS)
        hostname = validation["hostname"].string()
        names = []
        for item in validation["subjectAltNames"].items():
            item.mapping()
            if item.get("type", "Hostname") != "Hostname":
                item["type"].report(f"{item.get('type')!r} is not supported (only Hostname)")
                continue
            if (name := item["hostname"].string()) is not None:
                names.append(name)
        ca = _ca_bundle(validation, config_maps, secrets, used)
        if hostname is None:
            continue
        for target in spec["targetRefs"].items():
            target.mapping()
            target.unsupported({"sectionName": "a policy applies to the whole Backend"})
            name = target["name"].string()
            if name is None:
                continue
            if target.get("kind", "Backend") != "Backend" or name not in envoy_backends:
                target.report(f"{target.get('kind', 'Backend')}/{name} is not a Backend of this config")
                continue
            validations[name] = TLSValidation(hostname, ca, tuple(names), resource.ref)
    return validations, used


def _ca_bundle(
    spec: Cursor, config_maps: dict[str, Resource], secrets: dict[str, Resource], used: set[str]
) -> str | None:
    """The PEM of ``caCertificateRefs`` (ConfigMap or Secret key ``ca.crt``); None = the system bundle."""
    well_known = spec.get("wellKnownCACertificates")
    if well_known not in (None, "System"):
        spec["wellKnownCACertificates"].report(f"must be System, got {well_known!r}")
    refs = spec["caCertificateRefs"].items()
    if refs and well_known is not None:
        spec.report("set caCertificateRefs or wellKnownCACertificates, not both")
    bundles = []
    for ref in refs:
        ref.mapping()
        kind = ref.get("kind", "ConfigMap")
        name = ref["name"].string()
        if name is None:
            continue
        source = (config_maps if kind == "ConfigMap" else secrets if kind == "Secret" else {}).get(name)
        if source is None:
            ref["name"].report(f"{kind}/{name} does not exist")
            continue
        data = Cursor.root(source, spec.problems)["data"]
        pem_field = data["ca.crt"]
        if kind == "ConfigMap":
            used.add(name)
            pem = data.mapping().get("ca.crt")
        else:
            secret = secret_value(source, "ca.crt", spec.problems)
            try:
                pem = secret.read() if secret is not None else None
            except ValueError as exc:
                pem_field.report(str(exc))
                continue
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
            pem_field.report("must hold a PEM certificate bundle (-----BEGIN CERTIFICATE-----)")
            continue
        bundles.append(pem.strip() + "\n")
    return "".join(bundles) or None

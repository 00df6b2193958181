"""Envoy Gateway's rate limit configuration (``RateLimitConfig`` protos) turned into tokenvoy's lookup tree.

Envoy Gateway (EG) serves its ratelimit deployment one ``ratelimit.config.ratelimit.v3.RateLimitConfig`` per
domain over ADS. Each proto is turned into the document a rate limit YAML file decodes to and handed to
:func:`ratelimit.config.parse_domain_document`, so a config that arrives over xDS is validated exactly like a
file (same errors, same tree). The mapping is envoyproxy/ratelimit's own (``ConfigXdsProtoToYaml``): empty
strings and zero numbers are proto3's "unset", ``unit`` is the enum's name.

EG also writes these protos out as YAML (its golden test files, ``egctl`` output): :func:`protos_from_eg_yaml`
reads that form back into protos, so both shapes of one config can be compared.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from google.protobuf import json_format

from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2

from .config import DomainConfig, RateLimitConfig, RateLimitConfigError, parse_domain_document

__all__ = [
    "RATE_LIMIT_CONFIG_TYPE_URL",
    "config_from_eg_yaml",
    "config_from_protos",
    "document_from_proto",
    "domain_from_proto",
    "protos_from_eg_yaml",
]

RATE_LIMIT_CONFIG_TYPE_URL = "type.googleapis.com/" + rls_conf_pb2.RateLimitConfig.DESCRIPTOR.full_name

_UNIT_NAMES = {number: name for name, number in rls_conf_pb2.RateLimitUnit.items()}


def document_from_proto(config: rls_conf_pb2.RateLimitConfig) -> dict[str, Any]:
    """The rate limit YAML document (decoded) that says what ``config`` says."""
    return {"domain": config.domain, "descriptors": [_descriptor_document(d) for d in config.descriptors]}


def _descriptor_document(descriptor: rls_conf_pb2.RateLimitDescriptor) -> dict[str, Any]:
    document: dict[str, Any] = {
        "key": descriptor.key,
        "value": descriptor.value or None,
        "rate_limit": _policy_document(descriptor.rate_limit) if descriptor.HasField("rate_limit") else None,
        "descriptors": [_descriptor_document(d) for d in descriptor.descriptors],
        "shadow_mode": descriptor.shadow_mode,
        "detailed_metric": descriptor.detailed_metric,
        "quota_mode": descriptor.quota_mode,
    }
    if descriptor.HasField("metadata"):
        document["metadata"] = json_format.MessageToDict(descriptor.metadata)
    return document


def _policy_document(policy: rls_conf_pb2.RateLimitPolicy) -> dict[str, Any]:
    document: dict[str, Any] = {
        "unlimited": policy.unlimited,
        "name": policy.name,
        "replaces": [{"name": r.name} for r in policy.replaces],
    }
    # proto3 cannot tell "unset" from 0: an unlimited policy has neither, a limited one needs a unit.
    if policy.unit != rls_conf_pb2.UNKNOWN:
        document["unit"] = _UNIT_NAMES.get(policy.unit, str(policy.unit))
    if not policy.unlimited or policy.requests_per_unit:
        document["requests_per_unit"] = policy.requests_per_unit
    return document


def domain_from_proto(config: rls_conf_pb2.RateLimitConfig, source: str) -> DomainConfig:
    """One domain; ``source`` names where it came from in errors (e.g. ``xDS resource "first-listener"``)."""
    return parse_domain_document(document_from_proto(config), source)


def config_from_protos(configs: Iterable[rls_conf_pb2.RateLimitConfig], source: str = "xDS") -> RateLimitConfig:
    """The whole tree from the ``RateLimitConfig`` resources of one xDS response (one domain each).

    Raises :class:`RateLimitConfigError` naming the resource, domain and descriptor path of the first problem.
    """
    return RateLimitConfig(domain_from_proto(c, f'{source} resource "{c.name or c.domain}"') for c in configs)


# --------------------------------------------------------------------------------------------------------
# EG's YAML form of the protos

_ROOT_FIELDS = ("name", "domain", "descriptors")
_DESCRIPTOR_FIELDS = ("key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "quota_mode")
_DESCRIPTOR_YAML_ONLY = ("value_to_metric", "share_threshold")  # in upstream's YAML struct, not in the proto
_POLICY_FIELDS = ("requests_per_unit", "unit", "unlimited", "name", "replaces")


def protos_from_eg_yaml(text: str, source: str = "<yaml>") -> list[rls_conf_pb2.RateLimitConfig]:
    """Read EG's YAML dump of its ``RateLimitConfig`` protos (documents separated by ``---``) back into protos."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RateLimitConfigError(f"{source}: invalid YAML: {exc}") from None
    return [_config_proto(doc, f"{source} document {i}") for i, doc in enumerate(documents, start=1)]


def config_from_eg_yaml(text: str, source: str = "<yaml>") -> RateLimitConfig:
    """:func:`config_from_protos` of :func:`protos_from_eg_yaml`: the tree EG's ADS would load for this dump."""
    return config_from_protos(protos_from_eg_yaml(text, source), source)


def _mapping(value: Any, allowed: Iterable[str], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RateLimitConfigError(f"{where}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RateLimitConfigError(f"{where}: {unknown[0]!r} is not a RateLimitConfig field")
    return value


def _config_proto(doc: Any, where: str) -> rls_conf_pb2.RateLimitConfig:
    doc = _mapping(doc, _ROOT_FIELDS, where)
    return rls_conf_pb2.RateLimitConfig(
        name=str(doc.get("name") or ""),
        domain=str(doc.get("domain") or ""),
        descriptors=[_descriptor_proto(d, where) for d in doc.get("descriptors") or ()],
    )


def _descriptor_proto(doc: Any, where: str) -> rls_conf_pb2.RateLimitDescriptor:
    doc = _mapping(doc, (*_DESCRIPTOR_FIELDS, *_DESCRIPTOR_YAML_ONLY, "metadata"), where)
    where = f"{where} > {doc.get('key')}"
    for flag in _DESCRIPTOR_YAML_ONLY:
        if doc.get(flag):
            raise RateLimitConfigError(f"{where}: {flag} cannot be sent over xDS (RateLimitConfig has no such field)")
    descriptor = rls_conf_pb2.RateLimitDescriptor(
        key=str(doc.get("key") or ""),
        value=str(doc.get("value") or ""),
        descriptors=[_descriptor_proto(d, where) for d in doc.get("descriptors") or ()],
        shadow_mode=bool(doc.get("shadow_mode")),
        detailed_metric=bool(doc.get("detailed_metric")),
        quota_mode=bool(doc.get("quota_mode")),
    )
    if doc.get("metadata"):
        json_format.ParseDict(doc["metadata"], descriptor.metadata)
    if doc.get("rate_limit") is not None:
        policy = _mapping(doc["rate_limit"], _POLICY_FIELDS, f"{where} rate_limit")
        unit = str(policy.get("unit") or "UNKNOWN").upper()
        if unit not in _UNIT_NAMES.values():
            raise RateLimitConfigError(f"{where}: rate_limit unit {policy.get('unit')!r} is not a RateLimitUnit")
        descriptor.rate_limit.CopyFrom(
            rls_conf_pb2.RateLimitPolicy(
                unit=rls_conf_pb2.RateLimitUnit.Value(unit),
                requests_per_unit=int(policy.get("requests_per_unit") or 0),
                unlimited=bool(policy.get("unlimited")),
                name=str(policy.get("name") or ""),
                replaces=[rls_conf_pb2.RateLimitReplace(name=str(r["name"])) for r in policy.get("replaces") or ()],
            )
        )
    return descriptor

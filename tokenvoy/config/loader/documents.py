"""Reading YAML documents into resources: which kinds are read, which are ignored (and why), and the
position-only description of YAML that does not parse (PyYAML's own text may quote a secret)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tokenvoy.config.loader.cursor import ConfigError, Problems, Resource

try:  # the C loader is ~10x faster on large multi-document files
    _YamlLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _YamlLoader = yaml.SafeLoader


IGNORED_KINDS = {
    "GatewayClass": "a standalone gateway has no controller to select",
    "EnvoyProxy": "tokenvoy renders its own Envoy bootstrap",
    "Namespace": "namespaces only scope names here",
    "ClientTrafficPolicy": "tokenvoy sets its own listener options",
}

# Read only when a BackendTLSPolicy or a Backend's `spec.tls` names them (CA bundles); else reported ignored.
REFERENCED_KINDS = {"ConfigMap": "not referenced by a BackendTLSPolicy or a Backend's tls"}


def parse_documents(source: str, text: str) -> list[tuple[str, Any]]:
    """(source, document) for each YAML document of ``text``; ConfigError on YAML that does not parse."""
    problems = Problems()
    documents = [(source, doc) for doc in parse_yaml(source, text, problems)]
    if problems.items:
        raise ConfigError(problems.items)
    return documents


def parse_yaml(source: str, text: str, problems: Problems) -> list[Any]:
    """The documents of ``text`` (empty ones skipped); YAML that does not parse is one problem, by position."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=_YamlLoader) if doc is not None]
    except yaml.YAMLError as exc:
        problems.items.append(f"{source}: {_describe_yaml_error(exc)}")
        return []


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """Position and problem only: PyYAML's own text can quote the offending line, which may hold a secret."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "cannot parse"
        return f"invalid YAML{where}: {problem}"
    return "invalid YAML"


_KNOWN_KINDS = (
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "BackendTLSPolicy",
    "ConfigMap",
    "Secret",
    "BackendTrafficPolicy",
    "Gateway",
    "SecurityPolicy",
    "TokenvoyConfig",
)


def read_files(sources: list[str], problems: Problems) -> list[tuple[str, Any]]:
    """(source, document) for each document of each file; a file that cannot be read is a problem."""
    documents: list[tuple[str, Any]] = []
    for source in sources:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            problems.items.append(f"{source}: cannot read: {exc.strerror}")
            continue
        documents.extend((source, doc) for doc in parse_yaml(source, text, problems))
    return documents


def index_resources(
    documents: list[tuple[str, Any]], problems: Problems
) -> tuple[dict[str, dict[str, Resource]], list[str]]:
    """Resources by kind and name (each name once per kind), and the documents ignored with their reason."""
    resources: dict[str, dict[str, Resource]] = {}
    ignored: list[str] = []
    for source, doc in documents:
        if not isinstance(doc, dict) or "kind" not in doc:
            problems.items.append(f"{source}: a document without `kind` (every document must be a resource)")
            continue
        kind = str(doc["kind"])
        metadata = doc.get("metadata") or {}
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if not isinstance(name, str) or not name:
            problems.items.append(f"{source}: {kind}: metadata.name: required")
            continue
        spec = doc.get("spec")
        resource = Resource(kind, name, {} if spec is None else spec, metadata, source, doc)
        if kind in IGNORED_KINDS:
            ignored.append(f"{resource.ref} ({source}): ignored, {IGNORED_KINDS[kind]}")
            continue
        if kind not in _KNOWN_KINDS:
            problems.add(resource, "kind", f"unsupported kind {kind!r} (supported: {', '.join(_KNOWN_KINDS)})")
            continue
        if not isinstance(resource.spec, dict):
            problems.add(resource, "spec", f"must be a mapping, got {type(resource.spec).__name__}")
            continue
        by_name = resources.setdefault(kind, {})
        if name in by_name:
            problems.add(resource, "metadata.name", f"duplicate, also defined in {by_name[name].source}")
            continue
        by_name[name] = resource
    return resources, ignored

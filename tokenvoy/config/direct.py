"""Which rules take the direct route: one ext_proc stream per request instead of two.

A rule's requests normally cross two ext_proc streams: the router's (parse, pick the rule, read the answer)
and, per attempt, the upstream filter's (translate and sign for the backend the attempt reached). The
second is needed only when attempts differ. A rule whose traffic all goes to one backend (one backendRef
with a weight, so every attempt, retries included, reaches the same provider) and whose credential is a
static API key header (or none) gets the same edit on every attempt: the router stream makes it once,
with the request body, and Envoy adds the key itself (``credential_injector`` reading an SDS secret file),
so the cluster needs no upstream ext_proc filter. Translation, a model override and mutations stay: the
router applies them. A rule that splits or falls back across backends, or signs (AWS SigV4, GCP and Azure
tokens, fresh per request), keeps the upstream filter, so cross-provider fallback still works.

Pure: the renderer and extproc take the same decision from the same config (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenvoy.apis.backend_schemas import API_KEY_KINDS, CREDENTIAL_KINDS
from tokenvoy.apis.client_apis import FAMILIES
from tokenvoy.config.model import Backend, GatewayConfig, Rule

# Headers that carry a provider credential: those the gateway sets (API key kinds) and those clients send
# (their API family's), from the catalogs. When the gateway holds a backend's key, none of the client's go
# out with it: the upstream filter removes them per attempt, a direct route (render/direct.py) at the router.
CLIENT_CREDENTIAL_HEADERS = tuple(
    dict.fromkeys([*(kind.header for kind in API_KEY_KINDS), *(family.key_header for family in FAMILIES.values())])
)
# The environment variable that turns direct routes off (`tokenvoy run`): every rule keeps two streams.
NO_DIRECT_ENV = "TOKENVOY_NO_DIRECT"


@dataclass(frozen=True, slots=True)
class DirectCredential:
    """How Envoy's ``credential_injector`` sends a backend's API key: ``header: prefix + key``."""

    header: str
    prefix: str
    secret_name: str  # the SDS secret (and its file's stem) holding the key


def direct_ref_index(config: GatewayConfig, rule: Rule) -> int | None:
    """The index of the one backendRef every request of ``rule`` reaches, if the rule can go direct; else None."""
    weighted = [index for index, ref in enumerate(rule.backend_refs) if ref.weight != 0]
    if len(weighted) != 1:
        return None  # a split or a fallback: each attempt may need its own edit
    backend = config.backends.get(rule.backend_refs[weighted[0]].backend)
    if backend is None:
        return None
    policy = backend.security
    if policy is not None and (policy.api_key is None or CREDENTIAL_KINDS[policy.type].header is None):
        return None  # signed per request (a cloud credential): the upstream filter signs each attempt
    return weighted[0]


def direct_backend(config: GatewayConfig, rule: Rule) -> Backend | None:
    """The backend of a direct rule (see :func:`direct_ref_index`), or None."""
    index = direct_ref_index(config, rule)
    return None if index is None else config.backends[rule.backend_refs[index].backend]


def direct_credential(backend: Backend) -> DirectCredential | None:
    """The header Envoy injects for ``backend``'s API key, or None (no policy: nothing to inject)."""
    policy = backend.security
    if policy is None or policy.api_key is None:
        return None
    kind = CREDENTIAL_KINDS[policy.type]
    if kind.header is None or not kind.template.endswith("{}"):
        raise ValueError(f"{policy.ref}: {policy.type} is not a static header an injector can add")
    return DirectCredential(kind.header, kind.template[:-2], secret_name(backend.name))


def secret_name(backend: str) -> str:
    """The SDS secret of a backend's key; also its file's stem (backend names are Kubernetes names)."""
    return f"tokenvoy-key-{backend}"


SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def secret_file(secrets_dir: str, secret_name: str) -> Path:
    """Where ``tokenvoy run`` writes one key as an SDS file and Envoy reads it (re-read when it is replaced)."""
    return Path(secrets_dir) / f"{secret_name}.yaml"


def secret_document(secret_name: str, key: str) -> dict:
    """The SDS file of one key: a DiscoveryResponse-like list with one generic secret (Envoy 1.40's format)."""
    return {
        "resources": [{"@type": SECRET_TYPE, "name": secret_name, "generic_secret": {"secret": {"inline_string": key}}}]
    }


def direct_backends(config: GatewayConfig) -> dict[str, Backend]:
    """Every backend some direct rule reaches, by name: the keys ``tokenvoy run`` writes as secret files."""
    found: dict[str, Backend] = {}
    for _, rule in config.rules():
        backend = direct_backend(config, rule)
        if backend is not None:
            found[backend.name] = backend
    return found

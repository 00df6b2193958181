"""``tokenvoy render --target envoy-gateway``: read the config files, write the EG manifests."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, parse_documents
from tokenvoy.render.envoy_gateway import GatewayOptions, Manifests, render_envoy_gateway
from tokenvoy.render.files import replace_file


def read_documents(paths: list[str]) -> list[tuple[str, Any]]:
    """(source, document) for each file, or the embedded default config without files."""
    if not paths:
        return parse_documents("<default>", default_config_yaml())
    documents: list[tuple[str, Any]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        documents += parse_documents(path, text)
    return documents


def write_manifests(manifests: Manifests, out: Path) -> list[Path]:
    """Every file of ``manifests`` into ``out``; files a previous render left that this one has not are removed
    (a resource dropped from the config must not stay in the directory `kubectl apply` reads)."""
    texts = manifests.texts()
    out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out.glob("*.yaml")):
        if stale.name not in texts:
            stale.unlink()
    written = []
    for name, text in texts.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text)
        written.append(path)
    return written


def render_to_directory(
    paths: list[str],
    out: Path,
    *,
    namespace: str | None,
    image: str | None,
    redis_url: str | None,
    gateway: str | None = None,
    mode: str = "native",
    proxy_namespace: str = "envoy-gateway-system",
    extension_tls_secret: str | None = None,
    eg_ratelimit: str = "eg",
) -> int:
    options = GatewayOptions(
        mode=mode, proxy_namespace=proxy_namespace, extension_tls_secret=extension_tls_secret, eg_ratelimit=eg_ratelimit
    )
    options = replace(options, namespace=namespace or options.namespace)
    options = replace(options, image=image or options.image, redis_url=redis_url or options.redis_url, gateway=gateway)
    try:
        manifests = render_envoy_gateway(read_documents(paths), options)
    except ConfigError as exc:
        print(f"tokenvoy render: cannot render for Envoy Gateway:\n{exc}", file=sys.stderr)
        return 2
    for path in write_manifests(manifests, out):
        print(path)
    return 0

"""The API keys of direct rules as SDS files Envoy reads (tokenvoy/config/direct.py).

A direct rule's key is injected by Envoy itself, so ``tokenvoy run`` hands it over the one way that keeps
it out of every rendered file, Envoy's command line, environment and ``/config_dump``: a file-based SDS
secret in ``<run dir>/secrets`` (directory 0700, files 0600, replaced atomically so Envoy re-reads a
rotated key). The directory is removed when ``tokenvoy run`` stops.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tokenvoy.config.direct import direct_backends, direct_credential, secret_document, secret_file
from tokenvoy.config.model import GatewayConfig


def write_direct_secrets(config: GatewayConfig, secrets_dir: Path) -> list[Path]:
    """One SDS file per direct backend with a key; returns the files written. Reads the keys (``Secret.read``)."""
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)  # an existing directory too
    written = []
    for backend in direct_backends(config).values():
        credential = direct_credential(backend)
        if credential is None or backend.security is None or backend.security.api_key is None:
            continue
        key = backend.security.api_key.read()
        path = secret_file(str(secrets_dir), credential.secret_name)
        _write_private(path, json.dumps(secret_document(credential.secret_name, key)))
        written.append(path)
    return written


def _write_private(path: Path, text: str) -> None:
    """Owner-only from its first byte, then renamed over the old file (Envoy watches the directory for moves)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def remove_secrets(secrets_dir: Path) -> None:
    shutil.rmtree(secrets_dir, ignore_errors=True)

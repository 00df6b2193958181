"""The options and render-side names of the Envoy config (``tokenvoy render``, ``tokenvoy run``).

The config itself is built from envoy-data-plane's typed messages in ``tokenvoy/render/bootstrap.py``;
the names Envoy and the services must agree on live in ``tokenvoy/contract.py``. This module stays light
(no envoy-data-plane): the CLI and the runner read the options without paying for the typed messages.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from tokenvoy.config.model import Rule

ROUTE_CONFIG_NAME = "tokenvoy"


@dataclass(frozen=True)
class EnvoyOptions:
    extproc_address: str  # "unix:/path" or "host:port"
    ratelimit_address: str
    admin_port: int = 9901
    # Envoy's admin on this Unix socket (mode 0600) instead of 127.0.0.1:admin_port (tokenvoy run)
    admin_socket: str | None = None
    access_log_path: str = "/dev/stdout"
    ratelimit_timeout_ms: int = 200
    extproc_message_timeout_ms: int = 10_000
    route_timeout_s: int = 300
    max_downstream_connections: int = 50_000
    # Several extproc processes (tokenvoy run --extproc-workers N > 1): their addresses, in place of
    # ``extproc_address``; the filters then carry a request's state in dynamic metadata (extproc/carried.py).
    extproc_worker_addresses: tuple[str, ...] = ()
    # Direct rules (tokenvoy/config/direct.py) get a route and cluster without the upstream ext_proc filter,
    # their keys read from SDS files in this directory (tokenvoy run writes them); None: no direct routes.
    secrets_dir: str | None = None


def cluster_name(rule: Rule) -> str:
    return f"rule/{rule.name}"


# Failures worth another backend: provider errors and overload, resets, refused connections.
RETRY_ON = "5xx,reset,connect-failure,refused-stream,retriable-status-codes"
RETRIABLE_STATUS_CODES = [429]
# Envoy Gateway's `numRetries` default, for a one-backend rule whose policy sets no number.
DEFAULT_NUM_RETRIES = 2
DEFAULT_BACKOFF_MS = (10, 100)


def duration(milliseconds: int) -> str:
    """A protobuf JSON duration: ``30s``, ``0.500s`` (what the rendered config holds)."""
    if milliseconds % 1000 == 0:
        return f"{milliseconds // 1000}s"
    return f"{milliseconds / 1000:.3f}s"


# Where distributions keep the system CA bundle (Debian/Ubuntu/Alpine, RHEL/Fedora, openSUSE, macOS).
_SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def system_ca_bundle() -> str:
    """The system CA bundle Envoy verifies providers with: the first that exists here (Envoy runs on the
    machine that renders), else Python's default, else the Debian path (the container image's)."""
    for path in (*_SYSTEM_CA_BUNDLES, ssl.get_default_verify_paths().cafile):
        if path and os.path.isfile(path):
            return path
    return _SYSTEM_CA_BUNDLES[0]

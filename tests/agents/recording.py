"""What a CLI's request looks like, in the form tests/fixtures/agents/requests.json keeps it.

Only what identifies the client's wire contract: method, path and query, the header names, the values of
the non-secret headers that select behaviour (betas, API version, app and client names; a user agent by
its first product token), and the body's top-level keys. Keys, session ids and per-request values are
kept as names only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.agents.recorder import Recorded

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "agents" / "requests.json"
# Set by the transport, not chosen by the client.
_TRANSPORT = frozenset({"host", "content-length", "connection"})
# Headers whose values are part of the contract (a user agent only by its first product token).
_VALUES = frozenset(
    {
        "accept",
        "anthropic-beta",
        "anthropic-version",
        "content-type",
        "originator",
        "x-app",
        "x-codex-beta-features",
    }
)
# Kept by their first product token only (the rest names the machine's OS or runtime version).
_PRODUCTS = ("user-agent", "x-goog-api-client")


def shape(request: Recorded) -> dict[str, Any]:
    body = request.json()
    headers = {name: value for name, value in request.headers.items() if name in _VALUES}
    for name in _PRODUCTS:
        if name in request.headers:
            headers[name] = request.headers[name].split(" ", 1)[0]
    return {
        "method": request.method,
        "target": request.target,
        "header_names": sorted(set(request.headers) - _TRANSPORT),
        "headers": dict(sorted(headers.items())),
        "body_keys": sorted(body) if isinstance(body, dict) else None,
    }


def load() -> dict[str, Any]:
    return orjson.loads(FIXTURE.read_bytes())


def save(fixture: dict[str, Any]) -> None:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_bytes(orjson.dumps(fixture, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")

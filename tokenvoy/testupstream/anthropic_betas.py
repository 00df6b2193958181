"""The ``anthropic-beta`` flags each Claude host accepts, in one place, each list with where it comes from.

Anthropic's API answers a flag it does not know with 400 ``invalid_request_error`` ("Unexpected value(s)
`x` for the `anthropic-beta` header. …"; the API reference's "Beta headers" page: "Unsupported beta header"),
and so does Bedrock ("invalid beta flag"). The fakes refuse every flag not listed here, so a gateway that
forwards a flag the provider does not take fails in tests as it would in production. A flag missing from a
list makes the fake too strict: add it here with its source, never because a test needs it.

Vertex AI is not listed: we found no documented list of the flags it accepts, so its fake takes any.
"""

from __future__ import annotations

import functools
import typing

__all__ = ["ANTHROPIC_BETAS", "BEDROCK_BETAS", "anthropic_betas", "unknown_betas"]

# Anthropic's own API (api.anthropic.com):
# * ``AnthropicBetaParam`` of the official Python SDK (anthropic-sdk-python, src/anthropic/types/
#   anthropic_beta_param.py, generated from Anthropic's OpenAPI spec; as of August 2026, then 2.17.0;
#   and, when the SDK is installed, every flag its ``AnthropicBetaParam`` names (below));
# * flags the API reference documents on feature pages and the SDK sends itself but does not list there:
#   ``structured-outputs-2025-12-15`` (the SDK's ``messages.parse``), ``fine-grained-tool-streaming-2025-05-14``
#   (SDK changelog), ``oauth-2025-04-20`` (the SDK's OAuth credentials), ``effort-2025-11-24`` (the effort
#   page), ``advanced-tool-use-2025-11-20``, ``tool-search-tool-2025-10-19`` and ``tool-examples-2025-10-29``
#   (tool search / tool use examples), ``code-execution-2025-08-25``, ``web-fetch-2025-09-10``,
#   ``search-results-2025-06-09``;
# * ``claude-code-20250219``: what Claude Code sends on every request (tests/fixtures/agents/requests.json is
#   a recording of it talking to Anthropic, which answered 200), and ``prompt-caching-scope-2026-01-05``, which
#   Claude Code 2.1 sends too (a public report of Vertex refusing it, while Anthropic takes it).
ANTHROPIC_BETAS = frozenset(
    {
        # AnthropicBetaParam
        "message-batches-2024-09-24",
        "prompt-caching-2024-07-31",
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "pdfs-2024-09-25",
        "token-counting-2024-11-01",
        "token-efficient-tools-2025-02-19",
        "output-128k-2025-02-19",
        "files-api-2025-04-14",
        "mcp-client-2025-04-04",
        "mcp-client-2025-11-20",
        "dev-full-thinking-2025-05-14",
        "interleaved-thinking-2025-05-14",
        "code-execution-2025-05-22",
        "extended-cache-ttl-2025-04-11",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "model-context-window-exceeded-2025-08-26",
        "skills-2025-10-02",
        "fast-mode-2026-02-01",
        "output-300k-2026-03-24",
        "user-profiles-2026-03-24",
        "advisor-tool-2026-03-01",
        "managed-agents-2026-04-01",
        "cache-diagnosis-2026-04-07",
        "dreaming-2026-04-21",
        "thinking-token-count-2026-05-13",
        "server-side-fallback-2026-06-01",
        "server-side-fallback-2026-07-01",
        "fallback-credit-2026-06-01",
        "fallback-credit-2026-07-01",
        "agent-memory-2026-07-22",
        "mid-conversation-tool-changes-2026-07-01",
        # AnthropicBetaParam of anthropic 2.17.0 (the SDK version the dev extra installs in December 2026)
        "admin-user-sign-out-2026-10-08",
        "analytics-usage-cost-2026-08-24",
        "ce-claude-code-managed-settings-2026-10-06",
        "ce-plugins-2026-09-01",
        "ce-user-management-2026-07-13",
        "compact-2026-01-12",
        "compact-2026-09-04",
        "computer-use-2025-11-24",
        "efs-2026-10-01",
        "experimental-claude-tag-2026-10-21",
        "google-managed-data-controls-2026-09-01",
        "inline-tools-2026-09-15",
        "mcp-client-2026-09-15",
        "mcp-tunnels-2026-06-22",
        "message-threads-2026-08-12",
        "mid-conversation-output-config-2026-07-01",
        "mid-conversation-system-clear-at-2026-08-21",
        "spend-limit-reads-2026-09-26",
        "structured-outputs-2025-11-13",
        "task-budgets-2026-03-13",
        "telemetry-destinations-2026-08-11",
        "thinking-binding-controls-2026-08-01",
        "thinking-display-updates-2026-08-18",
        "user-profiles-2026-08-18",
        "user-profiles-2026-09-04",
        "user-profiles-billing-2026-10-01",
        "webhooks-2026-10-07",
        # documented elsewhere (see above)
        "structured-outputs-2025-12-15",
        "fine-grained-tool-streaming-2025-05-14",
        "oauth-2025-04-20",
        "effort-2025-11-24",
        "advanced-tool-use-2025-11-20",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
        "code-execution-2025-08-25",
        "web-fetch-2025-09-10",
        "search-results-2025-06-09",
        "claude-code-20250219",
        "prompt-caching-scope-2026-01-05",
    }
)


def _sdk_betas() -> frozenset[str]:
    """The flags of the installed anthropic SDK's ``AnthropicBetaParam`` (generated from Anthropic's API spec),
    when the SDK is installed: a newer SDK than the list above knows flags the API takes, and the fake must not
    refuse them."""
    try:
        from anthropic.types import AnthropicBetaParam
    except ImportError:
        return frozenset()
    literals = [arg for arg in typing.get_args(AnthropicBetaParam) if typing.get_origin(arg) is typing.Literal]
    return frozenset(value for literal in literals for value in typing.get_args(literal))


@functools.cache
def anthropic_betas() -> frozenset[str]:
    """:data:`ANTHROPIC_BETAS` and the installed SDK's flags. Looked up only for a flag the list lacks: importing
    the SDK takes over a second, which the fake's start must not pay (tests wait for Envoy, not for it)."""
    return ANTHROPIC_BETAS | _sdk_betas()


# Claude on AWS Bedrock (``anthropic_beta`` in the InvokeModel body, or in Converse's
# ``additionalModelRequestFields``): the values AWS's "Anthropic Claude Messages API" request reference lists.
# Claude Code's ``claude-code-20250219`` is not among them.
BEDROCK_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
    }
)


def unknown_betas(header: str, known: frozenset[str]) -> list[str]:
    """The flags of an ``anthropic-beta`` header value that ``known`` lacks, in order (an empty flag counts:
    the API refuses ``anthropic-beta: ,``)."""
    flags = [flag.strip() for flag in header.split(",")]
    return [flag for flag in flags if flag not in known]

"""Who may call the fake provider: each provider's credential check and refusal, pure (headers in, answer out).

What each provider documents, and so what each route refuses (status, body shape):

* OpenAI (chat, responses, embeddings, completions): ``Authorization: Bearer <key>``. None: 401
  ``{"error": {"message": "You didn't provide an API key. …", "type": "invalid_request_error", "param": null,
  "code": null}}``; a key not known: 401 ``… "code": "invalid_api_key"`` ("Incorrect API key provided: sk-ab***yz.").
  Azure's v1 surface (``/openai/v1/…``) takes ``api-key`` too, and answers as Azure does.
* Anthropic (messages, count_tokens): ``x-api-key`` (or ``Authorization: Bearer``, as the SDK sends an auth
  token). None: 401 ``{"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header
  is required"}}`` (always: Anthropic has no keyless mode, and tokenvoy's default config carries a fake key);
  not known: 401 ``invalid x-api-key``.
* Azure OpenAI (deployments): ``api-key`` or ``Authorization: Bearer <Entra token>``. None or not known: 401
  ``{"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. …"}}``
  (an Entra token: ``{"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid, …"}}``).
* Google Vertex AI (Gemini, Claude on Vertex, embeddings): ``Authorization: Bearer <OAuth token>``, or an API key
  (``x-goog-api-key`` / ``?key=``, Vertex express mode). None: 401 ``UNAUTHENTICATED`` "Request is missing required
  authentication credential. …"; a token not known: 401 ``UNAUTHENTICATED`` "Request had invalid authentication
  credentials. …"; an API key not known: 400 ``INVALID_ARGUMENT`` "API key not valid. Please pass a valid API key."
  with a ``google.rpc.ErrorInfo`` detail of reason ``API_KEY_INVALID``. Bodies are ``google.rpc.Status``:
  ``{"error": {"code", "message", "status", "details"?}}``.
* AWS Bedrock: SigV4 (``aws_auth.py``: 403 ``{"message"}`` with ``x-amzn-errortype``), or a Bedrock API key
  (``Authorization: Bearer``; not known: 403 ``UnrecognizedClientException``). No credential when one is required:
  403 ``{"message": "Missing Authentication Token"}``, ``x-amzn-errortype: MissingAuthenticationTokenException``.

When a credential is required and which values are known (the fake cannot know a real account's keys, so tests
say; two switches, each an environment variable of the fake's process or a request header for one request):

* ``TESTUPSTREAM_API_KEYS=k1,k2`` / ``x-testupstream-api-keys: k1,k2``: the only keys (or bearer tokens) that
  are valid; any other is refused as above. Unset: every non-empty credential is valid.
* ``TESTUPSTREAM_REQUIRE_CREDENTIALS=1`` / ``x-testupstream-require-credentials: true``: a request without a
  credential is refused (Anthropic: always). Unset: OpenAI, Azure, Vertex and Bedrock routes take keyless
  requests, because tokenvoy's keyless demo config (``tokenvoy run`` without ``OPENAI_API_KEY``) sends none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "H_KEYS",
    "H_REQUIRE",
    "KEYS_ENV",
    "REQUIRE_ENV",
    "Policy",
    "Refusal",
    "anthropic",
    "azure",
    "bedrock",
    "from_environ",
    "google",
    "openai",
    "policy",
]

KEYS_ENV = "TESTUPSTREAM_API_KEYS"
REQUIRE_ENV = "TESTUPSTREAM_REQUIRE_CREDENTIALS"
H_KEYS = "x-testupstream-api-keys"
H_REQUIRE = "x-testupstream-require-credentials"


@dataclass(frozen=True, slots=True)
class Policy:
    """``required``: a request without a credential is refused; ``keys``: the valid ones (None: any)."""

    required: bool = False
    keys: frozenset[str] | None = None

    def known(self, credential: str) -> bool:
        return self.keys is None or credential in self.keys


@dataclass(frozen=True, slots=True)
class Refusal:
    """The provider's answer to a refused credential: status, JSON body, extra response headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def _keys(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(k.strip() for k in value.split(",") if k.strip())


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "true")


def from_environ(environ: Mapping[str, str] | None = None) -> Policy:
    """The fake's own policy, from its environment (read once, when the app starts)."""
    env = os.environ if environ is None else environ
    return Policy(_true(env.get(REQUIRE_ENV, "")), _keys(env.get(KEYS_ENV)))


def policy(headers: Mapping[str, str], default: Policy) -> Policy:
    """This request's policy: its control headers where it has them, else ``default``."""
    require, keys = headers.get(H_REQUIRE), headers.get(H_KEYS)
    if require is None and keys is None:
        return default
    return Policy(
        default.required if require is None else _true(require), default.keys if keys is None else _keys(keys)
    )


def _bearer(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` ("" for a bearer without one), None when not a bearer."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _masked(key: str) -> str:
    """How OpenAI shows a refused key: its first and last characters around stars."""
    return f"{key[:3]}{'*' * max(len(key) - 7, 3)}{key[-4:]}" if len(key) > 8 else "*" * len(key)


# -- OpenAI ---------------------------------------------------------------------------------------------


def _openai_error(message: str, code: str | None) -> Refusal:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return Refusal(401, {"error": error})


def openai(headers: Mapping[str, str], path: str, rules: Policy) -> Refusal | None:
    """OpenAI's answer to the request's credential (None: accepted); Azure's on its ``/openai/v1/`` surface."""
    if "/openai/v1/" in path:
        return azure(headers, rules)
    key = _bearer(headers)
    if not key:
        if key is None and "authorization" not in headers and not rules.required:
            return None
        return _openai_error(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
        )
    if not rules.known(key):
        return _openai_error(
            f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_api_key",
        )
    return None


# -- Anthropic ------------------------------------------------------------------------------------------


def _anthropic_error(message: str) -> Refusal:
    return Refusal(401, {"type": "error", "error": {"type": "authentication_error", "message": message}})


def anthropic(headers: Mapping[str, str], rules: Policy) -> Refusal | None:
    """Anthropic's answer: a key is always required (``x-api-key``, or a bearer auth token)."""
    key = headers.get("x-api-key") or _bearer(headers)
    if not key:
        return _anthropic_error("x-api-key header is required")
    if not rules.known(key):
        return _anthropic_error("invalid x-api-key")
    return None


# -- Azure OpenAI ---------------------------------------------------------------------------------------

_AZURE_KEY_REFUSED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
_AZURE_TOKEN_REFUSED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)


def azure(headers: Mapping[str, str], rules: Policy) -> Refusal | None:
    """Azure OpenAI's answer: an ``api-key`` or an Entra ID bearer token."""
    key = headers.get("api-key")
    if key is not None:
        return None if key and rules.known(key) else _azure_error(_AZURE_KEY_REFUSED)
    token = _bearer(headers)
    if token is not None:
        return None if token and rules.known(token) else _azure_error(_AZURE_TOKEN_REFUSED)
    return _azure_error(_AZURE_KEY_REFUSED) if "authorization" in headers or rules.required else None


def _azure_error(message: str) -> Refusal:
    return Refusal(401, {"error": {"code": "401", "message": message}})


# -- Google ---------------------------------------------------------------------------------------------

_GOOGLE_MISSING = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential."
)
_GOOGLE_INVALID = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential."
)


def _google_error(status: int, message: str, reason: str | None = None) -> Refusal:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": "UNAUTHENTICATED" if status == 401 else "INVALID_ARGUMENT",
    }
    if reason is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
        ]
    return Refusal(status, {"error": error})


def google(headers: Mapping[str, str], query: str, rules: Policy) -> Refusal | None:
    """Vertex AI's answer: a bearer OAuth token, or an API key in ``x-goog-api-key`` or ``?key=``."""
    token = _bearer(headers)
    keys = parse_qs(query).get("key")
    api_key = headers.get("x-goog-api-key") or (keys[0] if keys else None)
    if token:
        return None if rules.known(token) else _google_error(401, _GOOGLE_INVALID)
    if api_key:
        if rules.known(api_key):
            return None
        return _google_error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
    if token is not None or "authorization" in headers:
        return _google_error(401, _GOOGLE_INVALID)
    return _google_error(401, _GOOGLE_MISSING, "CREDENTIALS_MISSING") if rules.required else None


# -- AWS ------------------------------------------------------------------------------------------------


_AWS_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.coral.service/"


def bedrock(headers: Mapping[str, str], rules: Policy) -> Refusal | None:
    """AWS's answer to an unsigned Bedrock request: a Bedrock API key (``Authorization: Bearer``) must be known;
    no credential at all is 403 ``MissingAuthenticationTokenException`` when one is required. A SigV4-signed
    request never gets here: ``aws_auth`` verified it."""
    token = _bearer(headers)
    if token is not None:
        if token and rules.known(token):
            return None
        return Refusal(
            403,
            {"message": "The security token included in the request is invalid."},
            (("x-amzn-errortype", "UnrecognizedClientException" + _AWS_SUFFIX),),
        )
    if "authorization" not in headers and not rules.required:
        return None
    return Refusal(
        403,
        {"message": "Missing Authentication Token"},
        (("x-amzn-errortype", "MissingAuthenticationTokenException" + _AWS_SUFFIX),),
    )

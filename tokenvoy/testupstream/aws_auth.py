"""SigV4 verification for the fake provider, the way AWS checks a request: re-sign it and compare.

A request carrying ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
SignedHeaders=…, Signature=…`` is re-signed with botocore using the secret the fake knows for that access
key id, the request's own ``x-amz-date``, region and service, and only the headers it says it signed. A
mismatch is answered like AWS: 403 with ``x-amzn-errortype`` and ``{"message": …}``.

Known keys: AWS's documented example key pair, plus ``TESTUPSTREAM_AWS_KEYS``
(``AKID:secret[:session-token],…``). Unsigned requests pass unless ``TESTUPSTREAM_REQUIRE_SIGV4=1`` or the
request carries ``x-testupstream-require-sigv4: true``.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

EXAMPLE_ACCESS_KEY_ID = "AKIDEXAMPLE"
EXAMPLE_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # AWS's documented example, not a secret
KEYS_ENV = "TESTUPSTREAM_AWS_KEYS"
REQUIRE_ENV = "TESTUPSTREAM_REQUIRE_SIGV4"
H_REQUIRE = "x-testupstream-require-sigv4"
MAX_SKEW_S = 15 * 60  # AWS rejects a signature dated more than 15 minutes from its clock

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True, slots=True)
class Denied:
    """Why AWS would refuse the request: ``error_type`` goes in ``x-amzn-errortype``."""

    error_type: str
    message: str
    status: int = 403


@dataclass(frozen=True, slots=True)
class Verified:
    access_key_id: str
    region: str
    service: str
    signed_headers: tuple[str, ...]


def known_keys(environ: dict[str, str] | None = None) -> dict[str, tuple[str, str | None]]:
    """Access key id → (secret, session token or None)."""
    keys: dict[str, tuple[str, str | None]] = {EXAMPLE_ACCESS_KEY_ID: (EXAMPLE_SECRET_ACCESS_KEY, None)}
    for item in (environ if environ is not None else os.environ).get(KEYS_ENV, "").split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2 and parts[0] and parts[1]:
            keys[parts[0]] = (parts[1], parts[2] if len(parts) > 2 and parts[2] else None)
    return keys


def required(headers: dict[str, str], environ: dict[str, str] | None = None) -> bool:
    env = (environ if environ is not None else os.environ).get(REQUIRE_ENV, "")
    return headers.get(H_REQUIRE, "").lower() == "true" or env.lower() in ("1", "true")


_INVALID_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)


def verify(
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    keys: dict[str, tuple[str, str | None]],
    now: datetime | None = None,
) -> Verified | Denied:
    """Check a received request's SigV4 signature (``target``: path and query exactly as received)."""
    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256"):
        return Denied("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        return Denied("IncompleteSignatureException", f"Authorization header is malformed: {authorization[:60]!r}")
    akid, region, service = match["akid"], match["region"], match["service"]
    signed = tuple(match["signed"].split(";"))
    key = keys.get(akid)
    if key is None:
        return Denied("UnrecognizedClientException", "The security token included in the request is invalid.")
    secret, session_token = key
    if session_token is not None and headers.get("x-amz-security-token") != session_token:
        return Denied("UnrecognizedClientException", "The security token included in the request is invalid.")
    if "host" not in signed:
        return Denied("IncompleteSignatureException", "'Host' must be a signed header.")
    missing = [name for name in signed if name not in headers]
    if missing:
        return Denied("IncompleteSignatureException", f"Signed header {missing[0]!r} is not in the request.")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        return Denied("IncompleteSignatureException", f"x-amz-date {amz_date!r} is not in {SIGV4_TIMESTAMP} format.")
    current = now or datetime.now(UTC)
    if abs((current - signed_at).total_seconds()) > MAX_SKEW_S:
        return Denied("InvalidSignatureException", f"Signature expired: {amz_date} is now earlier/later than allowed.")
    if match["date"] != amz_date[:8]:
        return Denied("InvalidSignatureException", "Credential scope date does not match x-amz-date.")
    request = AWSRequest(
        method=method, url=f"http://{headers['host']}{target}", data=body, headers={n: headers[n] for n in signed}
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(ReadOnlyCredentials(akid, secret, session_token), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return Denied("InvalidSignatureException", _INVALID_SIGNATURE)
    return Verified(akid, region, service, signed)

"""``AWSCredentials``: SigV4-sign each attempt's final request (service ``bedrock``) with botocore.

The signature covers the method, path, ``host`` and the exact body bytes, so it is computed last, after
translation and every mutation. Only ``host``, ``x-amz-date`` (and ``x-amz-security-token``) are signed:
headers Envoy adds later (``x-forwarded-proto``, ``x-envoy-*``) are then free to change.

Credentials come from the policy's credentials file (an AWS shared-credentials INI, one profile) or, without
one, from botocore's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, shared
files, container or instance roles). Refreshable chain credentials (roles) are refreshed in a daemon thread,
so signing never waits on the network.
"""

from __future__ import annotations

import configparser
import threading

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials

from tokenvoy.config.model import AWSCredentials
from tokenvoy.extproc.credentials.base import describe, log

SERVICE = "bedrock"
CHAIN_REFRESH_INTERVAL_S = 60.0  # botocore itself refreshes role credentials 15 minutes before expiry
# Client headers that would otherwise reach AWS next to (and unsigned by) the gateway's signature.
AWS_CLIENT_HEADERS = ("x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


class AWSConfigError(ValueError):
    """The policy's AWS credentials cannot be loaded (the message names the policy, never a secret)."""


def parse_credentials_file(text: str, profile: str, origin: str) -> ReadOnlyCredentials:
    """One profile of an AWS shared-credentials file (INI: ``[profile]`` ``aws_access_key_id`` …)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        raise AWSConfigError(f"{origin} is not an AWS credentials file (INI with [profile] sections)") from None
    if not parser.has_section(profile):
        profiles = ", ".join(parser.sections()) or "none"
        raise AWSConfigError(f"{origin} has no profile [{profile}] (profiles: {profiles})")
    section = parser[profile]
    missing = [key for key in ("aws_access_key_id", "aws_secret_access_key") if not section.get(key, "").strip()]
    if missing:
        raise AWSConfigError(f"{origin} profile [{profile}] lacks {', '.join(missing)}")
    token = section.get("aws_session_token", "").strip() or None
    return ReadOnlyCredentials(section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip(), token)


def sign_request(
    credentials: ReadOnlyCredentials, region: str, method: str, authority: str, path: str, body: bytes
) -> dict[str, str]:
    """SigV4 headers for one request as the provider will receive it (``host`` = ``authority``)."""
    request = AWSRequest(method=method, url=f"https://{authority}{path}", data=body, headers={"host": authority})
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    headers = {"authorization": request.headers["Authorization"], "x-amz-date": request.headers["X-Amz-Date"]}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    return headers


class AWSSigner:
    needs_request = True
    removes = AWS_CLIENT_HEADERS

    def __init__(self, policy: str, region: str, credentials: ReadOnlyCredentials | Credentials) -> None:
        self.policy = policy
        self.region = region
        self._source = credentials if isinstance(credentials, RefreshableCredentials) else None
        self._frozen = (
            credentials if isinstance(credentials, ReadOnlyCredentials) else credentials.get_frozen_credentials()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sign(self, method: str, authority: str, path: str, body: bytes) -> dict[str, str]:
        return sign_request(self._frozen, self.region, method, authority, path, body)

    def start(self) -> None:
        if self._source is not None and self._thread is None:
            self._thread = threading.Thread(target=self._refresh, name=f"aws {self.policy}", daemon=True)
            self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return True

    def stop(self) -> None:
        self._stop.set()

    def _refresh(self) -> None:
        assert self._source is not None
        while not self._stop.wait(CHAIN_REFRESH_INTERVAL_S):
            try:
                self._frozen = self._source.get_frozen_credentials()
            except Exception as exc:  # keep signing with the last credentials; AWS answers once they expire
                log.error("%s: cannot refresh AWS credentials: %s", self.policy, describe(exc))


def build(policy: str, spec: AWSCredentials) -> AWSSigner:
    """Load the credentials now (startup), so a missing or malformed one fails before serving."""
    if spec.credentials_file is not None:
        text = spec.credentials_file.read()  # ValueError naming the Secret when unreadable
        credentials: ReadOnlyCredentials | Credentials = parse_credentials_file(
            text, spec.profile, spec.credentials_file.origin
        )
    else:
        import botocore.session

        found = botocore.session.get_session().get_credentials()
        if found is None:
            raise AWSConfigError(
                "no AWS credentials: set awsCredentials.credentialsFile, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (botocore's default credential chain found none)"
            )
        credentials = found
    return AWSSigner(policy, spec.region, credentials)

"""AWSCredentials: SigV4 as AWS specifies it, credential sources, and the fake provider's verification."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from urllib.parse import quote

import orjson
import pytest

from tokenvoy.config.model import AWSCredentials, Secret
from tokenvoy.extproc.credentials import aws
from tokenvoy.testupstream import aws_auth
from tokenvoy.testupstream.http import Request
from tokenvoy.testupstream.server import App

AKID, SECRET = aws_auth.EXAMPLE_ACCESS_KEY_ID, aws_auth.EXAMPLE_SECRET_ACCESS_KEY
CREDENTIALS = aws.ReadOnlyCredentials(AKID, SECRET, None)
HOST = "bedrock-runtime.us-east-1.amazonaws.com"
PATH = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke"
BODY = b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
SIGNED_AT = dt.datetime(2026, 3, 4, 5, 6, 7)


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: SIGNED_AT)
    return SIGNED_AT.replace(tzinfo=dt.UTC)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def spec_signature(secret: str, region: str, host: str, path: str, body: bytes, date: str, token: str | None) -> str:
    """SigV4 written from AWS's specification (not botocore): non-S3 services encode the path a second time."""
    headers = {"host": host, "x-amz-date": date, **({"x-amz-security-token": token} if token else {})}
    names = sorted(headers)
    canonical = "\n".join(
        [
            "POST",
            quote(path, safe="/~"),
            "",
            "".join(f"{name}:{headers[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date[:8]}/{region}/bedrock/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date[:8]), region), "bedrock"), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


# -- signing --------------------------------------------------------------------------------------------


def test_signature_is_the_one_the_sigv4_specification_gives(pinned_clock: dt.datetime) -> None:
    headers = aws.sign_request(CREDENTIALS, "us-east-1", "POST", HOST, PATH, BODY)
    assert headers["x-amz-date"] == "20260304T050607Z"
    expected = spec_signature(SECRET, "us-east-1", HOST, PATH, BODY, "20260304T050607Z", None)
    assert headers["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={AKID}/20260304/us-east-1/bedrock/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={expected}"
    )
    assert "x-amz-security-token" not in headers


def test_session_credentials_sign_and_send_the_security_token(pinned_clock: dt.datetime) -> None:
    session = aws.ReadOnlyCredentials("ASIAEXAMPLE", "s3cr3t", "the-session-token")
    headers = aws.sign_request(session, "eu-west-3", "POST", HOST, PATH, BODY)
    assert headers["x-amz-security-token"] == "the-session-token"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["authorization"]
    expected = spec_signature("s3cr3t", "eu-west-3", HOST, PATH, BODY, headers["x-amz-date"], "the-session-token")
    assert headers["authorization"].endswith(f"Signature={expected}")


def received(headers: dict[str, str], host: str = HOST) -> dict[str, str]:
    return {"host": host, "content-type": "application/json", "x-forwarded-proto": "https", **headers}


def test_the_fake_provider_accepts_the_signature_and_refuses_any_change(pinned_clock: dt.datetime) -> None:
    signed = aws.sign_request(CREDENTIALS, "us-east-1", "POST", HOST, PATH, BODY)
    keys = aws_auth.known_keys({})
    ok = aws_auth.verify("POST", PATH, received(signed), BODY, keys, now=pinned_clock)
    assert ok == aws_auth.Verified(AKID, "us-east-1", "bedrock", ("host", "x-amz-date"))
    changed = [
        ("POST", PATH, received(signed), BODY + b" "),  # body
        ("POST", PATH.replace("haiku", "sonnet"), received(signed), BODY),  # path
        ("POST", PATH, received(signed, host="127.0.0.1"), BODY),  # host
        ("PUT", PATH, received(signed), BODY),  # method
    ]
    for method, path, headers, body in changed:
        denied = aws_auth.verify(method, path, headers, body, keys, now=pinned_clock)
        assert isinstance(denied, aws_auth.Denied) and denied.error_type == "InvalidSignatureException", (method, path)


def test_the_fake_provider_refuses_a_wrong_secret_an_unknown_key_and_an_old_signature(
    pinned_clock: dt.datetime,
) -> None:
    keys = aws_auth.known_keys({})
    wrong = aws.sign_request(
        aws.ReadOnlyCredentials(AKID, "not-the-secret", None), "us-east-1", "POST", HOST, PATH, BODY
    )
    assert aws_auth.verify("POST", PATH, received(wrong), BODY, keys, now=pinned_clock).error_type == (
        "InvalidSignatureException"
    )
    unknown = aws.sign_request(
        aws.ReadOnlyCredentials("AKIDUNKNOWN", SECRET, None), "us-east-1", "POST", HOST, PATH, BODY
    )
    assert aws_auth.verify("POST", PATH, received(unknown), BODY, keys, now=pinned_clock).error_type == (
        "UnrecognizedClientException"
    )
    signed = aws.sign_request(CREDENTIALS, "us-east-1", "POST", HOST, PATH, BODY)
    later = pinned_clock + dt.timedelta(minutes=16)
    old = aws_auth.verify("POST", PATH, received(signed), BODY, keys, now=later)
    assert isinstance(old, aws_auth.Denied) and "Signature expired" in old.message


def test_the_fake_provider_knows_session_keys_from_its_environment(pinned_clock: dt.datetime) -> None:
    keys = aws_auth.known_keys({aws_auth.KEYS_ENV: "ASIA1:sek:tok, AKID2:sek2"})
    assert keys["ASIA1"] == ("sek", "tok") and keys["AKID2"] == ("sek2", None) and AKID in keys
    signed = aws.sign_request(aws.ReadOnlyCredentials("ASIA1", "sek", "tok"), "us-west-2", "POST", HOST, PATH, BODY)
    assert isinstance(aws_auth.verify("POST", PATH, received(signed), BODY, keys, now=pinned_clock), aws_auth.Verified)
    without_token = aws.sign_request(
        aws.ReadOnlyCredentials("ASIA1", "sek", None), "us-west-2", "POST", HOST, PATH, BODY
    )
    denied = aws_auth.verify("POST", PATH, received(without_token), BODY, keys, now=pinned_clock)
    assert isinstance(denied, aws_auth.Denied) and denied.error_type == "UnrecognizedClientException"


def _app_request(headers: dict[str, str], body: bytes = BODY) -> Request:
    return Request("POST", PATH, PATH, "", "HTTP/1.1", headers, body, True)


def test_the_fake_app_answers_a_bad_signature_like_aws_and_lets_unsigned_requests_through(
    pinned_clock: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tokenvoy.testupstream.aws_auth.datetime", _FrozenDatetime)
    app = App()
    wrong = aws.sign_request(aws.ReadOnlyCredentials(AKID, "nope", None), "us-east-1", "POST", HOST, PATH, BODY)
    response = app(_app_request(received(wrong)))
    assert response.status == 403
    assert dict(response.headers)["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert "signature we calculated does not match" in orjson.loads(response.body)["message"]
    good = aws.sign_request(CREDENTIALS, "us-east-1", "POST", HOST, PATH, BODY)
    assert app(_app_request(received(good))).status == 200  # then the Bedrock route answers
    assert app(_app_request(received({}))).status == 200  # unsigned: not checked
    required = app(_app_request(received({aws_auth.H_REQUIRE: "true"})))
    assert required.status == 403
    assert dict(required.headers)["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")


class _FrozenDatetime(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _FrozenDatetime:
        return cls(2026, 3, 4, 5, 6, 30, tzinfo=tz)


# -- credential sources ---------------------------------------------------------------------------------

CREDENTIALS_FILE = f"""
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default-secret

[bedrock]
aws_access_key_id = {AKID}
aws_secret_access_key = {SECRET}
aws_session_token = tok-123
"""


def test_the_credentials_file_profile_is_used() -> None:
    assert aws.parse_credentials_file(CREDENTIALS_FILE, "bedrock", "Secret/aws key 'credentials'") == (
        aws.ReadOnlyCredentials(AKID, SECRET, "tok-123")
    )
    assert aws.parse_credentials_file(CREDENTIALS_FILE, "default", "x").access_key == "AKIDDEFAULT"


@pytest.mark.parametrize(
    ("text", "profile", "message"),
    [
        (CREDENTIALS_FILE, "prod", "has no profile [prod] (profiles: default, bedrock)"),
        ("[default]\naws_access_key_id = A\n", "default", "lacks aws_secret_access_key"),
        ("aws_access_key_id = A\n", "default", "is not an AWS credentials file"),
    ],
)
def test_an_unusable_credentials_file_is_named_without_its_content(text: str, profile: str, message: str) -> None:
    with pytest.raises(aws.AWSConfigError) as caught:
        aws.parse_credentials_file(text, profile, "Secret/aws key 'credentials'")
    assert message in str(caught.value) and "Secret/aws key 'credentials'" in str(caught.value)
    assert SECRET not in str(caught.value) and "default-secret" not in str(caught.value)


def _no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)


def test_without_a_file_the_standard_env_vars_are_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path, pinned_clock: dt.datetime
) -> None:
    _no_aws_files(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    signer = aws.build("BackendSecurityPolicy/b", AWSCredentials("ap-south-1"))
    headers = signer.sign("POST", HOST, PATH, BODY)
    assert "Credential=ASIAFROMENV/20260304/ap-south-1/bedrock/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == "env-token"
    assert signer.needs_request and "x-amz-security-token" in signer.removes


def test_a_credentials_secret_wins_over_the_env_vars(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _no_aws_files(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    secret = Secret("literal", CREDENTIALS_FILE, "Secret/aws key 'credentials'")
    signer = aws.build("BackendSecurityPolicy/b", AWSCredentials("us-east-1", secret, "bedrock"))
    assert f"Credential={AKID}/" in signer.sign("POST", HOST, PATH, BODY)["authorization"]


def test_no_credentials_anywhere_is_a_clear_startup_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _no_aws_files(monkeypatch, tmp_path)
    with pytest.raises(aws.AWSConfigError, match=r"no AWS credentials.*AWS_ACCESS_KEY_ID"):
        aws.build("BackendSecurityPolicy/b", AWSCredentials("us-east-1"))

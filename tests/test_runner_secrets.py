"""What ``tokenvoy run`` keeps from children that need no secret: their environment and Envoy's log lines."""

from __future__ import annotations

from tokenvoy.runner.environment import FAKE_PROVIDER_EXTRA, RATELIMIT_EXTRA, child_environ
from tokenvoy.runner.redact import line_redactor

ENVIRON = {
    "PATH": "/usr/bin",
    "HOME": "/home/me",
    "LC_ALL": "C.UTF-8",
    "PYTHONPATH": "/src",
    "OPENAI_API_KEY": "sk-secret",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AZURE_CLIENT_SECRET": "az-secret",
    "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
    "MY_OWN_KEY": "referenced as ${env:MY_OWN_KEY}",
    "REDIS_URL": "redis://:pw@redis:6379/0",
    "TESTUPSTREAM_AWS_KEYS": "AKID:secret",
}


def test_envoy_gets_no_provider_secret_and_what_a_process_needs() -> None:
    assert child_environ(ENVIRON) == {"PATH": "/usr/bin", "HOME": "/home/me", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/src"}


def test_ratelimit_gets_its_redis_url_only_and_the_fake_provider_its_own_settings() -> None:
    ratelimit = child_environ(ENVIRON, RATELIMIT_EXTRA)
    fake = child_environ(ENVIRON, FAKE_PROVIDER_EXTRA)
    assert set(ratelimit) - set(child_environ(ENVIRON)) == {"REDIS_URL"}
    assert set(fake) - set(child_environ(ENVIRON)) == {"TESTUPSTREAM_AWS_KEYS"}


def _redact(text: str) -> str:
    redact = line_redactor()
    return "".join(redact(line).decode() for line in text.encode().splitlines(keepends=True))


def test_the_header_mutations_envoy_dumps_at_debug_level_lose_their_credential_values() -> None:
    dump = """\
      set_headers {
        header {
          key: "authorization"
          raw_value: "Bearer sk-live-123"
        }
      }
      set_headers {
        header {
          key: "x-api-key"
          raw_value: "sk-ant-456"
        }
      }
      set_headers {
        header {
          key: "x-model"
          raw_value: "gpt-4o"
        }
      }
"""
    redacted = _redact(dump)
    assert "sk-live-123" not in redacted and "sk-ant-456" not in redacted
    assert redacted.count('raw_value: "<redacted>"') == 2
    assert 'raw_value: "gpt-4o"' in redacted  # other headers stay readable


def test_header_map_dumps_and_name_value_lines_lose_credential_values() -> None:
    lines = "'api-key', 'azure-789'\n'x-request-id', 'r-1'\nx-goog-api-key: AIza000\nSetting header authorization\n"
    lines += "[trace][http] completed header: key=authorization value=Bearer client-1\n"
    redacted = _redact(lines)
    assert "azure-789" not in redacted and "AIza000" not in redacted and "client-1" not in redacted
    assert "completed header: key=authorization value=<redacted>" in redacted
    assert "'x-request-id', 'r-1'" in redacted and "Setting header authorization" in redacted

"""Every shipped example is valid (our loader, the published CRDs, real Envoy); `tokenvoy validate` output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.crds import crd_errors
from tokenvoy.config.catalog import CATALOG_VERSION
from tokenvoy.config.cli import main as validate_main
from tokenvoy.config.loader import load_config
from tokenvoy.extproc.server import build_runtime
from tokenvoy.ratelimit.config import load_config as load_ratelimit_config
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.render.files import write_rendered
from tokenvoy.runner.run import envoy_binary

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


def _cloud_credentials(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user of ``clouds.yaml`` provides: AWS and Azure variables, a GCP service-account key file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    account = {
        "type": "service_account",
        "project_id": "my-project",
        "private_key_id": "example",
        "private_key": key.decode(),
        "client_email": "gateway@my-project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (directory / "gcp-key.json").write_text(json.dumps(account))
    monkeypatch.chdir(directory)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "example-client-secret")
    monkeypatch.setenv("ALICE_KEY", "tv-example-alice")  # client-keys.yaml: the gateway keys of its clients
    monkeypatch.setenv("INTERN_KEY", "tv-example-intern")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_renders_and_real_envoy_accepts_it(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")
    _cloud_credentials(tmp_path, monkeypatch)
    config = load_config([example])
    build_runtime(config)  # secrets resolve, CEL costs compile
    files = write_rendered(config, tmp_path, EnvoyOptions("127.0.0.1:1063", "127.0.0.1:8081"))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(files["envoy"])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    load_ratelimit_config([("ratelimit.yaml", files["ratelimit"].read_text())])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_resources_match_the_published_apis(example: Path) -> None:
    for resource in yaml.safe_load_all(example.read_text()):
        if resource["kind"] == "Secret" or resource["apiVersion"] == "tokenvoy.io/v1alpha1":
            continue  # core Secrets and tokenvoy's own TokenvoyConfig have no published CRD here
        assert crd_errors(resource) == [], f"{example.name}: {resource['kind']}/{resource['metadata']['name']}"


def test_validate_prints_a_summary_of_routes_models_backends_and_budgets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    openai = next(p for p in EXAMPLES if p.name == "openai.yaml")
    assert validate_main([str(openai)]) == 0
    out = capsys.readouterr().out
    assert "openai/rule/0: model=gpt-4o-mini or model~gpt-4\\.1.* -> openai" in out
    assert "models: gpt-4o-mini\n" in out
    assert "openai: OpenAI at https://api.openai.com:443/v1, APIKey" in out
    assert "llm_cost_microcents" in out
    assert "per-user-budget/rule/0: 100,000 llm_total_token per hour per x-user-id (openai, a counter per route)" in out


def test_validate_lists_every_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    text = next(p for p in EXAMPLES if p.name == "openai.yaml").read_text()
    text = text.replace("type: Distinct", "type: Distinkt").replace("- name: openai\n  llm", "- name: opnai\n  llm")
    text = text.replace("unit: Hour", "unit: Fortnight")
    broken.write_text(text)
    assert validate_main([str(broken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("3 errors:")
    assert (
        f"{broken}: AIGatewayRoute/openai: spec.rules[0].backendRefs[0].name: AIServiceBackend/opnai does not exist"
        in err
    )
    assert (
        "BackendTrafficPolicy/per-user-budget: spec.rateLimit.global.rules[0].clientSelectors[0].headers[0].type" in err
    )
    assert "spec.rateLimit.global.rules[0].limit.unit" in err


def test_validate_shows_timeouts_retries_mutations_and_observability(capsys: pytest.CaptureFixture[str]) -> None:
    fallback = next(p for p in EXAMPLES if p.name == "fallback.yaml")
    assert validate_main([str(fallback)]) == 0
    out = capsys.readouterr().out
    assert "timeout 120s; per-attempt timeout 30s; retry (BackendTrafficPolicy/chat-retries): 2 retries" in out
    assert "to local: remove body .service_tier" in out
    assert "    set header openai-organization\n" in out  # header names only: values may be secrets
    assert "metric labels: none beyond the GenAI attributes" in out

    deploy = Path(__file__).resolve().parents[1] / "deploy" / "gateway.yaml"
    assert validate_main([str(deploy)]) == 0
    out = capsys.readouterr().out
    assert "metric labels: x-user-id as user, client from user-agent (at most 100 values each)" in out
    assert f"prices: bundled catalog {CATALOG_VERSION}, overrides: gpt-4o-mini" in out

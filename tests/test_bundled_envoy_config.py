"""The committed envoy/ files are what the renderer makes today, and real Envoy accepts them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.ratelimit.config import load_config as load_ratelimit_config
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.render.files import write_rendered
from tokenvoy.runner.run import envoy_binary

BUNDLED = Path(__file__).resolve().parents[1] / "envoy"
REGENERATE = "regenerate with: env -u OPENAI_API_KEY tokenvoy render --out envoy"


def test_bundled_files_match_the_renderer(tmp_path: Path) -> None:
    assert (BUNDLED / "gateway.yaml").read_text() == default_config_yaml({}), REGENERATE
    write_rendered(load_text(default_config_yaml({})), tmp_path, EnvoyOptions("127.0.0.1:1063", "127.0.0.1:8081"))
    for name in ("envoy.yaml", "ratelimit.yaml"):
        assert (BUNDLED / name).read_text() == (tmp_path / name).read_text(), f"envoy/{name} is stale; {REGENERATE}"


def test_real_envoy_accepts_the_bundled_bootstrap() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(BUNDLED / "envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_the_ratelimit_service_accepts_the_bundled_budgets() -> None:
    config = load_ratelimit_config([("ratelimit.yaml", (BUNDLED / "ratelimit.yaml").read_text())])
    assert "tokenvoy" in config.domains


def test_the_bundled_bootstrap_is_a_typed_envoy_bootstrap() -> None:
    # Every key of the committed file is a field of Envoy's Bootstrap API, every value of the field's type.
    from tokenvoy.render import bootstrap

    document = yaml.safe_load((BUNDLED / "envoy.yaml").read_text())
    typed = bootstrap.Bootstrap.from_dict(document)
    assert bootstrap.to_json(typed) == document
    (listener,) = typed.static_resources.listeners
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
        "127.0.0.1",
        1975,
    )

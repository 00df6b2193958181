"""The docker compose stack and its deploy/ files are wired together (no Docker engine needed).

docker-compose.yaml, the Dockerfile, Prometheus' scrape config and Grafana's provisioning name each other's
paths, ports and flags; these tests read all of them and check that the names agree, so a renamed flag,
a moved file or a changed port breaks here instead of in a user's `docker compose up`. The stack itself is
brought up by scripts/test-containers (.ci/run runs it after the main suite).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenvoy.config.loader import load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tokenvoy.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "tokenvoy.yml"
# `tokenvoy run`'s defaults, used when the compose command does not name a port.
RUN_DEFAULTS = {"--port": 1975, "--admin-port": 9901, "--metrics-port": 1064, "--ratelimit-metrics-port": 1065}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def run_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tokenvoy", "run", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and backslash continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def tokenvoy_argv() -> list[str]:
    """The tokenvoy service's full command line: the image's ENTRYPOINT + the service's command."""
    entrypoint = next(json.loads(args) for word, args in dockerfile_instructions() if word == "ENTRYPOINT")
    command = services()["tokenvoy"]["command"]
    return [*entrypoint, *(shlex.split(command) if isinstance(command, str) else [str(c) for c in command])]


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def port_of(argv: list[str], name: str) -> int:
    value = option(argv, name)
    return RUN_DEFAULTS[name] if value is None else int(value)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount, with ${VAR:-default} resolved to its default."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", volume).split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    ports = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        ports[int(parts[-1])] = int(parts[-2])
    return ports


def namespace_owner(name: str) -> str:
    """The service whose network namespace ``name`` runs in (itself unless `network_mode: service:X`)."""
    mode = services()[name].get("network_mode", "")
    return mode.removeprefix("service:") if mode.startswith("service:") else name


def scrape_targets() -> dict[str, tuple[str, str]]:
    """job name -> (target host:port, metrics path)."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {
        job["job_name"]: (job["static_configs"][0]["targets"][0], job.get("metrics_path", "/metrics"))
        for job in config["scrape_configs"]
    }


# ---------------------------------------------------------------- compose and Dockerfile


def test_compose_has_the_stack_services() -> None:
    assert {"tokenvoy", "prometheus", "grafana", "redis"} <= set(services())
    assert services()["redis"].get("profiles") == ["redis"], "redis is optional: behind a profile"
    for name, service in services().items():
        assert "image" in service or "build" in service, name


def test_every_bind_mount_points_at_an_existing_file() -> None:
    for name, service in services().items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_the_tokenvoy_command_uses_only_flags_tokenvoy_run_has() -> None:
    argv = tokenvoy_argv()
    assert argv[:2] == ["tokenvoy", "run"]
    help_text = run_help()
    flags = [arg.split("=", 1)[0] for arg in argv[2:] if arg.startswith("--")]
    assert flags, "no flags"
    for flag in flags:
        assert re.search(rf"(^|[\s\[]){re.escape(flag)}\b", help_text), f"`tokenvoy run` has no {flag}"
    # The container's listener and metrics must be reachable from outside it.
    assert option(argv, "--host") == "0.0.0.0"
    assert option(argv, "--metrics-host") == "0.0.0.0"


def test_the_gateway_config_is_mounted_where_the_command_reads_it_and_loads() -> None:
    argv = tokenvoy_argv()
    config_path = option(argv, "--config")
    mounts = dict((target, source) for source, target in bind_mounts(services()["tokenvoy"]))
    assert config_path in mounts, f"--config {config_path} is not a mounted file"
    config = load_config([str(ROOT / mounts[config_path])])
    # What the dashboard breaks down by: the `user` and `client` labels and a priced model.
    assert ("x-user-id", "user") in config.metrics.request_header_labels
    assert config.metrics.client_from_user_agent
    assert any(price.model == "gpt-4o-mini" for price in config.pricing)
    assert config.budgets


def test_the_published_ports_are_the_ports_tokenvoy_listens_on() -> None:
    argv = tokenvoy_argv()
    ports = published(services()[namespace_owner("tokenvoy")])
    assert port_of(argv, "--port") in ports
    assert port_of(argv, "--metrics-port") in ports
    assert port_of(argv, "--ratelimit-metrics-port") in ports
    # Envoy's admin (/quitquitquit, /config_dump) is never published.
    assert port_of(argv, "--admin-port") not in ports
    assert published(services()["grafana"]) == {3000: 3000}


def test_every_published_port_is_on_loopback_only() -> None:
    """A local stack (anonymous Grafana admin, unauthenticated gateway): nothing reachable from other hosts."""
    for name, service in services().items():
        for spec in service.get("ports", []):
            assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec} on every interface"


def test_prometheus_shares_the_gateway_network_and_reads_the_deploy_config() -> None:
    prometheus = services()["prometheus"]
    owner = namespace_owner("tokenvoy")
    assert namespace_owner("prometheus") == owner, "Prometheus must reach Envoy's loopback-only admin port"
    assert "ports" not in prometheus and "ports" not in services()["tokenvoy"], "published by the namespace owner"
    command = prometheus["command"]
    config_file = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    listen = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--web.listen-address="))
    assert dict((t, s) for s, t in bind_mounts(prometheus))[config_file] == "./deploy/prometheus/prometheus.yml"
    # Its UI port is published by the service whose network it shares.
    assert int(listen.rpartition(":")[2]) in published(services()[owner])


def test_the_shared_network_namespace_belongs_to_a_service_that_never_restarts_with_them() -> None:
    """A container joined to another's namespace loses its network when that one restarts, so neither tokenvoy
    (restarted on a crash) nor prometheus may own it; scripts/test-containers restarts tokenvoy and re-checks."""
    owner = namespace_owner("tokenvoy")
    assert owner not in ("tokenvoy", "prometheus")
    assert "network_mode" not in services()[owner] and "build" not in services()[owner]
    assert owner in services()["tokenvoy"]["depends_on"]


def test_prometheus_scrapes_the_ports_the_compose_command_opens() -> None:
    argv = tokenvoy_argv()
    targets = scrape_targets()
    assert targets == {
        "tokenvoy-extproc": (f"127.0.0.1:{port_of(argv, '--metrics-port')}", "/metrics"),
        "tokenvoy-ratelimit": (f"127.0.0.1:{port_of(argv, '--ratelimit-metrics-port')}", "/metrics"),
        "envoy": (f"127.0.0.1:{port_of(argv, '--admin-port')}", "/stats/prometheus"),
    }
    # The same file works next to a plain `tokenvoy run`: its default ports.
    assert {target for target, _ in targets.values()} == {
        f"127.0.0.1:{RUN_DEFAULTS[flag]}" for flag in ("--metrics-port", "--ratelimit-metrics-port", "--admin-port")
    }


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    grafana = services()["grafana"]
    mounts = {source: target for source, target in bind_mounts(grafana)}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]

    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    # Prometheus lives in the shared network namespace: the name of its owner, Prometheus' port.
    listen = next(a for a in services()["prometheus"]["command"] if a.startswith("--web.listen-address="))
    assert datasource["url"] == f"http://{namespace_owner('prometheus')}:{listen.rpartition(':')[2]}"
    scrape_interval = yaml.safe_load(PROMETHEUS_YML.read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval

    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == dashboards_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"


def test_the_dockerfile_installs_the_project_and_runs_tokenvoy() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [args.split() for word, args in instructions if word == "COPY"]
    sources = [path for args in copies for path in args[:-1]]
    # Everything the wheel is built from: pyproject's readme and every package directory it maps.
    assert {"pyproject.toml", "README.md", "tokenvoy/", "extproc/", "ratelimit/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
    assert any(word == "RUN" and "pip install /src" in args and "rm -rf /src" in args for word, args in instructions)
    # A WORKDIR would be recreated by every later step: the sources would stay in the image.
    assert not any(word == "WORKDIR" and args.startswith("/src") for word, args in instructions)
    assert all(args.split()[-1].startswith("/src/") for word, args in instructions if word == "COPY")
    assert ("USER", "tokenvoy") in instructions, "runs as a non-root user"
    cmd = json.loads(next(args for word, args in instructions if word == "CMD"))
    assert cmd[0] == "run"
    help_text = run_help()
    for flag in (arg for arg in cmd if arg.startswith("--")):
        assert flag in help_text


def test_dockerignore_lets_in_exactly_what_the_image_copies() -> None:
    """An allowlist: venvs of any name, run dirs (with sockets), tests and .git stay out without being named.
    scripts/test-containers sends the real context to a probe build and lists what arrives."""
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert rules[0] == "*", "everything is excluded first"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        source.rstrip("/") for word, args in dockerfile_instructions() if word == "COPY" for source in args.split()[:-1]
    }
    assert allowed == copied
    last_allow = max(i for i, rule in enumerate(rules) if rule.startswith("!"))
    assert {"**/__pycache__", "**/*.pyc"} <= set(rules[last_allow:]), "caches re-excluded after the allowlist"


# ---------------------------------------------------------------- Grafana dashboard


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))
    return out


def test_the_dashboard_is_grafana_dashboard_json() -> None:
    board = dashboard()
    assert board["uid"] == "tokenvoy-overview"
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["title"]
    assert "id" not in board or board["id"] is None, "an id ties the JSON to one Grafana instance"
    panels = all_panels(board["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(target["expr"] for target in panel["targets"]), panel["title"]


def test_the_dashboard_takes_its_datasource_from_a_variable() -> None:
    """Importable on its own and provisionable: no hard-coded datasource uid, no `__inputs` to resolve."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in all_panels(board["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == expected


def test_the_dashboard_filters_by_model_provider_user_and_client() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name in ("model", "provider", "user", "client"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    exprs = [t["expr"] for p in all_panels(board["panels"]) for t in p.get("targets", [])]
    # The overhead histogram has only operation, provider and error_type labels; a budget refusal comes before
    # a provider is chosen (provider `unknown`), so the Provider filter does not apply to it.
    genai = [e for e in exprs if ("gen_ai_" in e or "tokenvoy_cost" in e) and "overhead" not in e]
    assert genai
    for expr in genai:
        for name in ("model",) if 'gen_ai_provider_name="unknown"' in expr else ("model", "provider"):
            assert f"${name}" in expr, expr


# Grafana's provisioning (https://grafana.com/docs/grafana/latest/administration/provisioning/) and dashboard
# JSON model (https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/).
GRAFANA_BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__all"}
GRAFANA_PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "gauge", "table", "piechart", "barchart", "text"}


def provisioned_datasources() -> list[dict[str, Any]]:
    provisioning = yaml.safe_load(DATASOURCES.read_text())
    assert provisioning["apiVersion"] == 1
    return provisioning["datasources"]


def test_the_datasource_provisioning_is_grafanas_format() -> None:
    datasources = provisioned_datasources()
    for datasource in datasources:
        assert {"name", "type", "uid", "url"} <= set(datasource), datasource
        assert datasource["access"] in ("proxy", "direct")
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", datasource["uid"]), "a uid Grafana accepts"
    assert len({d["uid"] for d in datasources}) == len(datasources)
    assert sum(bool(d.get("isDefault")) for d in datasources) == 1, "exactly one default data source"


def test_the_dashboard_provisioning_is_grafanas_format() -> None:
    provisioning = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())
    assert provisioning["apiVersion"] == 1
    for provider in provisioning["providers"]:
        assert provider["name"] and provider["type"] == "file"
        assert isinstance(provider.get("updateIntervalSeconds", 10), int)
        assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}


def test_every_panel_datasource_resolves_to_a_provisioned_prometheus() -> None:
    """Panels name `${DS_PROMETHEUS}`; that variable lists data sources of its `query` type, whose default
    is the provisioned one: so the uid every panel ends up with exists."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    provisioned = {d["uid"]: d for d in provisioned_datasources()}
    refs = [p["datasource"] for p in all_panels(board["panels"]) if p["type"] != "row"]
    refs += [t["datasource"] for p in all_panels(board["panels"]) for t in p.get("targets", [])]
    refs += [v["datasource"] for v in variables.values() if v["type"] == "query"]
    for ref in refs:
        uid = ref["uid"]
        match = re.fullmatch(r"\$\{(\w+)\}", uid)
        if match:
            variable = variables[match[1]]
            assert variable["type"] == "datasource"
            candidates = [d for d in provisioned.values() if d["type"] == variable["query"] == ref["type"]]
            assert candidates, f"no provisioned {variable['query']} data source for ${match[1]}"
            assert any(d.get("isDefault") for d in candidates), "the variable's default is the default data source"
        else:
            assert uid in provisioned and provisioned[uid]["type"] == ref["type"], ref


def test_every_variable_a_query_uses_is_defined() -> None:
    board = dashboard()
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_BUILTIN_VARIABLES
    texts = [t["expr"] for p in all_panels(board["panels"]) for t in p.get("targets", [])]
    texts += [t.get("legendFormat", "") for p in all_panels(board["panels"]) for t in p.get("targets", [])]
    for text in texts:
        for name in re.findall(r"\$\{?(\w+)", text):
            assert name in defined, f"${name} in {text}"
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            assert re.fullmatch(r"label_values\(\s*\w+\s*,\s*\w+\s*\)", query), query
            assert variable["definition"] == query


def test_the_dashboard_follows_grafanas_json_model() -> None:
    board = dashboard()
    assert len(board["uid"]) <= 40
    assert {"from", "to"} <= set(board["time"])
    for panel in all_panels(board["panels"]):
        assert panel["type"] in GRAFANA_PANEL_TYPES, panel["type"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"{panel['title']}: refIds must be unique"


@pytest.mark.parametrize(
    "needle",
    [
        "gen_ai_client_token_usage_sum",
        "tokenvoy_cost_usd_total",
        "gen_ai_server_request_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "tokenvoy_gateway_overhead_seconds_bucket",
        "tokenvoy_ratelimit_over_limit_total",
        "envoy_cluster_ratelimit_over_limit",
        "sum by (user)",
        "sum by (client)",
        "sum by (gen_ai_provider_name)",
        "sum by (gen_ai_request_model)",
        'error_type!=""',
        "histogram_quantile(0.99",
        "histogram_quantile(0.5",
    ],
)
def test_the_dashboard_shows(needle: str) -> None:
    assert needle in DASHBOARD.read_text().replace('\\"', '"')


def test_run_host_flag_moves_the_gateway_listener(tmp_path: Path) -> None:
    """What the container relies on: `--host 0.0.0.0` reaches the listener Envoy is given."""
    from tokenvoy.runner.run import parse_args, prepare

    args = parse_args(["--host", "0.0.0.0", "--metrics-host", "0.0.0.0", "--port", "2975"])
    assert (args.host, args.metrics_host) == ("0.0.0.0", "0.0.0.0")
    assert parse_args([]).metrics_host == "127.0.0.1"
    config, _ = prepare([str(ROOT / "deploy" / "gateway.yaml")], tmp_path, 9901, args.port, args.host)
    assert (config.listener.address, config.listener.port) == ("0.0.0.0", 2975)
    envoy = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
    (listener,) = yaml.safe_load((tmp_path / "xds" / "lds.yaml").read_text())["resources"]  # reloadable layout
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 2975}
    # Envoy's admin: an owner-only socket (tokenvoy run serves a read-only view of it on 127.0.0.1)
    assert envoy["admin"]["address"]["pipe"] == {"path": str(tmp_path / "envoy-admin.sock"), "mode": 0o600}

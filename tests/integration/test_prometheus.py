"""A real Prometheus (Debian's ``prometheus`` package) scrapes the real gateway with deploy/prometheus/prometheus.yml.

The scrape jobs are the deploy file's own (job names, metrics paths), pointed at this run's ports with a 1 s
interval. The token counts Prometheus answers must equal the usage the OpenAI and Anthropic SDKs returned,
and every PromQL expression of two Grafana dashboards must return data after the SDK traffic: ours and
Envoy AI Gateway's own (``../shared/envoy-gateway/ai-gateway/grafana-dashboard.json``, as published), so a
renamed metric, label or label value breaks this test, not a user's dashboard.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from anthropic import Anthropic
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tokenvoy.json"


def _shared(relative: str) -> Path:
    """The project's reference data: ``shared/`` next to the checkout (or next to a parent of a worktree)."""
    for parent in ROOT.parents:
        if (candidate := parent / "shared" / relative).is_file():
            return candidate
    raise AssertionError(f"shared/{relative} not found next to {ROOT} or any parent")


EAIG_DASHBOARD = "envoy-gateway/ai-gateway/grafana-dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
INSTALL_HINT = "install Debian's `prometheus` package: apt-get install -y prometheus"
BUDGET = 200  # tokens per user per hour: alice's traffic fits, then her spending is refused within a few requests
MESSAGES = [{"role": "user", "content": "hello prometheus"}]
HOG_MAX_TOKENS = 40
TOKENVOY_CONFIG = {
    "apiVersion": "tokenvoy.io/v1alpha1",
    "kind": "TokenvoyConfig",
    "metadata": {"name": "tokenvoy"},
    "spec": {
        "metrics": {"requestHeaderLabels": {"x-user-id": "user"}, "clientFromUserAgent": True},
        "pricing": [{"model": "gpt-4o-mini", "inputPerMillion": 0.15, "outputPerMillion": 0.6}],
    },
}


def wait_until(what: str, check: Callable[[], Any], timeout: float, describe: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{describe()}")
        time.sleep(0.2)


@dataclass
class Sent:
    """What the clients saw: the usage of every answered request, the requests refused by the budget and the
    ones the provider failed."""

    input_tokens: dict[str, int] = field(default_factory=dict)  # per user
    output_tokens: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    refused: int = 0
    failed: int = 0
    messages: int = 0  # answered through the Anthropic SDK
    cost_micros: int = 0  # each answer at the configured gpt-4o-mini price, rounded up to the micro-dollar

    def count(self, user: str, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens[user] = self.input_tokens.get(user, 0) + input_tokens
        self.output_tokens[user] = self.output_tokens.get(user, 0) + output_tokens
        self.answered += 1
        self.cost_micros += math.ceil(
            Fraction(input_tokens) * Fraction("0.15") + Fraction(output_tokens) * Fraction("0.6")
        )


@dataclass
class Stack:
    gateway: Gateway
    prometheus_url: str
    log: Path
    sent: Sent

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", f"{expr}\n{reply.text}"
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def label_values(self, label: str, metric: str) -> list[str]:
        reply = httpx.get(f"{self.prometheus_url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10)
        return list(reply.json()["data"])

    def metric_names(self) -> set[str]:
        reply = httpx.get(f"{self.prometheus_url}/api/v1/label/__name__/values", timeout=10)
        return set(reply.json()["data"])

    def prometheus_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def scrape_config(gateway: Gateway) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with this run's ports and a 1 s interval; jobs and paths unchanged."""
    argv = [str(arg) for arg in gateway.process.args]  # type: ignore[union-attr]
    ports = {
        "tokenvoy-extproc": gateway.metrics_url.rpartition(":")[2],
        "tokenvoy-ratelimit": argv[argv.index("--ratelimit-metrics-port") + 1],
        "envoy": argv[argv.index("--admin-port") + 1],
    }
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(ports)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


def send_traffic(gateway: Gateway, scraped: Callable[[Sent], bool]) -> Sent:
    """alice does everything a panel can show (plain answers, a stream, a provider error, the Anthropic SDK),
    bob adds a second user; twice, so that every series has a sample before its increase (a rate sees only
    increases between samples), ``scraped`` telling when Prometheus has the first round. Then alice spends
    until her budget refuses her."""
    sent = Sent()

    def client(user: str, **headers: str) -> OpenAI:
        return OpenAI(
            base_url=f"{gateway.url}/v1",
            api_key="unused",
            default_headers={"x-user-id": user, **headers},
            max_retries=0,
        )

    def ask(user: str, max_tokens: int) -> None:
        usage = client(user).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=max_tokens)
        assert usage.usage is not None
        sent.count(user, usage.usage.prompt_tokens, usage.usage.completion_tokens)

    def every_kind() -> None:
        for max_tokens in (3, 8):
            ask("alice", max_tokens)
        chunks = list(
            client("alice").chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 1
        sent.count("alice", chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)
        with pytest.raises(openai.InternalServerError):
            client("alice", **{"x-testupstream-status": "503"}).chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=3
            )
        sent.failed += 1
        anthropic = Anthropic(
            base_url=f"{gateway.url}/anthropic", api_key="unused", default_headers={"x-user-id": "alice"}, max_retries=0
        )
        message = anthropic.messages.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
        sent.count("alice", message.usage.input_tokens, message.usage.output_tokens)
        sent.messages += 1
        ask("bob", 4)

    every_kind()
    wait_until("Prometheus has scraped the first round", lambda: scraped(sent), 30)
    every_kind()
    # alice spends her budget until the gateway refuses her (the charge lands just after each answer).
    for _ in range(BUDGET // HOG_MAX_TOKENS + 8):
        try:
            ask("alice", HOG_MAX_TOKENS)
        except openai.RateLimitError:
            sent.refused += 1
            break
        time.sleep(0.1)
    assert sent.refused == 1, f"alice was never refused by a {BUDGET}-token budget"
    return sent


def first_round_scraped(prometheus_url: str) -> Callable[[Sent], bool]:
    """Prometheus has every request so far from extproc, Envoy and ratelimit (each scraped on its own)."""

    def value(expr: str) -> float:
        result = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10).json()
        return float(result["data"]["result"][0]["value"][1]) if result["data"]["result"] else 0.0

    def scraped(sent: Sent) -> bool:
        requests = sent.answered + sent.failed
        return (
            value("sum(gen_ai_server_request_duration_seconds_count)") >= requests
            and value('sum(envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="tokenvoy"})') >= requests
            and value("sum(tokenvoy_ratelimit_should_rate_limit_duration_seconds_count)") >= 1
        )

    return scraped


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(PROMETHEUS).is_file():
        pytest.fail(f"{PROMETHEUS} not found: {INSTALL_HINT}", pytrace=False)
    directory = tmp_path_factory.mktemp("prometheus")
    documents = [*yaml.safe_load_all(gateway_config(free_port(), fake_port := free_port(), BUDGET)), TOKENVOY_CONFIG]
    gateway = start_gateway(directory / "gateway", config_text=yaml.safe_dump_all(documents), fake_port=fake_port)
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        config_path = directory / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(scrape_config(gateway), sort_keys=False))
        port = free_port()
        log = directory / "prometheus.log"
        with log.open("wb") as output:
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert prometheus is not None
            if prometheus.poll() is not None:
                raise AssertionError(f"prometheus exited with {prometheus.returncode}:\n{log.read_text()}")
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until("prometheus ready", ready, 30, lambda: log.read_text()[-4000:])
        yield Stack(gateway, url, log, send_traffic(gateway, first_round_scraped(url)))
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
        gateway.stop()


def test_the_deploy_scrape_config_is_valid() -> None:
    if not Path(PROMTOOL).is_file():
        pytest.fail(f"{PROMTOOL} not found: {INSTALL_HINT}", pytrace=False)
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scrape_target_is_up(stack: Stack) -> None:
    def health() -> dict[str, str]:
        targets = httpx.get(f"{stack.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in targets}

    def all_up() -> bool:
        current = health()
        return len(current) == 3 and set(current.values()) == {"up"}

    wait_until("all targets up", all_up, 20, lambda: f"{health()}\n{stack.prometheus_log()}")


def test_prometheus_token_counts_equal_the_usage_clients_saw(stack: Stack) -> None:
    sent = stack.sent
    total_in, total_out = sum(sent.input_tokens.values()), sum(sent.output_tokens.values())
    queries = {
        'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="input"})': total_in,
        'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})': total_out,
        'sum(gen_ai_client_token_usage_count{gen_ai_token_type="output"})': sent.answered,
        **{
            f'sum(gen_ai_client_token_usage_sum{{gen_ai_token_type="input", user="{user}"}})': tokens
            for user, tokens in sent.input_tokens.items()
        },
        **{
            f'sum(gen_ai_client_token_usage_sum{{gen_ai_token_type="output", user="{user}"}})': tokens
            for user, tokens in sent.output_tokens.items()
        },
        # the one refusal, as extproc and as Envoy saw it, and the one provider failure
        'sum(gen_ai_server_request_duration_seconds_count{error_type="429", user="alice"})': sent.refused,
        "sum(envoy_cluster_ratelimit_over_limit)": sent.refused,
        'sum(gen_ai_server_request_duration_seconds_count{error_type="503", user="alice"})': sent.failed,
        # the Anthropic SDK's request is Envoy AI Gateway's `messages` operation
        'sum(gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="messages"})': sent.messages,
    }

    def answers() -> dict[str, float | None]:
        return {expr: stack.scalar(expr) for expr in queries}

    def all_equal() -> bool:
        return answers() == {expr: float(value) for expr, value in queries.items()}

    wait_until("Prometheus' counts equal the clients'", all_equal, 30, lambda: f"expected {queries}\ngot {answers()}")
    expected_cost = sent.cost_micros / 1e6
    assert stack.scalar("sum(tokenvoy_cost_usd_total)") == pytest.approx(expected_cost, rel=1e-9)


# ---------------------------------------------------------------- the Grafana dashboards' queries

# Grafana's built-in variables: the windows a dashboard over the last 15 minutes would use.
BUILTINS = {"__rate_interval": "1m", "__range": "15m", "__interval": "15s"}
# The value each of our dashboard's filters is set to besides "All"; each must be one of the values
# Prometheus offers for it (the variable's own label_values query), and alice's traffic is under all of them.
CHOSEN = {"model": "gpt-4o-mini", "provider": "openai", "user": "alice", "client": "openai-python"}
LABEL_VALUES = re.compile(r"^label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)$")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
GRAFANA_REGEX_SPECIALS = re.compile(r"([\\^$*+?.()|{}\[\]])")


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def dashboard_exprs(board: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, expr) for every target, nested rows included."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            out.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk((board or dashboard())["panels"])
    return out


def query_variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in (board.get("templating") or {}).get("list", []) if v["type"] == "query"]


def grafana_regex(value: str) -> str:
    """A multi-value variable's value as Grafana writes it into a Prometheus regex (specials escaped)."""
    return GRAFANA_REGEX_SPECIALS.sub(r"\\\\\1", value)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables: the built-in windows, and each dashboard variable by ``values`` (its regex)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        assert name in values, f"no value for ${name} in {expr}"
        return values[name]

    return VARIABLE.sub(replace, expr)


GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")


def grouping_labels(expr: str) -> set[str]:
    """The labels a panel breaks its series down by (``by (...)``), Prometheus' ``le`` aside."""
    return {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")} - {"", "le"}


def has_data(expr: str, result: list[dict[str, Any]]) -> bool:
    """What a Grafana panel shows: a series with a number (NaN, e.g. a quantile of nothing, is not), broken
    down by labels the series carry (grouping by a label no series has gives one unlabelled series, not a
    breakdown)."""
    numbers = [series for series in result if not math.isnan(float(series["value"][1]))]
    return bool(numbers) and all(
        any(series["metric"].get(label) for series in numbers) for label in grouping_labels(expr)
    )


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="x"}'
        '[1m])) / ignoring(error_type) group_left() sum(rate(gen_ai_x_count{error_type!=""}[1m]))'
    )
    assert metric_names_in(expr) == {"envoy_http_downstream_rq_xx", "gen_ai_x_count"}


def test_a_breakdown_needs_its_labels() -> None:
    expr = "sum by (gen_ai_original_model, gen_ai_provider_name) (x) / sum by (le) (y)"
    assert grouping_labels(expr) == {"gen_ai_original_model", "gen_ai_provider_name"}
    labelled = {"metric": {"gen_ai_original_model": "m", "gen_ai_provider_name": "openai"}, "value": [0, "2"]}
    assert has_data(expr, [labelled])
    assert not has_data(expr, [{"metric": {"gen_ai_provider_name": "openai"}, "value": [0, "2"]}])
    assert not has_data(expr, [{**labelled, "value": [0, "NaN"]}])
    assert not has_data(expr, [])


def test_grafana_variable_substitution() -> None:
    expr = 'rate(x{m=~"$model", u=~"${user}"}[$__rate_interval]) / $__range'
    values = {"model": grafana_regex("gpt-4.1"), "user": ".*"}
    assert substitute(expr, values) == 'rate(x{m=~"gpt-4\\\\.1", u=~".*"}[1m]) / 15m'
    with pytest.raises(AssertionError, match=r"no value for \$team"):
        substitute('x{t=~"$team"}', values)


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside `{...}` and grouping clauses."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    return set(re.findall(r"\b((?:gen_ai|tokenvoy|envoy)_[a-zA-Z0-9_:]+)", stripped))


def variable_settings(stack: Stack, board: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The settings a user of ``board`` sees first (every filter on All) and, when it has filters, each filter
    on one value that exists: the value Prometheus offers for the variable's own label_values query."""
    variables = query_variables(board)
    settings = {"All": {v["name"]: v.get("allValue") or ".*" for v in variables}}
    if variables:
        chosen = {}
        for variable in variables:
            metric, label = LABEL_VALUES.match(variable["query"]["query"]).groups()  # type: ignore[union-attr]
            offered = stack.label_values(label, metric)
            assert CHOSEN[variable["name"]] in offered, (variable["name"], offered)
            chosen[variable["name"]] = grafana_regex(CHOSEN[variable["name"]])
        settings[", ".join(f"{name}={value}" for name, value in CHOSEN.items())] = chosen
    return settings


@pytest.mark.parametrize("which", ["tokenvoy", "envoy-ai-gateway"])
def test_every_dashboard_query_returns_data_against_prometheus(stack: Stack, which: str) -> None:
    """Every panel query of the dashboard, under each variable setting, runs and returns a number: the
    module's traffic (answers, a stream, a provider error, an Anthropic client, a refusal, a priced model)
    gives every panel data once Prometheus has scraped twice (a rate needs two samples)."""
    board = dashboard(DASHBOARD if which == "tokenvoy" else _shared(EAIG_DASHBOARD))
    exprs = dashboard_exprs(board)
    assert len(exprs) >= (20 if which == "tokenvoy" else 15)
    settings = variable_settings(stack, board)
    for values in settings.values():
        for _, expr in exprs:
            stack.query(substitute(expr, values))  # asserts the query parses and runs

    def empty() -> list[str]:
        return [
            f"{setting}: panel {title!r}: {substituted}"
            for setting, values in settings.items()
            for title, expr in exprs
            if not has_data(expr, stack.query(substituted := substitute(expr, values)))
        ]

    wait_until(f"every {which} dashboard query returns data", lambda: not empty(), 30, lambda: "\n".join(empty()))


def test_every_metric_the_dashboards_name_is_scraped(stack: Stack) -> None:
    boards = [dashboard(), dashboard(_shared(EAIG_DASHBOARD))]
    wanted = set().union(*(metric_names_in(expr) for board in boards for _, expr in dashboard_exprs(board)))
    for board in boards:
        for variable in query_variables(board):
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, variable["query"]
            wanted.add(match.group(1))
    assert any(name.startswith("envoy_") for name in wanted)
    assert any(name.startswith("tokenvoy_ratelimit_") for name in wanted)
    assert "gen_ai_client_token_usage_sum" in wanted  # Envoy AI Gateway's name, no unit suffix
    wait_until(
        "every metric of the dashboards in Prometheus",
        lambda: wanted <= stack.metric_names(),
        30,
        lambda: f"missing: {sorted(wanted - stack.metric_names())}",
    )


def test_every_dashboard_variable_has_values(stack: Stack) -> None:
    """label_values(metric, label) of each filter finds the values the traffic carried."""
    for variable in query_variables(dashboard()):
        metric, label = LABEL_VALUES.match(variable["query"]["query"]).groups()  # type: ignore[union-attr]
        assert CHOSEN[variable["name"]] in stack.label_values(label, metric), variable["name"]

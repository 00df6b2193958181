"""A real Prometheus (Debian's ``prometheus`` package) scrapes the real gateway with deploy/prometheus/prometheus.yml.

The scrape jobs are the deploy file's own (job names, metrics paths), pointed at this run's ports with a 1 s
interval. The token counts Prometheus answers must equal the usage the OpenAI SDK returned, and every PromQL
expression of the Grafana dashboard must run, and name only metrics Prometheus has scraped: a renamed
metric or label breaks this test, not a user's dashboard.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tokenvoy.json"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
INSTALL_HINT = "install Debian's `prometheus` package: apt-get install -y prometheus"
BUDGET = 60  # tokens per user per hour: small enough that "hog" is refused within a few requests
MESSAGES = [{"role": "user", "content": "hello prometheus"}]
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
    """What the clients saw: the usage of every answered request, and the requests refused by the budget."""

    input_tokens: dict[str, int] = field(default_factory=dict)  # per user
    output_tokens: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    refused: int = 0


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


def send_traffic(gateway: Gateway) -> Sent:
    sent = Sent()

    def client(user: str) -> OpenAI:
        return OpenAI(
            base_url=f"{gateway.url}/v1", api_key="unused", default_headers={"x-user-id": user}, max_retries=0
        )

    def count(user: str, usage: Any) -> None:
        sent.input_tokens[user] = sent.input_tokens.get(user, 0) + usage.prompt_tokens
        sent.output_tokens[user] = sent.output_tokens.get(user, 0) + usage.completion_tokens
        sent.answered += 1

    alice, bob, hog = client("alice"), client("bob"), client("hog")
    for max_tokens in (3, 8):
        count(
            "alice", alice.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=max_tokens).usage
        )
    chunks = list(
        bob.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    count("bob", chunks[-1].usage)
    # hog spends its budget until the gateway refuses it (the charge lands just after each answer).
    for _ in range(BUDGET // 10 + 8):
        try:
            count("hog", hog.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=10).usage)
        except openai.RateLimitError:
            sent.refused += 1
            break
        time.sleep(0.1)
    assert sent.refused == 1, f"hog was never refused by a {BUDGET}-token budget"
    return sent


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
        yield Stack(gateway, url, log, send_traffic(gateway))
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
        # the one refusal, as extproc and as Envoy saw it
        'sum(gen_ai_server_request_duration_seconds_count{error_type="429", user="hog"})': sent.refused,
        "sum(envoy_cluster_ratelimit_over_limit)": sent.refused,
    }

    def answers() -> dict[str, float | None]:
        return {expr: stack.scalar(expr) for expr in queries}

    def all_equal() -> bool:
        return answers() == {expr: float(value) for expr, value in queries.items()}

    wait_until("Prometheus' counts equal the clients'", all_equal, 30, lambda: f"expected {queries}\ngot {answers()}")
    expected_cost = (total_in * 0.15 + total_out * 0.6) / 1e6
    assert stack.scalar("sum(tokenvoy_cost_usd_total)") == pytest.approx(expected_cost, rel=1e-9)


# ---------------------------------------------------------------- the Grafana dashboard's queries

VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$__interval": "5s"}
LABEL_VALUES = re.compile(r"^label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)$")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every target, nested rows included."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            out.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard()["panels"])
    return out


def substitute(expr: str) -> str:
    """Grafana's variables: built-in intervals by durations, the dashboard's own (All) by `.*`."""
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    names = [v["name"] for v in dashboard()["templating"]["list"]]
    for name in sorted(names, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside `{...}` and grouping clauses."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    return set(re.findall(r"\b((?:gen_ai|tokenvoy|envoy)_[a-zA-Z0-9_:]+)", stripped))


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="x"}'
        '[1m])) / ignoring(error_type) group_left() sum(rate(gen_ai_x_count{error_type!=""}[1m]))'
    )
    assert metric_names_in(expr) == {"envoy_http_downstream_rq_xx", "gen_ai_x_count"}


def test_every_dashboard_query_runs_against_prometheus(stack: Stack) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for _, expr in exprs:
        stack.query(substitute(expr))  # asserts the query parses and runs
    # A query that finds nothing succeeds too, so also require data: the module's traffic (answers, a stream, a
    # refusal, a priced model) gives every panel some once Prometheus has scraped twice (a rate needs two samples).

    def empty() -> list[tuple[str, str]]:
        return [(title, expr) for title, expr in exprs if not stack.query(substitute(expr))]

    wait_until("every dashboard query returns data", lambda: not empty(), 30, lambda: f"no data: {empty()}")


def test_every_metric_the_dashboard_names_is_scraped(stack: Stack) -> None:
    wanted = set().union(*(metric_names_in(expr) for _, expr in dashboard_exprs()))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, variable["query"]
            wanted.add(match.group(1))
    assert any(name.startswith("envoy_") for name in wanted)
    assert any(name.startswith("tokenvoy_ratelimit_") for name in wanted)
    wait_until(
        "every metric of the dashboard in Prometheus",
        lambda: wanted <= stack.metric_names(),
        30,
        lambda: f"missing: {sorted(wanted - stack.metric_names())}",
    )


def test_every_dashboard_variable_has_values(stack: Stack) -> None:
    """label_values(metric, label) of each filter finds the values the traffic carried."""
    expected = {"model": "gpt-4o-mini", "provider": "openai", "user": "alice", "client": "openai-python"}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = LABEL_VALUES.match(variable["query"]["query"]).groups()  # type: ignore[union-attr]
        reply = httpx.get(f"{stack.prometheus_url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10)
        assert expected[variable["name"]] in reply.json()["data"], (variable["name"], reply.text)

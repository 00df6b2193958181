#!/usr/bin/env python3
"""What each kind of answer costs in ext_proc messages and CPU: a plain 200, a provider error that passes
through as it is, a translated provider error, and Envoy's own 429 for a user over budget.

Each gRPC message is a round trip between Envoy and the Python extproc (bench/README.md): this prints, per
kind of request, the messages Envoy counted on its router and upstream ext_proc streams and the CPU µs
per request of Envoy, extproc and ratelimit, all under the same wrk load (``tokenvoy run`` with the
default config, one shared fake provider). Run it on two checkouts to compare them: the numbers are only
comparable on the same, otherwise quiet, machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.gateway import (
    CHAT_PATH,
    HOST,
    WRK_DONE,
    Processes,
    chat_body,
    cpu_seconds,
    envoy_counters,
    free_port,
    gateway_config_yaml,
    http_request,
    run_wrk,
    start_tokenvoy,
    wait_until,
)

OVER_BUDGET_USER = "bench-over-budget"
BUDGET_TOKENS = 50  # a few requests exhaust it; the other kinds send no x-user-id (no budget applies)
# (title, path, extra headers)
KINDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "plain": ("plain 200 (OpenAI client, OpenAI backend)", CHAT_PATH, {}),
    "error": ("provider 503, passed through as it is", CHAT_PATH, {"x-testupstream-status": "503"}),
    "translated_error": (
        "provider 503, translated (Anthropic client)",
        "/anthropic/v1/messages",
        {"x-testupstream-status": "503", "anthropic-version": "2023-06-01"},
    ),
    "over_budget": ("Envoy's 429, user over budget", CHAT_PATH, {"x-user-id": OVER_BUDGET_USER}),
}


EXPECTED = {"plain": "2xx", "error": "5xx", "translated_error": "5xx", "over_budget": "4xx"}  # status class


def _script(path: str, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{chat_body(False).decode()}]==]"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    lines.append(f'wrk.path = "{path}"')
    lines.append(WRK_DONE)
    return "\n".join(lines)


def _budgeted(config_text: str) -> str:
    docs = list(yaml.safe_load_all(config_text))
    for doc in docs:
        if doc["kind"] == "BackendTrafficPolicy":
            doc["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["requests"] = BUDGET_TOKENS
    return yaml.safe_dump_all(docs, sort_keys=False)


def measure(args: argparse.Namespace, run_dir: Path, procs: Processes) -> dict[str, dict[str, Any]]:
    fake_port, port, admin = free_port(), free_port(), free_port()
    log = run_dir / "fake.log"
    fake = procs.start("fake provider", ["tokenvoy", "testupstream", "--host", HOST, "--port", str(fake_port)], log)
    wait_until("fake provider", lambda: http_request(fake_port, "GET", "/health")[0] == 200, fake, log)
    (run_dir / "gateway.yaml").write_text(_budgeted(gateway_config_yaml(port, fake_port)))
    _, children, _ = start_tokenvoy(procs, run_dir, "tokenvoy", None, admin)
    body = chat_body(False)
    for _ in range(20):  # spend the over-budget user's tokens (each request costs about 30)
        status, _, _ = http_request(port, "POST", CHAT_PATH, body, {"x-user-id": OVER_BUDGET_USER})
        if status == 429:
            break
        time.sleep(0.2)  # the charge lands at stream end
    else:
        raise RuntimeError("the over-budget user never got a 429")

    results: dict[str, dict[str, Any]] = {}
    for round_ in range(args.rounds):  # kinds interleaved; per kind the least CPU per request is kept
        for kind, (_title, path, headers) in KINDS.items():
            result = _one(args, run_dir, port, admin, children, kind, path, headers, warm=round_ == 0)
            best = results.get(kind)
            if best is None or _total_us(result) < _total_us(best):
                results[kind] = result
    return results


def _total_us(result: dict[str, Any]) -> float:
    return sum(result["cpu_us_per_request"].values())


def _one(
    args: argparse.Namespace,
    run_dir: Path,
    port: int,
    admin: int,
    children: dict[str, int],
    kind: str,
    path: str,
    headers: dict[str, str],
    warm: bool,
) -> dict[str, Any]:
    """One measured wrk run of one kind of request, with the CPU and Envoy counters around it."""
    script = run_dir / f"wrk-{kind}.lua"
    if warm:
        script.write_text(_script(path, headers))
        run_wrk(args.wrk, script, port, args.concurrency, 1, args.warmup)
    counters = envoy_counters(admin)
    cpu = {role: cpu_seconds(pid) for role, pid in children.items()}
    result = run_wrk(args.wrk, script, port, args.concurrency, 1, args.duration)
    after = envoy_counters(admin)
    requests = max(result["requests"], 1)
    grown = {name: value - counters.get(name, 0) for name, value in after.items()}
    router = grown.get("http.tokenvoy.ext_proc.stream_msgs_sent", 0)
    upstream = sum(v for k, v in grown.items() if k.startswith("cluster.rule/") and k.endswith(".stream_msgs_sent"))
    return {
        "requests": result["requests"],
        "rps": result["rps"],
        "router_messages": router / requests,
        "upstream_messages": upstream / requests,
        "cpu_us_per_request": {role: (cpu_seconds(pid) - cpu[role]) * 1e6 / requests for role, pid in children.items()},
        "statuses": {code: grown.get(f"http.tokenvoy.downstream_rq_{code}", 0) for code in ("2xx", "4xx", "5xx")},
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| request | ext_proc messages (router + upstream) | Envoy µs | extproc µs | ratelimit µs | req/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, result in results.items():
        cpu = result["cpu_us_per_request"]
        messages = f"{result['router_messages']:.1f} + {result['upstream_messages']:.1f}"
        rows.append(
            f"| {KINDS[kind][0]} | {messages} | {cpu['envoy']:.0f} | {cpu['extproc']:.0f} | "
            f"{cpu['ratelimit']:.0f} | {result['rps']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every kind this many times, interleaved; the run with the "
        "least CPU per request is kept, the one least disturbed by other jobs (default 3)",
    )
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    args = parser.parse_args(argv)
    if shutil.which(args.wrk) is None or shutil.which("tokenvoy") is None:
        print("bench: needs wrk and the tokenvoy CLI on PATH (activate the venv)", file=sys.stderr)
        return 2
    args.wrk = shutil.which(args.wrk)
    procs = Processes()
    run_dir = Path(tempfile.mkdtemp(prefix="tokenvoy-phases-"))
    try:
        results = measure(args, run_dir, procs)
    finally:
        procs.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    print(table(results))
    for kind, result in results.items():
        unexpected = {code: n for code, n in result["statuses"].items() if n and code != EXPECTED[kind]}
        if unexpected:
            print(f"- WARNING: {kind} answers outside {EXPECTED[kind]}: {unexpected}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""How far past its budget does a burst of concurrent clients get? Check-then-charge vs reservation.

For each budget mode it starts the whole gateway with ``tokenvoy run`` (real Envoy from the wheel, extproc,
ratelimit, the fake provider; free ports on 127.0.0.1) with one per-user budget of ``--budget`` tokens
(B) and drives it with ``--clients`` concurrent clients (asyncio + httpx), all as the same user. Each
client sends chat completions with ``max_tokens`` drawn from ``[--max-tokens/2, --max-tokens]`` (every
request costs at most C = prompt + ``--max-tokens`` tokens) and stops at its first 429, or when
``--time-limit`` runs out. The fake provider holds every answer ``--delay-ms`` so that requests overlap,
as LLM calls do.

Printed side by side: requests admitted and rejected, tokens admitted (the sum of ``usage.total_tokens``
of the 200 answers), overshoot = admitted - B, and overshoot / C.

* **check-then-charge** (Envoy Gateway's shape): the request-time call only checks (hits 0), so every
  request that arrives before the first answers are charged is admitted: overshoot up to (clients - 1)·C
  and more with slow answers.
* **reservation** (``tokenvoy.io/budget-mode: reservation``): the request-time call reserves the
  estimate, so the in-flight estimates plus the settled costs never exceed B: admitted ≤ B + C.

``--unit usd`` makes it a USD budget (``llm_cost_usd_centicents``: B and C in centi-cents, 10^-4 USD) on
``claude-sonnet-4-6`` ($3 / $15 per million tokens in the bundled catalog); the admitted cost is computed
from each answer's usage with the catalog's prices. ``--redis`` starts a ``redis-server`` and
``--replicas N`` runs N whole gateways (each its own Envoy, extproc and ratelimit) on that one Redis, the
clients spread over them round-robin: one budget enforced by N ratelimit replicas.

Never asserts anything; a benchmark prints numbers. Every process it starts is stopped on
exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import httpx
import yaml

from tokenvoy.config.catalog import BUNDLED_PRICES
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import BUDGET_MODE_ANNOTATION
from tokenvoy.config.model import COST_USD_CENTICENTS_KEY
from tokenvoy.extproc.estimate import prompt_tokens

CHAT_PATH = "/v1/chat/completions"
MODELS = {"tokens": "gpt-4o-mini", "usd": "claude-sonnet-4-6"}
UNIT_NAMES = {"tokens": "tokens", "usd": "centi-cents"}
PROMPT = "hello there"
USER_HEADER = "x-user-id"
STARTUP_TIMEOUT_S = 90.0
MODES = ("check", "reservation")
MODE_TITLES = {"check": "check-then-charge", "reservation": "reservation"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gateway_yaml(listener_port: int, fake_port: int, budget: int, mode: str, unit: str) -> str:
    """The embedded default config, with its ports, budget, budget mode and unit changed."""
    documents = list(yaml.safe_load_all(default_config_yaml({})))
    for doc in documents:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        elif doc["kind"] == "BackendTrafficPolicy":
            rule = doc["spec"]["rateLimit"]["global"]["rules"][0]
            rule["limit"]["requests"] = budget
            if unit == "usd":
                rule["limit"]["unit"] = "Day"
                rule["cost"]["response"]["metadata"]["key"] = COST_USD_CENTICENTS_KEY
            doc["metadata"].setdefault("annotations", {})[BUDGET_MODE_ANNOTATION] = mode
    return yaml.safe_dump_all(documents, sort_keys=False)


def cost_of(usage: dict, unit: str) -> int:
    """What one answer costs the budget: its tokens, or its catalog price in centi-cents (rounded up)."""
    if unit == "tokens":
        return usage["total_tokens"]
    price = next(p for p in BUNDLED_PRICES if p.model == MODELS["usd"])
    micro = Fraction(usage["prompt_tokens"]) * Fraction(str(price.input_per_million))
    micro += Fraction(usage["completion_tokens"]) * Fraction(str(price.output_per_million))
    return math.ceil(micro / 100)


def cost_cap(args: argparse.Namespace) -> int:
    """C: the reservation estimate of the largest request, in the budget's unit (it covers its cost)."""
    prompt = prompt_tokens({"messages": [{"role": "user", "content": PROMPT}]})
    if args.unit == "tokens":
        return prompt + args.max_tokens
    price = next(p for p in BUNDLED_PRICES if p.model == MODELS["usd"])
    micro = Fraction(prompt) * Fraction(str(price.input_per_million))
    micro += Fraction(args.max_tokens) * Fraction(str(price.output_per_million))
    return math.ceil(micro / 100)


class Redis:
    """A throwaway ``redis-server`` on a free port (no persistence)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Stack:
    """``tokenvoy run`` in its own session; stopped (SIGINT, then SIGKILL) by :meth:`stop`."""

    def __init__(self, directory: Path, budget: int, mode: str, unit: str, redis_url: str | None = None) -> None:
        listener_port, fake_port = free_port(), free_port()
        config = directory / "gateway.yaml"
        config.write_text(gateway_yaml(listener_port, fake_port, budget, mode, unit))
        self.url = f"http://127.0.0.1:{listener_port}"
        self.stderr_path = directory / "stderr.log"
        argv = [sys.executable, "-m", "tokenvoy", "run", "--config", str(config), "--port", str(listener_port)]
        argv += ["--run-dir", str(directory / "run"), "--admin-port", str(free_port())]
        argv += ["--metrics-port", "0", "--ratelimit-metrics-port", "0", "--log-level", "warning"]
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        if redis_url:
            env["REDIS_URL"] = redis_url  # the ratelimit child counts in this Redis
        with (directory / "stdout.log").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while "tokenvoy: ready" not in self.stderr_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"tokenvoy run did not start:\n{self.stderr_path.read_text(errors='replace')}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Result:
    admitted: int = 0
    rejected: int = 0
    errors: int = 0
    tokens: int = 0
    seconds: float = 0.0


async def drive(urls: list[str], args: argparse.Namespace, user: str) -> Result:
    result = Result()
    deadline = time.monotonic() + args.time_limit
    rng = random.Random(args.seed)
    headers = {USER_HEADER: user, "x-testupstream-delay-ms": str(args.delay_ms)}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            body = {
                "model": MODELS[args.unit],
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": rng.randint(args.max_tokens // 2, args.max_tokens),
            }
            try:
                response = await http.post(CHAT_PATH, json=body, headers=headers)
            except httpx.HTTPError:
                result.errors += 1
                continue
            if response.status_code == 429:
                result.rejected += 1
                return
            if response.status_code != 200:
                result.errors += 1
                continue
            result.admitted += 1
            result.tokens += cost_of(response.json()["usage"], args.unit)

    started = time.monotonic()
    https = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in urls]
    try:
        await asyncio.gather(*(client(https[index % len(https)]) for index in range(args.clients)))
    finally:
        for http in https:
            await http.aclose()
    result.seconds = time.monotonic() - started
    return result


def table(results: dict[str, Result], budget: int, cost_cap: int, unit: str = "tokens") -> str:
    rows = [
        ("requests admitted (200)", lambda r: f"{r.admitted}"),
        ("requests rejected (429)", lambda r: f"{r.rejected}"),
        ("other errors", lambda r: f"{r.errors}"),
        (f"{UNIT_NAMES[unit]} admitted", lambda r: f"{r.tokens}"),
        ("overshoot (admitted - B)", lambda r: f"{r.tokens - budget:+d}"),
        ("overshoot / C", lambda r: f"{(r.tokens - budget) / cost_cap:+.2f}"),
        ("bound B + C holds", lambda r: "yes" if r.tokens <= budget + cost_cap else "NO"),
        ("wall time (s)", lambda r: f"{r.seconds:.1f}"),
    ]
    width = max(len(label) for label, _ in rows)
    titles = [MODE_TITLES[m] for m in results]
    columns = [max(len(t), 12) for t in titles]
    lines = [" | ".join([" " * width, *(t.rjust(c) for t, c in zip(titles, columns, strict=True))])]
    lines.append("-+-".join(["-" * width, *("-" * c for c in columns)]))
    for label, cell in rows:
        values = [cell(r).rjust(c) for r, c in zip(results.values(), columns, strict=True)]
        lines.append(" | ".join([label.ljust(width), *values]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=5000, help="B: the user's token budget (default 5000)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--max-tokens", type=int, default=200, help="largest max_tokens of a request (default 200)")
    parser.add_argument("--delay-ms", type=int, default=200, help="fake provider answer delay (default 200)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per mode (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: check,reservation")
    parser.add_argument("--unit", choices=("tokens", "usd"), default="tokens", help="what the budget counts")
    parser.add_argument("--redis", action="store_true", help="counters in a redis-server started for the run")
    parser.add_argument("--replicas", type=int, default=1, help="gateways (ratelimit replicas) on one Redis")
    args = parser.parse_args(argv)
    if args.replicas > 1 and not args.redis:
        parser.error("--replicas > 1 needs --redis: replicas share their counters through Redis")
    cap = cost_cap(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="tokenvoy-bench-budgets-") as tmp:
        redis = Redis(Path(tmp)) if args.redis else None
        try:
            for mode in modes:
                stacks: list[Stack] = []
                try:
                    for replica in range(args.replicas):
                        directory = Path(tmp) / f"{mode}-{replica}"
                        directory.mkdir()
                        stacks.append(Stack(directory, args.budget, mode, args.unit, redis.url if redis else None))
                    user = f"bench-{mode}-{os.getpid()}-{time.time_ns()}"
                    results[mode] = asyncio.run(drive([stack.url for stack in stacks], args, user))
                finally:
                    for stack in stacks:
                        stack.stop()
        finally:
            if redis is not None:
                redis.stop()
    where = f"Redis, {args.replicas} gateway replica(s)" if redis else "counters in memory, 1 gateway"
    unit = UNIT_NAMES[args.unit]
    print(
        f"budget B = {args.budget} {unit} per user ({MODELS[args.unit]}), {args.clients} concurrent clients, "
        f"max_tokens ≤ {args.max_tokens}, C = {cap} {unit} (estimate of the largest request), "
        f"provider delay {args.delay_ms} ms, {where}\n"
    )
    print(table(results, args.budget, cap, args.unit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

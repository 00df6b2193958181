#!/usr/bin/env python3
"""How far past its token budget does a burst of concurrent clients get? Check-then-charge vs reservation.

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

Never asserts anything; a benchmark prints numbers (DESIGN.md §6). Every process it starts is stopped on
exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import BUDGET_MODE_ANNOTATION
from tokenvoy.extproc.estimate import prompt_tokens

CHAT_PATH = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
PROMPT = "hello there"
USER_HEADER = "x-user-id"
STARTUP_TIMEOUT_S = 90.0
MODES = ("check", "reservation")
MODE_TITLES = {"check": "check-then-charge", "reservation": "reservation"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gateway_yaml(listener_port: int, fake_port: int, budget: int, mode: str) -> str:
    """The embedded default config, with its ports, budget and budget mode changed."""
    documents = list(yaml.safe_load_all(default_config_yaml({})))
    for doc in documents:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        elif doc["kind"] == "BackendTrafficPolicy":
            doc["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["requests"] = budget
            doc["metadata"].setdefault("annotations", {})[BUDGET_MODE_ANNOTATION] = mode
    return yaml.safe_dump_all(documents, sort_keys=False)


class Stack:
    """``tokenvoy run`` in its own session; stopped (SIGINT, then SIGKILL) by :meth:`stop`."""

    def __init__(self, directory: Path, budget: int, mode: str) -> None:
        listener_port, fake_port = free_port(), free_port()
        config = directory / "gateway.yaml"
        config.write_text(gateway_yaml(listener_port, fake_port, budget, mode))
        self.url = f"http://127.0.0.1:{listener_port}"
        self.stderr_path = directory / "stderr.log"
        argv = [sys.executable, "-m", "tokenvoy", "run", "--config", str(config), "--port", str(listener_port)]
        argv += ["--run-dir", str(directory / "run"), "--admin-port", str(free_port())]
        argv += ["--metrics-port", "0", "--ratelimit-metrics-port", "0", "--log-level", "warning"]
        with (directory / "stdout.log").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
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


async def drive(url: str, args: argparse.Namespace, user: str) -> Result:
    result = Result()
    deadline = time.monotonic() + args.time_limit
    rng = random.Random(args.seed)
    headers = {USER_HEADER: user, "x-testupstream-delay-ms": str(args.delay_ms)}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            body = {
                "model": MODEL,
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
            result.tokens += response.json()["usage"]["total_tokens"]

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(args.clients)))
    result.seconds = time.monotonic() - started
    return result


def table(results: dict[str, Result], budget: int, cost_cap: int) -> str:
    rows = [
        ("requests admitted (200)", lambda r: f"{r.admitted}"),
        ("requests rejected (429)", lambda r: f"{r.rejected}"),
        ("other errors", lambda r: f"{r.errors}"),
        ("tokens admitted", lambda r: f"{r.tokens}"),
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
    args = parser.parse_args(argv)
    prompt_cost = prompt_tokens({"messages": [{"role": "user", "content": PROMPT}]})
    cost_cap = prompt_cost + args.max_tokens  # C: the reservation estimate of the largest request (≥ its cost)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="tokenvoy-bench-budgets-") as tmp:
        for mode in modes:
            directory = Path(tmp) / mode
            directory.mkdir()
            stack = Stack(directory, args.budget, mode)
            try:
                user = f"bench-{mode}-{os.getpid()}-{time.time_ns()}"
                results[mode] = asyncio.run(drive(stack.url, args, user))
            finally:
                stack.stop()
    print(
        f"budget B = {args.budget} tokens/user/hour, {args.clients} concurrent clients, "
        f"max_tokens ≤ {args.max_tokens}, C = {cost_cap} (estimate of the largest request), "
        f"provider delay {args.delay_ms} ms\n"
    )
    print(table(results, args.budget, cost_cap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

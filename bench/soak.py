#!/usr/bin/env python3
"""Soak: mixed traffic at a fixed rate through ``tokenvoy run`` for a long time; does anything leak or drift?

It starts the whole gateway with ``tokenvoy run`` (real Envoy from the wheel, extproc, ratelimit, the fake
providers; free ports on 127.0.0.1) with the default config's one model per backend schema, and sends
``--rate`` requests a second (asyncio + httpx, at most ``--concurrency`` in flight: a tick that finds every
slot busy is counted as *skipped*, never queued) for ``--duration`` seconds, round-robin over the chat
models of every schema. Each request is one of four kinds, each kind under its own ``x-user-id`` and its
own budget rule, so the ratelimit process counts each kind apart:

* **plain**: a chat completion; **stream**: the same, ``stream: true``, read to its end;
* **cut**: a stream of a 200-word prompt whose client hangs up at the first content event;
* **error**: a provider 503 or 404 (the fake's ``x-testupstream-status``): the only error types expected.
  Anything else (another status, a transport error, a timeout) is an *unexpected* error.

Printed, side by side per process (envoy, extproc, ratelimit, fake): RSS (``VmRSS``) at start, after the
warm-up and at the end, and its growth since the warm-up; then requests and errors by type; then per kind
the tokens charged (the ratelimit process's ``hits - refunded`` for the kind's rule) against what the fake
provider reported (its ``GET /__testupstream/usage``), and the drift.

The run **fails** (exit 1) on a behaviour bound, never on a speed:

* an unexpected error type, or a child process restarted (its pid changed);
* plain and stream drift beyond ±1% of what the fake reported (both are charged the provider's exact
  usage; the stream-done charge is fire-and-forget, so a charge lost under load shows here);
* errors charged anything;
* cut streams charged less than their prompt as the fake counted it plus one output token each, or more
  than the gateway's prompt estimate plus 16 output tokens each (docs/budgets.md, "Streams cut short");
* any process whose RSS grew beyond 2x its post-warm-up RSS + 64 MiB (a generous bound: a leak of even a
  few hundred bytes per request shows well before it over 30 minutes).

Profiles: ``--profile full`` (default; 30 minutes at 8 req/s) and ``--profile ci`` (3 minutes);
``--duration``/``--rate`` override either. Every process it starts is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import yaml

from tokenvoy.config.defaults import SHOWCASE_MODELS, default_config_yaml
from tokenvoy.extproc.estimate import prompt_tokens
from tokenvoy.extproc.streamcharge import HEADROOM_TOKENS

PROFILES = {"full": (1800.0, 8.0), "ci": (180.0, 8.0)}  # (duration s, requests/s)
KINDS = ("plain", "stream", "cut", "error")
WEIGHTS = {"plain": 4, "stream": 4, "cut": 2, "error": 2}  # a repeating pattern of 12 requests
EXPECTED_ERRORS = {"error": {"503 provider", "404 provider"}}
CHAT_MODELS = [model for model, _, _ in SHOWCASE_MODELS if "embed" not in model]
PROMPT = "hello there, how is the weather today"
CUT_PROMPT = "tokens " * 200
MAX_TOKENS = 24
STARTUP_TIMEOUT_S = 90.0
WARMUP_S = 10.0
DRIFT_BOUND = 0.01
RSS_FACTOR, RSS_SLACK_KIB = 2.0, 64 * 1024
# how each child is recognised: the envoy binary, else the ``-m tokenvoy <command>`` of its Python command line
CHILDREN = {
    "envoy": "envoy",
    "extproc": "tokenvoy extproc",
    "ratelimit": "tokenvoy ratelimit",
    "fake": "tokenvoy testupstream",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gateway_yaml(listener_port: int, fake_port: int) -> str:
    """The default config with every schema's model, one budget rule per traffic kind (Exact user)."""
    documents = list(yaml.safe_load_all(default_config_yaml({}, showcase=True)))
    for doc in documents:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        elif doc["kind"] == "BackendTrafficPolicy":
            (template,) = doc["spec"]["rateLimit"]["global"]["rules"]
            rules = []
            for kind in KINDS:
                rule = orjson.loads(orjson.dumps(template))
                rule["clientSelectors"] = [
                    {"headers": [{"name": "x-user-id", "type": "Exact", "value": f"soak-{kind}"}]}
                ]
                rule["limit"] = {"requests": 4_000_000_000, "unit": "Hour"}
                rules.append(rule)
            doc["spec"]["rateLimit"]["global"]["rules"] = rules
    return yaml.safe_dump_all(documents, sort_keys=False)


class Stack:
    """``tokenvoy run`` in its own session; stopped (SIGINT, then SIGKILL) by :meth:`stop`."""

    def __init__(self, directory: Path) -> None:
        self.listener_port, self.fake_port = free_port(), free_port()
        self.rl_metrics_port = free_port()
        config = directory / "gateway.yaml"
        config.write_text(gateway_yaml(self.listener_port, self.fake_port))
        argv = [sys.executable, "-m", "tokenvoy", "run", "--config", str(config), "--run-dir", str(directory / "run")]
        argv += ["--admin-port", str(free_port()), "--metrics-port", str(free_port())]
        argv += ["--ratelimit-metrics-port", str(self.rl_metrics_port)]
        self.stderr_path = directory / "stderr.log"
        with (directory / "stdout.log").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while "tokenvoy: ready" not in self.stderr_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"tokenvoy run did not start:\n{self.stderr_path.read_text(errors='replace')}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    def children(self) -> dict[str, int]:
        """name → pid of each child process (envoy, extproc, ratelimit, fake)."""
        found = {}
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):  # children of every thread
            try:
                pids += (task / "children").read_text().split()
            except OSError:
                continue
        for pid in pids:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(Path(arg).name == "envoy" for arg in args[:2]):  # the binary, or a launcher script
                command = "envoy"
            else:
                command = " ".join(args[2:4]) if args[1:2] == ["-m"] else ""
            for name, marker in CHILDREN.items():
                if marker == command and name not in found:
                    found[name] = int(pid)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, error type)
    skipped: int = 0
    cut_requests: int = 0

    def unexpected(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.errors.items() if key[1] not in EXPECTED_ERRORS.get(key[0], set())}


async def one_request(http: httpx.AsyncClient, kind: str, model: str, tally: Tally) -> None:
    headers = {"x-user-id": f"soak-{kind}"}
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    body["max_tokens"] = MAX_TOKENS
    error_type = None
    try:
        if kind == "plain":
            reply = await http.post("/v1/chat/completions", json=body, headers=headers)
            error_type = None if reply.status_code == 200 and reply.json().get("usage") else f"{reply.status_code}"
        elif kind == "error":
            status = 404 if tally.sent[kind] % 2 else 503
            headers["x-testupstream-status"] = str(status)  # the fake answers that error, in its schema's shape
            expected = (status, f"{status} provider")
            reply = await http.post("/v1/chat/completions", json=body, headers=headers)
            error_type = expected[1] if reply.status_code == expected[0] else f"{reply.status_code} instead of error"
        else:
            body["stream"] = True
            if kind == "cut":
                body["messages"] = [{"role": "user", "content": CUT_PROMPT}]
                headers["x-testupstream-chunk-delay-ms"] = "100"
            error_type = await _stream(http, body, headers, cut=kind == "cut")
            if kind == "cut" and error_type is None:
                tally.cut_requests += 1
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        error_type = type(exc).__name__
    if error_type is not None:
        tally.errors[(kind, error_type)] += 1


async def _stream(http: httpx.AsyncClient, body: dict[str, object], headers: dict[str, str], cut: bool) -> str | None:
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply:
        if reply.status_code != 200:
            await reply.aread()
            return f"{reply.status_code}"
        done = False
        async for line in reply.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif cut and line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    return None  # hang up: leaving the block closes the connection mid-stream
        return None if done else "stream without [DONE]"


async def drive(url: str, duration: float, rate: float, concurrency: int, tally: Tally) -> None:
    pattern = [kind for kind in KINDS for _ in range(WEIGHTS[kind])]
    kinds, models = itertools.cycle(pattern), itertools.cycle(CHAT_MODELS)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        start = time.monotonic()
        for tick in itertools.count():
            at = start + tick / rate
            if at - start >= duration:
                break
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            kind = next(kinds)
            if slots.locked():
                tally.skipped += 1
                continue
            await slots.acquire()
            tally.sent[kind] += 1
            task = asyncio.create_task(one_request(http, kind, next(models), tally))
            task.add_done_callback(lambda _t: slots.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


def charged_by_kind(stack: Stack) -> dict[str, int]:
    """hits - refunded of each kind's budget rule, from the ratelimit process's /metrics."""
    net = dict.fromkeys(KINDS, 0.0)
    text = httpx.get(f"http://127.0.0.1:{stack.rl_metrics_port}/metrics", timeout=10).text
    for line in text.splitlines():
        sign = 1 if line.startswith("tokenvoy_ratelimit_hits_total{") else 0
        sign = -1 if line.startswith("tokenvoy_ratelimit_refunded_hits_total{") else sign
        if sign:
            for kind in KINDS:
                if f"soak-{kind}" in line:
                    net[kind] += sign * float(line.rsplit(" ", 1)[1])
    return {kind: int(value) for kind, value in net.items()}


def settled_charges(stack: Stack) -> dict[str, int]:
    """The charges once the last fire-and-forget stream-done calls have landed (stable for 3 reads)."""
    seen: list[dict[str, int]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = [*seen[-2:], charged_by_kind(stack)]
        if len(seen) == 3 and seen[0] == seen[1] == seen[2]:
            break
        time.sleep(0.5)
    return seen[-1]


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--duration", type=float, help="seconds of measured traffic (after a 10 s warm-up)")
    parser.add_argument("--rate", type=float, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most (default 16)")
    parser.add_argument("--run-dir", type=Path, help="keep configs and logs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    duration, rate = PROFILES[args.profile]
    duration, rate = args.duration or duration, args.rate or rate
    directory = args.run_dir or Path(tempfile.mkdtemp(prefix="tokenvoy-soak-"))
    directory.mkdir(parents=True, exist_ok=True)
    stack = Stack(directory)
    try:
        return run(stack, duration, rate, args.concurrency)
    finally:
        stack.stop()


def run(stack: Stack, duration: float, rate: float, concurrency: int) -> int:
    rss_boot = {name: rss_kib(pid) for name, pid in stack.children().items()}
    warmup = Tally()
    asyncio.run(drive(stack.url, WARMUP_S, rate, concurrency, warmup))
    children = stack.children()
    rss_start = {name: rss_kib(pid) for name, pid in children.items()}
    base_charged = settled_charges(stack)
    base_usage = httpx.get(f"http://127.0.0.1:{stack.fake_port}/__testupstream/usage").json()["by_user"]
    tally = Tally()
    began = time.monotonic()
    asyncio.run(drive(stack.url, duration, rate, concurrency, tally))
    elapsed = time.monotonic() - began
    charged = settled_charges(stack)
    usage = httpx.get(f"http://127.0.0.1:{stack.fake_port}/__testupstream/usage").json()["by_user"]
    children_end = stack.children()
    rss_end = {name: rss_kib(pid) for name, pid in children_end.items()}
    failures: list[str] = []

    print(f"soak: {elapsed:.0f} s at {rate:g} req/s, at most {concurrency} in flight, after a {WARMUP_S:g} s warm-up\n")
    columns: dict[str, list[str]] = {}
    for name in CHILDREN:
        boot, start, end = rss_boot.get(name, 0), rss_start.get(name, 0), rss_end.get(name, 0)
        columns[name] = [*(f"{kib / 1024:.1f}" for kib in (boot, start, end)), f"{(end - start) / 1024:+.1f}"]
        if children.get(name) != children_end.get(name):
            failures.append(f"{name} restarted (pid {children.get(name)} -> {children_end.get(name)})")
        elif end > start * RSS_FACTOR + RSS_SLACK_KIB:
            failures.append(f"{name} RSS grew from {start} KiB to {end} KiB")
    labels = ["RSS at start (MiB)", "RSS after warm-up (MiB)", "RSS at end (MiB)", "growth since warm-up (MiB)"]
    rows = [[label, *(columns[name][i] for name in CHILDREN)] for i, label in enumerate(labels)]
    print(table(["process", *CHILDREN], rows) + "\n")

    rows = []
    for kind in KINDS:
        errors = {t: n for (k, t), n in tally.errors.items() if k == kind}
        shown = ", ".join(f"{t}: {n}" for t, n in sorted(errors.items())) or "none"
        rows.append([kind, tally.sent[kind], shown])
    rows.append(["skipped (all slots busy)", tally.skipped, ""])
    print(table(["kind", "requests", "errors by type"], rows) + "\n")
    for (kind, error_type), n in tally.unexpected().items():
        failures.append(f"{n} unexpected {error_type!r} errors on {kind} requests")

    rows = []
    estimate = prompt_tokens({"messages": [{"role": "user", "content": CUT_PROMPT}]})
    for kind in KINDS:
        key = f"soak-{kind}"
        got = charged[kind] - base_charged[kind]
        before = base_usage.get(key, {})
        now = usage.get(key, {})
        reported = now.get("total_tokens", 0) - before.get("total_tokens", 0)
        reported_input = now.get("input_tokens", 0) - before.get("input_tokens", 0)
        drift = got - reported
        rows.append([kind, got, reported, f"{drift:+d}", f"{drift / reported:+.2%}" if reported else "-"])
        if kind in ("plain", "stream") and abs(drift) > DRIFT_BOUND * reported:
            failures.append(f"{kind}: charged {got}, the provider reported {reported} (beyond ±{DRIFT_BOUND:.0%})")
        if kind == "error" and got:
            failures.append(f"errors were charged {got} tokens")
        if kind == "cut":
            cuts = tally.cut_requests
            low, high = reported_input + cuts, cuts * (max(estimate, reported_input // max(cuts, 1)) + HEADROOM_TOKENS)
            if not low <= got <= high:
                failures.append(f"{cuts} cut streams charged {got}, expected between {low} and {high}")
    print(table(["kind", "charged (tokens)", "fake reported", "drift", "drift %"], rows))
    print("\n(cut streams: the fake reports the whole answer it generated; the gateway charges the prompt plus")
    print(f" what streamed, up to {HEADROOM_TOKENS} tokens ahead, so their drift is expected and bounded)")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""How much do Envoy and tokenvoy add on top of an LLM provider? One command, real processes, real numbers.

Starts, side by side on 127.0.0.1 (free ports picked at start):

* the fake provider (``tokenvoy testupstream``) — measured directly, so its own ceiling is visible;
* **Envoy alone**: tokenvoy's own rendered bootstrap with the ext_proc and ratelimit filters (and the
  upstream ext_proc) removed — same listener, access log, buffer limits and clusters, so the difference
  to the next column is exactly what tokenvoy's filters and Python services cost;
* **tokenvoy** via ``tokenvoy run`` with the default config (only the ports changed; the Backend points at
  the same fake provider), driven twice: without ``x-user-id`` (the budget descriptor is dropped, so the
  ratelimit service is never called) and with ``x-user-id`` rotating over ``--users`` ids (the realistic
  path: one RLS check at request time and one charge at stream done).

``wrk`` (HTTP/1.1 keep-alive, a Lua script for the POST body and a ``done()`` callback that prints the
percentiles as JSON) generates the load. Each measured run is preceded by an unmeasured warm-up at the
same concurrency. Besides latency and throughput it records, per run, the CPU time of every process
(from /proc) to show where the overhead goes, and the deltas of Envoy's error/timeout counters.
Every process it starts is stopped on exit, Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.direct import NO_DIRECT_ENV
from tokenvoy.config.loader import FAKE_PROVIDER_ANNOTATION, load_text
from tokenvoy.contract import DIRECT_HEADER, EXTPROC_CLUSTER, RATELIMIT_CLUSTER
from tokenvoy.render.bootstrap import render_bootstrap
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.runner.run import SECRETS_DIR, envoy_binary

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
TRANSLATED_MODEL = "claude-sonnet-4-6"  # the default config's Anthropic-schema backend: OpenAI in, Anthropic out
MODEL_HEADER = "x-ai-eg-model"  # the routing header tokenvoy's extproc sets; the floor's client sends it
BENCH_DIR = Path(__file__).resolve().parent
LITELLM_SPEC = "litellm[proxy]"
LITELLM_MASTER_KEY = "sk-bench-master-key"
LITELLM_STARTUP_TIMEOUT_S = 240.0  # its proxy takes ~35 s to start on a busy 2-core box
MAX_TOKENS = 16
USER_HEADER = "x-user-id"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
WRK_TIMEOUT = "10s"  # a request slower than this counts as a wrk timeout error, not a latency sample
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
NOISY_PCT = 10.0  # a run during which other jobs took more than this % of the CPUs is measured again

# Envoy counters whose growth during a run means something went wrong (or a timeout fired).
ANOMALY_COUNTER = re.compile(
    r"(error|timeout|fail|over_limit|overflow|reset|rq_[45]xx|spurious|reject|retry|cancel|denied|"
    r"no_route|no_cluster|_abort)"
)
# Envoy counters that are expected to grow and are not problems.
BENIGN_COUNTER = re.compile(r"(\.ok$|_success$|upstream_rq_2xx|rq_200$|retry_or_shadow_abandoned$)")
# Each ext_proc stream (two per request: router and upstream filter) ends with one RST_STREAM: extproc ends
# the call once it has answered the last message Envoy will send, and gRPC's server then resets the
# client's still-open half (rx_reset); a stream Envoy closes first is reset by Envoy's ext_proc client
# (closeStream() + resetStream(), client_impl.cc: tx_reset).
EXTPROC_STREAM_RESET = re.compile(
    rf"^cluster\.{EXTPROC_CLUSTER}\.(http2\.tx_reset|upstream_rq_tx_reset|http2\.rx_reset|upstream_rq_rx_reset)$"
)
# When wrk stops it closes its connections with a request in flight: the client reset, and the resets of
# the provider request / RLS call Envoy then cancels. At most one per connection per wrk run.
CUT_BY_WRK_STOP = re.compile(r"(downstream_rq_rx_reset|destroy_remote_active_rq|tx_reset|rq_rx_reset)$")


# ----------------------------------------------------------------------------------------------- processes


class Processes:
    """Every child we start, so a single ``finally`` can stop all of them whatever happened.

    Each child gets its own session (process group = its pid): a terminal Ctrl-C reaches only us, we
    stop the children in reverse start order, and anything a child left behind in its group (e.g.
    ``tokenvoy run``'s Envoy if ``tokenvoy run`` itself had to be killed) is killed by that group id.
    """

    def __init__(self) -> None:
        self._started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], stdout: Path, stderr: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with contextlib.ExitStack() as files:
            out = files.enter_context(stdout.open("wb"))
            err = files.enter_context(stderr.open("wb")) if stderr else subprocess.STDOUT
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_die_with_parent,
                env=env,
            )
        self._started.append((name, process))
        return process

    def stop_all(self) -> None:
        for _name, process in reversed(self._started):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _kill_group(process.pid, signal.SIGKILL)
                    process.wait(timeout=STOP_TIMEOUT_S)
            if _group_alive(process.pid):
                _kill_group(process.pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while _group_alive(process.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                _kill_group(process.pid, signal.SIGKILL)
        self._started.clear()


def _die_with_parent() -> None:
    """In the child: SIGTERM it if the benchmark itself is SIGKILLed, the one exit no ``finally`` sees."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C so the cleanup in ``main`` runs."""
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_until(
    what: str,
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float = STARTUP_TIMEOUT_S,
) -> None:
    """Poll ``ready`` until it holds; fail fast (with the log's tail) if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting:\n{_tail(log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -------------------------------------------------------------------------------------------- HTTP helpers


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def chat_body(stream: bool, model: str = MODEL) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": MAX_TOKENS,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def envoy_counters(admin_port: int) -> dict[str, int]:
    """All used counters and gauges of one Envoy (histograms are skipped: their lines are not integers)."""
    _, _, body = http_request(admin_port, "GET", "/stats?usedonly")
    counters: dict[str, int] = {}
    for line in body.decode().splitlines():
        name, _, value = line.rpartition(": ")
        if name and value.isdigit():
            counters[name] = int(value)
    return counters


def envoy_histograms(admin_port: int, pattern: str) -> dict[str, dict[str, float]]:
    """Cumulative P50/P99/P100 (ms) of Envoy histograms matching ``pattern`` (as of the last stats flush)."""
    _, _, body = http_request(admin_port, "GET", f"/stats?format=json&usedonly&filter={pattern}")
    histograms = next((s["histograms"] for s in json.loads(body).get("stats", []) if "histograms" in s), None)
    if not histograms:
        return {}
    quantiles = histograms["supported_quantiles"]
    wanted = {50.0: "p50_ms", 99.0: "p99_ms", 100.0: "max_ms"}
    result: dict[str, dict[str, float]] = {}
    for entry in histograms["computed_quantiles"]:
        values = {}
        for quantile, value in zip(quantiles, entry["values"], strict=True):
            if quantile in wanted and value.get("cumulative") is not None:
                values[wanted[quantile]] = float(value["cumulative"])
        if values:
            result[entry["name"]] = values
    return result


# ------------------------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``: what that process cost, whatever its threading."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and of its live descendants (LiteLLM's proxy runs its server in a worker process)."""
    total = cpu_seconds(pid)
    for child in children_of(pid):
        with contextlib.suppress(OSError, ValueError):
            total += tree_cpu_seconds(child)
    return total


_CPU_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def system_cpu() -> dict[str, int]:
    """Jiffies over all CPUs by kind (the first line of /proc/stat): how saturated the box was, and by what."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return dict(zip(_CPU_COLUMNS, values, strict=False))


def cpu_breakdown(before: dict[str, int], after: dict[str, int], ours_seconds: float) -> dict[str, float]:
    """% of all CPUs: busy in total, interrupts (loopback packets are processed there), hypervisor steal,
    and everything that is neither ours nor interrupts — other jobs on the box, which skew the run."""
    delta = {k: after[k] - before[k] for k in _CPU_COLUMNS}
    total = max(sum(delta.values()), 1)
    busy = total - delta["idle"] - delta["iowait"]
    interrupts = delta["irq"] + delta["softirq"]
    ours = ours_seconds * CLK_TCK
    return {
        "busy_pct": 100.0 * busy / total,
        "interrupts_pct": 100.0 * interrupts / total,
        "steal_pct": 100.0 * delta["steal"] / total,
        "others_pct": 100.0 * max(busy - interrupts - delta["steal"] - ours, 0) / total,
    }


def memory_mib(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    result = {}
    for key, label in (("VmRSS", "rss_mib"), ("VmHWM", "peak_rss_mib")):
        match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            result[label] = int(match.group(1)) / 1024
    return result


def tree_memory_mib(pid: int) -> dict[str, float]:
    """RSS (and the sum of peaks) of ``pid`` and its live descendants."""
    total = memory_mib(pid)
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            for key, value in tree_memory_mib(child).items():
                total[key] = total.get(key, 0.0) + value
    return total


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if path.exists():
        return [int(p) for p in path.read_text().split()]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


# -------------------------------------------------------------------------------------------------- stacks


@dataclass
class Target:
    """One column of the table: where wrk sends traffic and which processes serve it."""

    key: str
    title: str
    port: int
    processes: dict[str, int]  # role -> pid, for CPU accounting
    admin_port: int | None = None  # the Envoy in front, if any
    users: int = 0  # >0: rotate x-user-id over this many ids
    access_log: Path | None = None
    model: str = MODEL
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    reference: str = "envoy"  # the column its "added" rows subtract ("" for none)
    budget_headers: bool = True  # a budgeted column answers x-ratelimit-* headers (the smoke test checks)


@dataclass
class Stacks:
    fake_port: int
    fake_pid: int
    baseline_port: int
    baseline_admin: int
    baseline_pid: int
    tokenvoy_port: int
    tokenvoy_admin: int
    tokenvoy_pid: int  # the `tokenvoy run` supervisor
    tokenvoy_children: dict[str, int]
    run_dir: Path
    envoy_version: str = ""
    config_text: str = ""
    targets: list[Target] = field(default_factory=list)
    variant_pids: dict[str, int] = field(default_factory=dict)  # key -> its `tokenvoy run` supervisor
    memory_pids: dict[str, int] = field(default_factory=dict)  # more processes for the memory table
    skipped: list[str] = field(default_factory=list)  # columns asked for but not measured, with why


def gateway_config_yaml(listener_port: int, fake_port: int) -> str:
    """The default config of ``tokenvoy run`` with our ports, pointing at our (already running) fake provider.

    The fake-provider annotation is removed so ``tokenvoy run`` does not start a second fake: all three
    columns share one provider process.
    """
    docs = list(yaml.safe_load_all(default_config_yaml({})))
    for doc in docs:
        if doc["kind"] == "Gateway":
            for listener in doc["spec"]["listeners"]:
                listener["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["metadata"].get("annotations", {}).pop(FAKE_PROVIDER_ANNOTATION, None)
            for endpoint in doc["spec"]["endpoints"]:
                endpoint["ip"]["port"] = fake_port
    return yaml.safe_dump_all(docs, sort_keys=False)


def baseline_bootstrap(config_text: str, listener_port: int, admin_port: int, access_log: Path) -> dict[str, Any]:
    """tokenvoy's rendered bootstrap minus ext_proc/ratelimit: the fairest possible 'Envoy alone'."""
    config = load_text(config_text, "<bench>")
    options = EnvoyOptions(
        extproc_address="unix:/nonexistent/extproc.sock",
        ratelimit_address="unix:/nonexistent/ratelimit.sock",
        admin_port=admin_port,
        access_log_path=str(access_log),
    )
    bootstrap = render_bootstrap(config, options)
    resources = bootstrap["static_resources"]
    for listener in resources["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listener_port
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
                for vhost in hcm["route_config"]["virtual_hosts"]:
                    for route in vhost["routes"]:
                        route.pop("typed_per_filter_config", None)
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] not in (EXTPROC_CLUSTER, RATELIMIT_CLUSTER)]
    for cluster in resources["clusters"]:
        for options_entry in cluster.get("typed_extension_protocol_options", {}).values():
            options_entry.pop("http_filters", None)
    return bootstrap


def floor_bootstrap(
    config_text: str,
    listener_port: int,
    admin_port: int,
    access_log: Path,
    extproc: str,
    ratelimit: str,
    secrets_dir: Path | None,
) -> dict[str, Any]:
    """tokenvoy's rendered bootstrap whole (every filter, phase and processing mode, the same options as
    ``tokenvoy run``: direct routes with the keys ``tokenvoy run`` wrote into ``secrets_dir``, unless None)
    with its ext_proc and ratelimit clusters on the no-op servers: the architecture's floor."""
    config = load_text(config_text, "<bench>")
    options = EnvoyOptions(
        extproc_address=extproc,
        ratelimit_address=ratelimit,
        admin_port=admin_port,
        access_log_path=str(access_log),
        secrets_dir=str(secrets_dir) if secrets_dir is not None else None,
    )
    bootstrap = render_bootstrap(config, options)
    for listener in bootstrap["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listener_port
    return bootstrap


def _unix_listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(str(path)) == 0


def start_floor(
    procs: Processes, run_dir: Path, envoy: str, config_text: str, fake_pid: int, users: int
) -> tuple[list[Target], dict[str, int]]:
    """Envoy with tokenvoy's whole bootstrap in front of bench/noop_extproc.py and bench/noop_rls.py (after
    ``tokenvoy run`` has started: the direct routes read the keys it wrote)."""
    direct = os.environ.get(NO_DIRECT_ENV, "") in ("", "0")  # as tokenvoy run decides
    secrets_dir = (run_dir / "tokenvoy" / SECRETS_DIR).resolve() if direct else None
    floor_dir = run_dir / "floor"
    floor_dir.mkdir()
    pids: dict[str, int] = {}
    sockets = {"extproc": floor_dir / "extproc.sock", "ratelimit": floor_dir / "ratelimit.sock"}
    for role, script in (("extproc", "noop_extproc.py"), ("ratelimit", "noop_rls.py")):
        log = floor_dir / f"{role}.log"
        argv = [sys.executable, str(BENCH_DIR / script), "--listen", f"unix:{sockets[role]}"]
        process = procs.start(f"no-op {role}", argv, log)
        wait_until(f"no-op {role}", lambda path=sockets[role]: _unix_listening(path), process, log)
        pids[role] = process.pid
    port, admin = free_port(), free_port()
    access_log = run_dir / "floor-access.log"
    bootstrap = floor_bootstrap(
        config_text, port, admin, access_log, f"unix:{sockets['extproc']}", f"unix:{sockets['ratelimit']}", secrets_dir
    )
    (floor_dir / "envoy.yaml").write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    argv = [envoy, "-c", str(floor_dir / "envoy.yaml"), "--log-level", "warn", "--disable-hot-restart"]
    log = floor_dir / "envoy.log"
    process = procs.start("floor Envoy", argv, log)
    wait_until("floor Envoy", lambda: http_request(admin, "GET", "/ready")[0] == 200, process, log)
    pids["envoy"] = process.pid
    # The routing headers extproc would set: the model, and the direct route's marker when routes are direct.
    route = {MODEL_HEADER: MODEL, **({DIRECT_HEADER: "1"} if direct else {})}
    processes = {"envoy": pids["envoy"], "extproc": pids["extproc"], "fake": fake_pid}
    targets = [
        Target("floor", "floor, no x-user-id", port, processes, admin, access_log=access_log, headers=route),
        Target(
            "floor_budget",
            f"floor, x-user-id ({users} ids)",
            port,
            {**processes, "ratelimit": pids["ratelimit"]},
            admin,
            users=users,
            access_log=access_log,
            headers=route,
        ),
    ]
    return targets, pids


def start_litellm(
    procs: Processes, run_dir: Path, fake_port: int, venv: Path | None = None
) -> tuple[Target | None, int, str]:
    """LiteLLM's proxy from PyPI in its own venv (under the run dir unless ``venv`` names one to reuse), on
    the same fake provider; (None, 0, why) when it cannot be installed or started."""
    litellm_dir = run_dir / "litellm"
    litellm_dir.mkdir()
    venv = venv or litellm_dir / "venv"
    steps = []
    if not (venv / "bin" / "litellm").exists():
        _progress(f"installing {LITELLM_SPEC} into {venv} (a few minutes)")
        steps = [[sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC]]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, 0, f"{' '.join(argv[:3])}: {exc}"
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return None, 0, f"{' '.join(argv[:3])} exited {done.returncode}: {tail}"
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://{HOST}:{fake_port}/v1",
                    "api_key": "sk-bench",
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
        # The proxy refuses to start without one; wrk sends it as every client of a real proxy would.
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
    (litellm_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [str(venv / "bin" / "litellm"), "--config", str(litellm_dir / "config.yaml"), "--host", HOST]
    argv += ["--port", str(port), "--num_workers", "1"]
    # The bundled model price map, not a download at start; no log line per request.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    log = litellm_dir / "litellm.log"
    process = procs.start("LiteLLM proxy", argv, log, env=env)
    try:
        ready = lambda: http_request(port, "GET", "/health/liveliness")[0] == 200  # noqa: E731
        wait_until("LiteLLM proxy", ready, process, log, timeout=LITELLM_STARTUP_TIMEOUT_S)
    except RuntimeError as exc:
        return None, 0, str(exc)
    title = f"LiteLLM proxy {version}".strip()
    auth = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    target = Target("litellm", title, port, {"litellm": process.pid, "fake": 0}, reference="fake", headers=auth)
    return target, process.pid, ""


def start_tokenvoy(
    procs: Processes,
    run_dir: Path,
    name: str,
    port: int | None,
    admin_port: int,
    env: dict[str, str] | None = None,
    extproc_workers: int = 1,
) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    """``tokenvoy run`` on run_dir/gateway.yaml (``port``: its listener instead of the config's); the
    supervisor, its children by role and its access log. ``env`` adds to our environment. With several
    ``extproc_workers`` the first is role ``extproc``, the others ``extproc#1``… (their CPU is summed)."""
    tokenvoy_dir = run_dir / name
    argv = [
        "tokenvoy",
        "run",
        "--config",
        str(run_dir / "gateway.yaml"),
        "--run-dir",
        str(tokenvoy_dir),
        "--admin-port",
        str(admin_port),
        "--metrics-port",
        str(free_port()),
        "--ratelimit-metrics-port",
        str(free_port()),
        "--extproc-workers",  # explicit: the default is one per core
        str(extproc_workers),
        *(["--port", str(port)] if port is not None else []),
    ]
    access_log = run_dir / f"{name}-access.log"  # `tokenvoy run` stdout is Envoy's access log
    log = run_dir / f"{name}.log"
    process = procs.start(f"tokenvoy run ({name})", argv, access_log, stderr=log, env={**os.environ, **(env or {})})
    wait_until("tokenvoy run", lambda: "tokenvoy: ready:" in log.read_text(errors="replace"), process, log)

    children: dict[str, int] = {}
    for pid in children_of(process.pid):
        args = cmdline(pid)
        if Path(args[0]).name == "envoy":
            children["envoy"] = pid
        elif args[1:3] == ["-m", "tokenvoy"] and len(args) > 3 and args[3] in ("extproc", "ratelimit"):
            role = args[3]
            if role in children:  # another extproc worker
                role = f"extproc#{sum(1 for r in children if r.startswith('extproc'))}"
            children[role] = pid
    if {role.partition("#")[0] for role in children} != {"envoy", "extproc", "ratelimit"}:
        raise RuntimeError(f"could not find tokenvoy run's children (found {children})")
    return process, children, access_log


# Extra `tokenvoy run` stacks for --variant: (key, column title, environment).
VARIANTS = {
    "no-uvloop": ("tokenvoy_asyncio", "--no-uvloop", {"TOKENVOY_NO_UVLOOP": "1"}),
    "workers-2": ("tokenvoy_workers2", "--extproc-workers 2", {}),
    # every rule through the upstream ext_proc filter too: two streams per request instead of one
    "no-direct": ("tokenvoy_two_streams", "two streams (TOKENVOY_NO_DIRECT=1)", {"TOKENVOY_NO_DIRECT": "1"}),
}
VARIANT_EXTPROC_WORKERS = {"workers-2": 2}  # the others run one extproc, as the main columns


def start_stacks(
    procs: Processes,
    run_dir: Path,
    users: int,
    variants: Sequence[str] = (),
    litellm: bool = False,
    litellm_venv: Path | None = None,
) -> Stacks:
    fake_port, baseline_port, baseline_admin, tokenvoy_port, tokenvoy_admin = (free_port() for _ in range(5))
    envoy = envoy_binary()
    envoy_version = subprocess.run([envoy, "--version"], capture_output=True, text=True, check=True, timeout=30)
    version_match = re.search(r"version: \S+?/([\d.]+)/", envoy_version.stdout)

    log = run_dir / "fake.log"
    fake = procs.start("fake provider", ["tokenvoy", "testupstream", "--host", HOST, "--port", str(fake_port)], log)
    wait_until("fake provider", lambda: http_request(fake_port, "GET", "/health")[0] == 200, fake, log)

    config_text = gateway_config_yaml(tokenvoy_port, fake_port)
    (run_dir / "gateway.yaml").write_text(config_text)
    baseline_dir = run_dir / "baseline"
    baseline_dir.mkdir()
    baseline_log = run_dir / "baseline-access.log"
    bootstrap = baseline_bootstrap(config_text, baseline_port, baseline_admin, baseline_log)
    (baseline_dir / "envoy.yaml").write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    argv = [envoy, "-c", str(baseline_dir / "envoy.yaml"), "--log-level", "warn", "--disable-hot-restart"]
    log = baseline_dir / "envoy.log"
    baseline = procs.start("Envoy alone", argv, log)
    wait_until("Envoy alone", lambda: http_request(baseline_admin, "GET", "/ready")[0] == 200, baseline, log)

    tokenvoy, children, tokenvoy_access = start_tokenvoy(procs, run_dir, "tokenvoy", None, tokenvoy_admin)
    stacks = Stacks(
        fake_port=fake_port,
        fake_pid=fake.pid,
        baseline_port=baseline_port,
        baseline_admin=baseline_admin,
        baseline_pid=baseline.pid,
        tokenvoy_port=tokenvoy_port,
        tokenvoy_admin=tokenvoy_admin,
        tokenvoy_pid=tokenvoy.pid,
        tokenvoy_children=children,
        run_dir=run_dir,
        envoy_version=version_match.group(1) if version_match else envoy_version.stdout.strip(),
        config_text=config_text,
    )
    tokenvoy_processes = {**children, "fake": fake.pid}
    floor_targets, floor_pids = start_floor(procs, run_dir, envoy, config_text, fake.pid, users)
    stacks.memory_pids = {f"floor: {role}": pid for role, pid in floor_pids.items()}
    stacks.targets = [
        Target("fake", "fake provider direct", fake_port, {"fake": fake.pid}, reference=""),
        Target(
            "envoy",
            "Envoy alone (baseline)",
            baseline_port,
            {"envoy": baseline.pid, "fake": fake.pid},
            baseline_admin,
            access_log=baseline_log,
            reference="fake",
        ),
        *floor_targets,
        Target(
            "tokenvoy",
            "tokenvoy, no x-user-id",
            tokenvoy_port,
            tokenvoy_processes,
            tokenvoy_admin,
            access_log=tokenvoy_access,
        ),
        Target(
            "tokenvoy_budget",
            f"tokenvoy, x-user-id ({users} ids)",
            tokenvoy_port,
            tokenvoy_processes,
            tokenvoy_admin,
            users=users,
            access_log=tokenvoy_access,
        ),
        Target(
            "translated",
            "tokenvoy, OpenAI → Anthropic, no x-user-id",
            tokenvoy_port,
            tokenvoy_processes,
            tokenvoy_admin,
            access_log=tokenvoy_access,
            model=TRANSLATED_MODEL,
        ),
    ]
    for variant in variants:
        key, label, env = VARIANTS[variant]
        v_port, v_admin = free_port(), free_port()
        workers = VARIANT_EXTPROC_WORKERS.get(variant, 1)
        v_process, v_children, v_access = start_tokenvoy(procs, run_dir, key, v_port, v_admin, env, workers)
        v_processes = {**v_children, "fake": fake.pid}
        stacks.variant_pids[key] = v_process.pid
        stacks.targets += [
            Target(key, f"tokenvoy {label}, no x-user-id", v_port, v_processes, v_admin, access_log=v_access),
            Target(
                f"{key}_budget",
                f"tokenvoy {label}, x-user-id",
                v_port,
                v_processes,
                v_admin,
                users=users,
                access_log=v_access,
            ),
        ]
    if litellm:
        target, pid, why = start_litellm(procs, run_dir, fake_port, litellm_venv)
        if target is None:
            _progress(f"LiteLLM column skipped: {why}")
            stacks.skipped.append(f"LiteLLM proxy: {why}")
        else:
            target.processes["fake"] = fake.pid
            stacks.targets.append(target)
            stacks.memory_pids["LiteLLM proxy (with its workers)"] = pid
    return stacks


def smoke_test(target: Target) -> None:
    """One plain and one streamed request per column before any load: a broken stack fails loudly here."""
    headers = {"content-type": "application/json", **target.headers}
    if target.users:
        headers[USER_HEADER] = "bench-user-smoke"
    for stream in (False, True):
        body_sent = chat_body(stream, target.model)
        status, reply_headers, body = http_request(target.port, "POST", CHAT_PATH, body_sent, headers)
        expected = b"chat.completion.chunk" if stream else b"chat.completion"
        if status != 200 or expected not in body:
            raise RuntimeError(f"{target.title}: smoke request (stream={stream}) got {status}: {body[:300]!r}")
        if target.users and target.budget_headers and not stream and "x-ratelimit-limit" not in reply_headers:
            raise RuntimeError(f"{target.title}: no x-ratelimit-limit header, the budget path is not exercised")


# ----------------------------------------------------------------------------------------------------- wrk

WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"non_2xx_3xx":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

WRK_USERS = r"""
local prepared = {}
local next_index = 0
function init(args)
  -- wrk.init has set the Host header by now; pre-format one request per user id so request() is cheap.
  for i = 1, USERS do
    local headers = {}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    headers["x-user-id"] = "bench-user-" .. i
    prepared[i] = wrk.format(nil, nil, headers)
  end
end
function request()
  next_index = next_index % USERS + 1
  return prepared[next_index]
end
"""


def wrk_script(stream: bool, users: int, model: str = MODEL, headers: dict[str, str] | None = None) -> str:
    """POST body and headers for wrk; without users the request is static (wrk's fastest path)."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [==[{chat_body(stream, model).decode()}]==]",
        'wrk.headers["Content-Type"] = "application/json"',
        *(f'wrk.headers["{name}"] = "{value}"' for name, value in (headers or {}).items()),
    ]
    if users:
        lines.append(f"local USERS = {users}")
        lines.append(WRK_USERS)
    lines.append(WRK_DONE)
    return "\n".join(lines)


@dataclass
class Settings:
    duration: float
    warmup: float
    concurrency: int
    threads: int
    users: int
    stream: bool
    script_dir: Path


def run_wrk(wrk: str, script: Path, port: int, concurrency: int, threads: int, seconds: float) -> dict[str, Any]:
    argv = [
        wrk,
        f"-t{min(threads, concurrency)}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(script),
        f"http://{HOST}:{port}{CHAT_PATH}",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        output, _ = process.communicate(timeout=seconds + 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{text}")
    result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def classify_counters(deltas: dict[str, int], requests: int, concurrency: int) -> tuple[dict[str, int], dict[str, int]]:
    """Split grown error-like Envoy counters into explained ones (within their bound) and anomalies.

    Bounds: ext_proc stream resets at most two per request (plus the in-flight ones at both ends of the
    run); anything caused by wrk stopping mid-request at most twice the connection count.
    """
    explained: dict[str, int] = {}
    anomalies: dict[str, int] = {}
    for name, delta in deltas.items():
        if not ANOMALY_COUNTER.search(name) or BENIGN_COUNTER.search(name) or delta <= 0:
            continue
        if EXTPROC_STREAM_RESET.search(name):
            bound = 2 * (requests + 2 * concurrency)
        elif CUT_BY_WRK_STOP.search(name):
            bound = 2 * concurrency
        else:
            bound = 0
        (explained if delta <= bound else anomalies)[name] = delta
    return explained, anomalies


_SOCKET_ERRORS = ("connect_errors", "read_errors", "write_errors", "timeouts")


def measure(wrk: str, target: Target, stream: bool, concurrency: int, settings: Settings) -> dict[str, Any]:
    """Warm up, then one measured wrk run with CPU and Envoy-counter deltas around it."""
    script = settings.script_dir / f"wrk-{target.key}-{'stream' if stream else 'plain'}.lua"
    script.write_text(wrk_script(stream, target.users, target.model, target.headers))
    warmup: dict[str, Any] = {}
    if settings.warmup > 0:
        warmup = run_wrk(wrk, script, target.port, concurrency, settings.threads, settings.warmup)
    counters_before = envoy_counters(target.admin_port) if target.admin_port else {}
    cpu_before = {role: tree_cpu_seconds(pid) for role, pid in target.processes.items()}
    system_before = system_cpu()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(wrk, script, target.port, concurrency, settings.threads, settings.duration)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    system_after = system_cpu()
    cpu_after = {role: tree_cpu_seconds(pid) for role, pid in target.processes.items()}
    counters_after = envoy_counters(target.admin_port) if target.admin_port else {}

    requests = max(result["requests"], 1)
    cpu: dict[str, float] = {}
    for role in target.processes:  # extproc#1… (more extproc workers) count as extproc
        base = role.partition("#")[0]
        cpu[base] = cpu.get(base, 0.0) + cpu_after[role] - cpu_before[role]
    cpu["wrk"] = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    result["cpu_seconds"] = cpu
    result["cpu_us_per_request"] = {role: seconds * 1e6 / requests for role, seconds in cpu.items()}
    elapsed = max(result["duration_us"] / 1e6, 1e-6)
    result["cpu_pct_of_one_core"] = {role: 100.0 * seconds / elapsed for role, seconds in cpu.items()}
    result["system_cpu"] = cpu_breakdown(system_before, system_after, sum(cpu.values()))
    deltas = {
        name: counters_after[name] - counters_before.get(name, 0)
        for name in counters_after
        if counters_after[name] != counters_before.get(name, 0)
    }
    result["envoy_counter_deltas"] = deltas
    result["envoy_explained"], result["envoy_anomalies"] = classify_counters(deltas, result["requests"], concurrency)
    result["envoy_downstream"] = {
        code: deltas.get(f"http.tokenvoy.downstream_rq_{code}", 0) for code in ("2xx", "3xx", "4xx", "5xx")
    }
    result["ratelimit_calls"] = {
        outcome: sum(
            v for k, v in deltas.items() if k.startswith("cluster.rule/") and k.endswith(f".ratelimit.{outcome}")
        )
        for outcome in ("ok", "over_limit", "error", "failure_mode_allowed")
    }
    result["non_2xx"] = result["non_2xx_3xx"] + result["envoy_downstream"]["3xx"]
    result["socket_errors"] = sum(result[k] for k in _SOCKET_ERRORS)
    result["warmup"] = {k: warmup.get(k, 0) for k in ("requests", "non_2xx_3xx", *_SOCKET_ERRORS)}
    return result


# -------------------------------------------------------------------------------------------------- output


def machine_info(envoy_version: str, wrk: str) -> dict[str, str]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": envoy_version,
        "wrk": " ".join(wrk_version.split()[:2]),
    }


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _signed_ms(us: float) -> str:
    return f"{us / 1000:+.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                (c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )
    return "\n".join(lines)


def latency_table(kind: str, results: dict[str, dict[str, Any]], targets: list[Target], concurrency: int) -> str:
    """One column per target; 'added' rows subtract Envoy alone (and, for Envoy alone, the direct call)."""
    header = [kind, *(t.title for t in targets)]
    c1 = results.get("c1", {})
    cn = results.get(f"c{concurrency}", {})
    rows: list[list[str]] = []

    keys = {t.key for t in targets}

    def reference(key: str) -> str | None:
        ref = next(t.reference for t in targets if t.key == key)
        return ref if ref in keys else None

    if c1:
        for pct in ("p50", "p99"):
            rows.append([f"{pct} latency c=1 (ms)", *(_ms(c1[t.key][f"{pct}_us"]) for t in targets)])
        for pct in ("p50", "p99"):
            row = [f"{pct} added c=1 (ms) ¹"]
            for t in targets:
                ref = reference(t.key)
                row.append("—" if ref is None else _signed_ms(c1[t.key][f"{pct}_us"] - c1[ref][f"{pct}_us"]))
            rows.append(row)
    if cn:
        rows.append([f"req/s c={concurrency}", *(f"{cn[t.key]['rps']:,.0f}" for t in targets)])
        for pct in ("p50", "p99"):
            rows.append([f"{pct} latency c={concurrency} (ms)", *(_ms(cn[t.key][f"{pct}_us"]) for t in targets)])
        rows.append(
            [
                f"CPU busy c={concurrency}, % of all cores (not ours) ²",
                *(
                    f"{cn[t.key]['system_cpu']['busy_pct']:.0f} ({cn[t.key]['system_cpu']['others_pct']:.0f})"
                    for t in targets
                ),
            ]
        )
    errors = ["non-2xx / socket errors (all runs)"]
    for t in targets:
        runs = [r[t.key] for r in results.values() if t.key in r]
        errors.append(f"{sum(r['non_2xx'] for r in runs)} / {sum(r['socket_errors'] for r in runs)}")
    rows.append(errors)
    return _table(header, rows)


def cpu_table(results: dict[str, dict[str, Any]], targets: list[Target], concurrency: int, label: str) -> str:
    """CPU µs per request by process at full load (and % of one core): where the cost goes, what saturates."""
    cn = results.get(f"c{concurrency}", {})
    present = {role for t in targets for role in cn.get(t.key, {}).get("cpu_us_per_request", {})}
    roles = [r for r in ("envoy", "extproc", "ratelimit", "litellm", "fake", "wrk") if r in present]
    header = [f"CPU µs / request (% of one core), {label} c={concurrency}", *(t.title for t in targets)]
    rows = []
    for role in roles:
        row = [role]
        for t in targets:
            value = cn.get(t.key, {}).get("cpu_us_per_request", {}).get(role)
            pct = cn.get(t.key, {}).get("cpu_pct_of_one_core", {}).get(role, 0.0)
            row.append("—" if value is None else f"{value:,.0f} ({pct:.0f}%)")
        rows.append(row)
    totals = ["total"]
    for t in targets:
        per_request = cn.get(t.key, {}).get("cpu_us_per_request", {})
        totals.append(f"{sum(per_request.values()):,.0f}")
    rows.append(totals)
    return _table(header, rows)


def memory_table(memory: dict[str, dict[str, float]]) -> str:
    rows = [[name, f"{m.get('rss_mib', 0):.1f}", f"{m.get('peak_rss_mib', 0):.1f}"] for name, m in memory.items()]
    return _table(["process", "RSS after the run (MiB)", "peak RSS (MiB)"], rows)


def collect_memory(stacks: Stacks) -> dict[str, dict[str, float]]:
    pids = {
        "fake provider (tokenvoy testupstream)": stacks.fake_pid,
        "Envoy alone (baseline)": stacks.baseline_pid,
        "tokenvoy: envoy": stacks.tokenvoy_children["envoy"],
        "tokenvoy: extproc": stacks.tokenvoy_children["extproc"],
        "tokenvoy: ratelimit": stacks.tokenvoy_children["ratelimit"],
        "tokenvoy: `tokenvoy run` supervisor": stacks.tokenvoy_pid,
        **stacks.memory_pids,
    }
    memory = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            memory[name] = tree_memory_mib(pid) if name.startswith("LiteLLM") else memory_mib(pid)
    return memory


@dataclass
class AccessLogCheck:
    """What one Envoy's access log says about every request it saw (warm-ups included)."""

    entries: int = 0
    cut_by_wrk_stop: int = 0  # flag DC: wrk closed the connection with this request in flight
    cut_bound: int = 0  # one per connection per wrk run
    failed: int = 0  # anything else that is not a clean 200
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.cut_by_wrk_stop <= self.cut_bound


def check_access_log(path: Path, cut_bound: int, limit: int = 5) -> AccessLogCheck:
    check = AccessLogCheck(cut_bound=cut_bound)
    if not path.exists():
        return check
    keys = ("start_time", "response_code", "response_flags", "response_code_details", "duration", "x-user-id")
    with path.open("rb") as log:
        for raw in log:
            check.entries += 1
            if b'"response_code":200,' in raw and b'"response_flags":"-"' in raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # not an access-log line
            if entry.get("response_flags") == "DC":  # before (code 0) or during the reply (streams)
                check.cut_by_wrk_stop += 1
                continue
            check.failed += 1
            if len(check.examples) < limit:
                check.examples.append({k: entry.get(k) for k in (*keys, "upstream_host", "upstream_cluster")})
    return check


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/gateway.py",
        description=(
            "Measure the latency, throughput, CPU and memory that Envoy and tokenvoy add in front of the fake "
            "LLM provider: fake provider direct | Envoy alone (tokenvoy's bootstrap without its filters) | "
            "tokenvoy run (without and with the x-user-id token budget). Prints markdown tables. "
            "Needs wrk (apt-get install -y wrk). Exit status 1 if any request failed."
        ),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds of each measured wrk run (default 5; 16 runs plus warm-ups: about 2 minutes in all)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run (default 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the throughput runs (default 16)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (default 1: on a 2-core box every wrk thread takes CPU from the system under test)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=1000,
        help="distinct x-user-id values of the budget column (default 1000; at 17 tokens a request the default "
        "100k tokens/hour budget allows ~5.9M requests, far more than any run sends)",
    )
    parser.add_argument(
        "--remeasure",
        type=int,
        default=1,
        metavar="N",
        help=f"measure a cell up to N more times when other jobs took over {NOISY_PCT:g}%% of the CPUs during it; "
        "the least disturbed run is kept (default 1)",
    )
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed (stream: true) table")
    parser.add_argument("--json", metavar="FILE", help="also write every raw number to FILE")
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="keep configs, logs and access logs in DIR (must not exist); default: a temp dir, deleted at the end",
    )
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default: wrk on PATH)")
    parser.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        default=[],
        help="also measure a second tokenvoy run in this variant, side by side (no-uvloop: extproc and "
        "ratelimit on asyncio's own event loop; no-direct: no direct routes, the upstream ext_proc filter on "
        "every request; workers-2: two extproc processes, --extproc-workers 2, where the main columns run one); "
        "two more columns each",
    )
    parser.add_argument(
        "--litellm",
        action="store_true",
        help=f"one more column: LiteLLM's proxy, installed from PyPI ({LITELLM_SPEC}) into a venv under the run "
        "directory, on the same fake provider and load (if the install fails the column is skipped, saying why)",
    )
    parser.add_argument(
        "--litellm-venv",
        metavar="DIR",
        help="with --litellm: use (or install into, if it has no litellm yet) this venv instead of one under the "
        "run directory, so that a second run does not install again",
    )
    args = parser.parse_args(argv)
    if (
        args.duration < 1
        or args.concurrency < 1
        or args.threads < 1
        or args.users < 1
        or args.warmup < 0
        or not 0 <= args.remeasure <= 5
    ):
        parser.error("--duration >= 1, --warmup >= 0, --concurrency, --threads and --users >= 1, --remeasure 0..5")
    return args


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def round_trips(by_c: dict[str, dict[str, Any]], settings: Settings) -> str:
    """ext_proc messages and RLS calls per request, from Envoy's counters: each one is a gRPC round trip."""
    parts = []
    names = {
        "floor": "floor without x-user-id",
        "floor_budget": "floor with x-user-id",
        "tokenvoy": "tokenvoy without x-user-id",
        "tokenvoy_budget": "tokenvoy with x-user-id",
        "translated": "tokenvoy OpenAI → Anthropic",
    }
    cells = by_c.get(f"c{settings.concurrency}", {})
    # the named columns first, then the variants' (--variant: tokenvoy_<variant>[_budget])
    keys = [k for k in names if k in cells] + [k for k in cells if k.startswith("tokenvoy") and k not in names]
    for key in keys:
        result = cells[key]
        if key in names:
            name = names[key]
        else:
            variant = key.removeprefix("tokenvoy_").removesuffix("_budget")
            name = f"tokenvoy {variant} {'with' if key.endswith('_budget') else 'without'} x-user-id"
        if not result:
            continue
        deltas = result["envoy_counter_deltas"]
        requests = max(result["requests"], 1)
        router = deltas.get("http.tokenvoy.ext_proc.stream_msgs_sent", 0) / requests
        upstream = sum(
            v for k, v in deltas.items() if k.startswith("cluster.rule/") and k.endswith(".ext_proc.stream_msgs_sent")
        )
        rls = deltas.get(f"cluster.{RATELIMIT_CLUSTER}.upstream_rq_total", 0) / requests
        parts.append(
            f"{name}: router ext_proc {router:.1f}, upstream ext_proc {upstream / requests:.1f}, RLS {rls:.1f}"
        )
    return "; ".join(parts)


def idle_load(seconds: float = 1.0) -> float:
    """% of all CPUs busy while we do nothing: other work on the box skews every number below."""
    before = system_cpu()
    time.sleep(seconds)
    return cpu_breakdown(before, system_cpu(), 0.0)["busy_pct"]


def run(args: argparse.Namespace, procs: Processes, run_dir: Path, wrk: str, out: TextIO) -> int:
    settings = Settings(
        args.duration, args.warmup, args.concurrency, args.threads, args.users, not args.no_stream, run_dir
    )
    background = idle_load()
    if background > 15:
        _progress(f"warning: the box is already {background:.0f}% busy before we start; numbers will be low")
    _progress(f"starting fake provider, Envoy alone and tokenvoy run (run directory {run_dir})")
    litellm_venv = Path(args.litellm_venv).resolve() if args.litellm_venv else None
    stacks = start_stacks(procs, run_dir, args.users, args.variant, args.litellm or bool(litellm_venv), litellm_venv)
    for target in stacks.targets:
        smoke_test(target)

    scenarios = [("plain", False)] + ([("stream", True)] if settings.stream else [])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    cut_bounds: dict[Path, int] = {}
    for kind, stream in scenarios:
        results[kind] = {}
        for concurrency in sorted({1, settings.concurrency}):
            by_target: dict[str, Any] = {}
            for target in stacks.targets:
                _progress(
                    f"{kind} c={concurrency}: {target.title} ({settings.warmup:g}s warm-up + {settings.duration:g}s)"
                )
                best: dict[str, Any] | None = None
                for attempt in range(1 + args.remeasure):
                    result = measure(wrk, target, stream, concurrency, settings)
                    if target.access_log:
                        wrk_runs = 2 if settings.warmup > 0 else 1
                        cut_bounds[target.access_log] = cut_bounds.get(target.access_log, 0) + wrk_runs * concurrency
                    result["attempts"] = attempt + 1
                    if best is None or result["system_cpu"]["others_pct"] < best["system_cpu"]["others_pct"]:
                        best = result
                    others = result["system_cpu"]["others_pct"]
                    if others <= NOISY_PCT:
                        break
                    if attempt < args.remeasure:
                        _progress(f"  other jobs took {others:.0f}% of the CPUs during that run; measuring again")
                assert best is not None
                by_target[target.key] = best
            results[kind][f"c{concurrency}"] = by_target

    time.sleep(1.5)  # Envoy flushes access logs every second
    memory = collect_memory(stacks)
    histograms = envoy_histograms(
        stacks.tokenvoy_admin, r"^cluster\.(tokenvoy_ratelimit|tokenvoy_extproc|rule/[^.]*)\.upstream_rq_time$"
    )
    machine = machine_info(stacks.envoy_version, wrk)
    log_checks = {path.name: check_access_log(path, bound) for path, bound in cut_bounds.items()}
    targets = stacks.targets
    all_runs = [
        (kind, c_key, key, result)
        for kind, by_c in results.items()
        for c_key, by_target in by_c.items()
        for key, result in by_target.items()
    ]

    print(file=out)
    print(
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, Python {machine['python']}, "
        f"Envoy {machine['envoy']}, {machine['wrk']}; {background:.0f}% of the CPUs busy before the run started.",
        file=out,
    )
    print(file=out)
    print(
        f"Load: wrk, {settings.threads} thread(s), HTTP/1.1 keep-alive, POST {CHAT_PATH} (max_tokens {MAX_TOKENS}), "
        f"{settings.warmup:g}s warm-up + {settings.duration:g}s per cell. wrk and every server share the same "
        f"{machine['nproc']} CPUs, so req/s is a whole-box figure, not a per-core one.",
        file=out,
    )
    for kind, _stream in scenarios:
        title = (
            "Plain chat completions" if kind == "plain" else "Streamed chat completions (stream: true; whole stream)"
        )
        print(f"\n### {title}\n", file=out)
        print(latency_table(kind, results[kind], targets, settings.concurrency), file=out)
    print(
        "\n¹ Envoy alone and LiteLLM: added over the fake provider direct; floor and tokenvoy columns: added over "
        "Envoy alone.",
        file=out,
    )
    print(
        "² in brackets: CPU used by neither our processes nor interrupts — other jobs on the box (should be ~0).",
        file=out,
    )
    for kind, _stream in scenarios:
        print(f"\n### Where the CPU goes ({kind})\n", file=out)
        print(cpu_table(results[kind], targets, settings.concurrency, kind), file=out)
    print("\n### Memory\n", file=out)
    print(memory_table(memory), file=out)

    print("\n### Checks\n", file=out)
    for skipped in stacks.skipped:
        print(f"- column skipped: {skipped}", file=out)
    budget_runs = [r for _, _, key, r in all_runs if key == "tokenvoy_budget"]
    rl_calls = {k: sum(r["ratelimit_calls"][k] for r in budget_runs) for k in ("ok", "over_limit", "error")}
    print(
        f"- ratelimit filter, x-user-id column (measured runs): {rl_calls['ok']:,} OK, "
        f"{rl_calls['over_limit']:,} over limit, {rl_calls['error']:,} errors or timeouts (timeout 200 ms, "
        "fail-open: an error is a lost check or charge, not a 5xx)",
        file=out,
    )
    for kind, _stream in scenarios:
        print(
            f"- gRPC messages per {kind} request, c={settings.concurrency}: {round_trips(results[kind], settings)}",
            file=out,
        )
    labels = {
        f"cluster.{RATELIMIT_CLUSTER}.upstream_rq_time": "RLS call time",
        f"cluster.{EXTPROC_CLUSTER}.upstream_rq_time": "ext_proc stream lifetime",
    }
    for name, values in sorted(histograms.items()):
        label = labels.get(name, f"upstream request time incl. the upstream ext_proc call ({name})")
        print(
            f"- {label}, Envoy histogram over all runs: p50 {values.get('p50_ms', 0):.3g} ms, "
            f"p99 {values.get('p99_ms', 0):.3g} ms, max {values.get('max_ms', 0):.3g} ms",
            file=out,
        )
    noisy = max(r["system_cpu"]["others_pct"] for *_, r in all_runs)
    if noisy > NOISY_PCT:
        print(
            f"- WARNING: processes other than ours took up to {noisy:.0f}% of the CPUs during a run: "
            "rerun on a quiet machine before trusting the numbers",
            file=out,
        )
    failures = 0
    for kind, c_key, key, result in all_runs:
        bad = result["non_2xx"] + result["socket_errors"]
        bad_warmup = sum(result["warmup"][k] for k in ("non_2xx_3xx", *_SOCKET_ERRORS))
        if bad or bad_warmup:
            failures += 1
            print(
                f"- FAILED REQUESTS ({kind} {c_key} {key}): non-2xx {result['non_2xx']}, socket errors "
                f"{result['socket_errors']}, in the warm-up {bad_warmup}",
                file=out,
            )
        if result["envoy_anomalies"]:
            failures += 1
            print(f"- ENVOY COUNTERS THAT GREW ({kind} {c_key} {key}): {result['envoy_anomalies']}", file=out)
    explained: dict[str, int] = {}
    for *_, result in all_runs:
        for name, delta in result["envoy_explained"].items():
            explained[name] = explained.get(name, 0) + delta
    extproc_resets = sum(
        explained.get(f"cluster.{EXTPROC_CLUSTER}.http2.{kind}", 0) for kind in ("tx_reset", "rx_reset")
    )
    if extproc_resets:
        print(
            f"- {extproc_resets:,} ext_proc streams ended by an RST_STREAM (expected: one per stream, sent by "
            "extproc's gRPC server when extproc ends the call, or by Envoy's ext_proc client otherwise)",
            file=out,
        )
    for name, check in log_checks.items():
        print(
            f"- {name}: {check.entries:,} requests (warm-ups included), {check.failed} failed, "
            f"{check.cut_by_wrk_stop} cut in flight when wrk stopped (at most {check.cut_bound} expected)",
            file=out,
        )
        if not check.ok:
            failures += 1
            for example in check.examples:
                print(f"    {json.dumps(example)}", file=out)
    if not failures:
        print("- no failed request, and no Envoy error, timeout, overflow or retry counter grew", file=out)

    if args.json:
        raw = {
            "machine": machine,
            "background_cpu_busy_pct": background,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
            "targets": {t.key: t.title for t in targets},
            "results": results,
            "memory_mib": memory,
            "envoy_histograms_ms": histograms,
            "access_logs": {name: {**vars(check), "ok": check.ok} for name, check in log_checks.items()},
        }
        Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
        _progress(f"raw numbers written to {args.json}")
    return 1 if failures else 0


@contextlib.contextmanager
def _run_directory(requested: str | None) -> Iterator[Path]:
    if requested:
        path = Path(requested)
        path.mkdir(parents=True)
        yield path.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="tokenvoy-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which(args.wrk)
    if wrk is None:
        print(
            f"bench: '{args.wrk}' not found. Install wrk (Debian/Ubuntu: sudo apt-get install -y wrk; "
            "macOS: brew install wrk) or pass --wrk PATH.",
            file=sys.stderr,
        )
        return 2
    if shutil.which("tokenvoy") is None:
        print("bench: the tokenvoy CLI is not on PATH; activate the project's venv first.", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    procs = Processes()
    with _run_directory(args.run_dir) as run_dir:
        try:
            return run(args, procs, run_dir, wrk, sys.stdout)
        except KeyboardInterrupt:
            _progress("interrupted; stopping everything")
            return 130
        except RuntimeError as exc:
            _progress(f"error: {exc}")
            return 1
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
            procs.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())

"""Start the real gateway (``tokenvoy run``: Envoy from the wheel, extproc, ratelimit, fake provider)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.ports import free_port
from tokenvoy.config.defaults import default_config_yaml


def gateway_config(listener_port: int, fake_port: int, budget_tokens: int, showcase: bool = False) -> str:
    """The embedded default config with its ports and budget changed (everything else as users get it).

    Without ``showcase``, the one-model-per-schema rules and their backends are left out: tests edit the
    single catch-all rule and the one OpenAI-schema ``fake`` backend."""
    documents = list(yaml.safe_load_all(default_config_yaml({}, showcase=showcase)))
    for doc in documents:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        elif doc["kind"] == "BackendTrafficPolicy":
            doc["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["requests"] = budget_tokens
    return yaml.safe_dump_all(documents, sort_keys=False)


@dataclass
class Gateway:
    url: str
    fake_url: str
    run_dir: Path
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    metrics_url: str = ""  # extproc's admin port: /metrics and /healthz
    admin_url: str = ""  # tokenvoy run's admin port: the gateway's /healthz, Envoy's admin read-only
    ratelimit_metrics_url: str = ""  # the ratelimit process's /metrics (budget counters charged)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_log(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.stdout_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                entries.append(orjson.loads(line))
        return entries

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Envoy flushes its access log about once a second."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.access_log():
                if predicate(entry):
                    return entry
            time.sleep(0.1)
        raise AssertionError(f"no matching access log entry within {timeout}s; log:\n{self.stdout_path.read_text()}")

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise


def start_gateway(
    directory: Path,
    budget_tokens: int = 100_000,
    startup_timeout: float = 90.0,
    config_text: str | None = None,
    env: dict[str, str] | None = None,
    fake_port: int | None = None,
    listener_port: int | None = None,
    extproc_workers: int | None = None,
) -> Gateway:
    """``tokenvoy run`` on free ports: with the default config (as a file), ``config_text``, or with no
    ``--config`` at all when ``config_text`` is ``""`` (the embedded default, driven by ``env``).
    ``listener_port``: the port ``config_text``'s Gateway names; no ``--port`` then (a reload may change it).
    ``extproc_workers``: ``--extproc-workers``; by default ``TOKENVOY_TEST_EXTPROC_WORKERS`` or 1, so the suite
    runs on one extproc process unless asked (``TOKENVOY_TEST_EXTPROC_WORKERS=2 pytest tests/integration``)."""
    directory.mkdir(parents=True, exist_ok=True)
    port_flag = listener_port is None
    listener_port, admin_port, metrics_port = listener_port or free_port(), free_port(), free_port()
    fake_port = fake_port or free_port()
    argv = [sys.executable, "-m", "tokenvoy", "run", *(["--port", str(listener_port)] if port_flag else [])]
    if config_text != "":
        config = directory / "gateway.yaml"
        config.write_text(config_text or gateway_config(listener_port, fake_port, budget_tokens))
        argv += ["--config", str(config)]
    argv += ["--run-dir", str(directory / "run"), "--admin-port", str(admin_port), "--metrics-port", str(metrics_port)]
    workers = extproc_workers or int(os.environ.get("TOKENVOY_TEST_EXTPROC_WORKERS", "1"))
    argv += ["--extproc-workers", str(workers)]
    ratelimit_metrics_port = free_port()
    argv += ["--ratelimit-metrics-port", str(ratelimit_metrics_port)]
    stdout_path, stderr_path = directory / "stdout.log", directory / "stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            argv, stdout=stdout, stderr=stderr, start_new_session=True, env={**os.environ, **(env or {})}
        )
    gateway = Gateway(
        url=f"http://127.0.0.1:{listener_port}",
        fake_url=f"http://127.0.0.1:{fake_port}",
        run_dir=directory / "run",
        process=process,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        ratelimit_metrics_url=f"http://127.0.0.1:{ratelimit_metrics_port}",
    )
    deadline = time.monotonic() + startup_timeout
    while "tokenvoy: ready" not in gateway.stderr():
        if process.poll() is not None:
            raise AssertionError(f"tokenvoy run exited with {process.returncode}:\n{gateway.stderr()}")
        if time.monotonic() > deadline:
            gateway.stop(signal.SIGKILL)
            raise AssertionError(f"tokenvoy run not ready within {startup_timeout}s:\n{gateway.stderr()}")
        time.sleep(0.1)
    return gateway


BUDGET_TOKENS = 100


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One stack for a test module, with a small per-user budget so tests can exhaust it."""
    running = start_gateway(tmp_path_factory.mktemp("gateway"), budget_tokens=BUDGET_TOKENS)
    try:
        yield running
    finally:
        running.stop()

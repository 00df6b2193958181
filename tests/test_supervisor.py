"""The supervisor of ``tokenvoy run`` on small real child processes: restarts, backoff, giving up, hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from functools import partial

import pytest

from tests.ports import free_port
from tokenvoy.runner.health import http_ok
from tokenvoy.runner.supervisor import ChildSpec, RestartPolicy, Supervisor, describe_exit

FAST = RestartPolicy(initial_delay=0.05, max_delay=0.2, max_deaths=3, window=60, health_interval=0.1, hang_checks=3)


def _http_child(name: str, port: int, essential: bool = True) -> ChildSpec:
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    return ChildSpec(
        name, argv, partial(http_ok, "127.0.0.1", port, "/"), stdout=asyncio.subprocess.DEVNULL, essential=essential
    )


async def _until(predicate, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def test_the_delay_doubles_with_each_death_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_delay=0.5, max_delay=8.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_an_exit_is_described_by_code_or_signal_name() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by signal SIGKILL"


async def test_a_killed_child_is_restarted_and_the_others_keep_running(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(policy=FAST)
    await supervisor.start(_http_child("one", free_port()))
    await supervisor.start(_http_child("two", free_port()))
    waiting = asyncio.create_task(supervisor.wait())
    first, other = (supervisor.status()["children"][n]["pid"] for n in ("one", "two"))
    os.kill(first, signal.SIGKILL)
    await _until(lambda: supervisor.status()["children"]["one"]["restarts"] == 1, "a restart")
    await _until(lambda: supervisor.status()["status"] == "ok", "healthy again")
    status = supervisor.status()["children"]
    assert status["one"]["pid"] not in (None, first)
    assert status["one"]["last_exit"] == "was killed by signal SIGKILL"
    assert (status["two"]["pid"], status["two"]["restarts"]) == (other, 0)
    assert not waiting.done()
    await supervisor.stop()
    waiting.cancel()
    err = capsys.readouterr().err
    assert f"one (pid {first}) was killed by signal SIGKILL; restarting it in 0.1s (death 1 of 3" in err
    assert "one restarted (pid" in err


async def test_a_child_that_keeps_dying_is_given_up_on(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(policy=FAST)
    crasher = [sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(3)"]

    async def alive() -> bool:
        return True

    await supervisor.start(ChildSpec("crasher", crasher, alive))
    assert await asyncio.wait_for(supervisor.wait(), 30) == 1
    await supervisor.stop()
    err = capsys.readouterr().err
    assert err.count("exited with code 3; restarting it in") == 2
    assert "exited with code 3; it died 3 times within 60s: giving up, stopping everything" in err


async def test_a_hung_child_is_reported_then_killed_and_restarted(capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor(policy=FAST)
    await supervisor.start(_http_child("hangs", free_port()))
    await supervisor.start(_http_child("budgets", free_port(), essential=False))
    waiting = asyncio.create_task(supervisor.wait())
    hung = supervisor.status()["children"]["hangs"]["pid"]
    os.kill(hung, signal.SIGSTOP)
    await _until(lambda: supervisor.status()["children"]["hangs"]["state"] == "unhealthy", "reported unhealthy")
    assert supervisor.status()["status"] == "unavailable"  # an essential child cannot serve
    await _until(lambda: supervisor.status()["children"]["hangs"]["restarts"] == 1, "a restart")
    await _until(lambda: supervisor.status()["status"] == "ok", "healthy again")
    budgets = supervisor.status()["children"]["budgets"]["pid"]
    os.kill(budgets, signal.SIGSTOP)
    await _until(lambda: supervisor.status()["children"]["budgets"]["state"] == "unhealthy", "budgets unhealthy")
    assert supervisor.status()["status"] == "degraded"  # not essential: the gateway still serves
    await supervisor.stop()
    waiting.cancel()
    err = capsys.readouterr().err
    assert f"hangs (pid {hung}) does not answer its health check" in err
    assert "hangs has not answered 3 health checks in a row (" in err and "s); killing it" in err
    assert f"hangs (pid {hung}) was killed by signal SIGKILL; restarting it" in err


async def test_stop_ends_a_stopped_child_too() -> None:
    supervisor = Supervisor(policy=FAST, stop_timeout=5)
    await supervisor.start(_http_child("frozen", free_port()))
    pid = supervisor.status()["children"]["frozen"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    await supervisor.stop()
    assert supervisor.status()["children"]["frozen"]["pid"] is None

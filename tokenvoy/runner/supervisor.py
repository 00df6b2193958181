"""Start child processes, keep them alive, and stop them all together.

A child that dies is restarted on its own, after a delay that doubles with each death (capped); the other
children keep serving, so their requests in flight finish. A running child is health-checked every
``health_interval``: one that stops answering (hung, e.g. stopped or deadlocked) is reported at the first
missed check and killed after ``hang_checks`` of them, then restarted like a crashed one. A child that
dies ``max_deaths`` times within ``window`` seconds is given up on: everything stops and ``wait`` returns
1 with a message naming it. SIGINT/SIGTERM stops every child in order (Envoy first, after its ``drain`` hook let the
requests in flight finish, so no new requests arrive while the services behind it drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

HealthCheck = Callable[[], Awaitable[bool]]
LineFilter = Callable[[bytes], bytes]


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    health: HealthCheck
    stdout: int | None = None  # None: inherit (Envoy's access log goes to our stdout)
    env: dict[str, str] | None = None
    # True: the gateway cannot serve while this child is down (ratelimit is not: Envoy fails open without it)
    essential: bool = True
    # Each line the child writes to stderr goes through this before reaching ours (Envoy: secrets redacted)
    stderr_filter: Callable[[], LineFilter] | None = None
    drain: Callable[[], Awaitable[object]] | None = None  # awaited before its SIGTERM (Envoy: finish in-flight)


@dataclass(frozen=True)
class RestartPolicy:
    initial_delay: float = 0.5  # before the first restart; doubles with each death in ``window``
    max_delay: float = 8.0
    max_deaths: int = 5  # this many deaths within ``window`` seconds: give up
    window: float = 60.0
    health_interval: float = 1.0
    health_timeout: float = 1.0
    recheck_interval: float = 0.25  # after a missed check: is it hung, or was it busy for a moment?
    hang_checks: int = 3  # consecutive missed health checks before a running child is killed and restarted

    def delay(self, deaths_in_window: int) -> float:
        return min(self.initial_delay * 2 ** max(deaths_in_window - 1, 0), self.max_delay)


@dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    state: str = "starting"  # starting, up, unhealthy, restarting, stopped
    restarts: int = 0
    last_exit: str = ""
    deaths: deque[float] = field(default_factory=deque)
    waiter: asyncio.Task[int] = field(init=False)
    pump: asyncio.Task[None] | None = None


class ChildFailed(Exception):
    pass


def _say(message: str) -> None:
    print(f"tokenvoy: {message}", file=sys.stderr, flush=True)


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``was killed by signal SIGKILL`` (asyncio gives a signal as ``-signum``)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by signal {name}"
    return f"exited with code {returncode}"


async def _pump(stream: asyncio.StreamReader, line_filter: LineFilter) -> None:
    out = sys.stderr.buffer
    while line := await stream.readline():
        out.write(line_filter(line))
        out.flush()


class Supervisor:
    def __init__(
        self, startup_timeout: float = 30.0, stop_timeout: float = 10.0, policy: RestartPolicy | None = None
    ) -> None:
        self._children: list[_Child] = []
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self.policy = policy or RestartPolicy()
        self._keepers: list[asyncio.Task[None]] = []
        self._gave_up: asyncio.Future[str] | None = None
        self._stopping = False

    async def _spawn(self, spec: ChildSpec) -> tuple[asyncio.subprocess.Process, asyncio.Task[None] | None]:
        stderr = asyncio.subprocess.PIPE if spec.stderr_filter else None
        process = await asyncio.create_subprocess_exec(
            *spec.argv, stdout=spec.stdout, stderr=stderr, stdin=asyncio.subprocess.DEVNULL, env=spec.env
        )
        pump = None
        if spec.stderr_filter and process.stderr is not None:
            pump = asyncio.create_task(_pump(process.stderr, spec.stderr_filter()))
        return process, pump

    async def _until_healthy(self, child: _Child) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if child.waiter.done():
                raise ChildFailed(f"{child.spec.name} {describe_exit(child.waiter.result())} while starting")
            with contextlib.suppress(Exception):
                if await asyncio.wait_for(child.spec.health(), self.policy.health_timeout + 1):
                    child.state = "up"
                    return
            if time.monotonic() > deadline:
                raise ChildFailed(f"{child.spec.name} did not become healthy within {self._startup_timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def start(self, spec: ChildSpec) -> None:
        process, pump = await self._spawn(spec)
        child = _Child(spec, process, pump=pump)
        child.waiter = asyncio.create_task(process.wait())
        self._children.append(child)
        await self._until_healthy(child)

    async def _watch(self, child: _Child) -> int:
        """Until the child's process ends (health-checking it meanwhile); its return code."""
        policy, missed, first_miss = self.policy, 0, 0.0
        while True:
            pause = policy.recheck_interval if missed else policy.health_interval
            done, _ = await asyncio.wait([child.waiter], timeout=pause)
            if done:
                return child.waiter.result()
            try:
                healthy = await asyncio.wait_for(child.spec.health(), policy.health_timeout + 1)
            except Exception:
                healthy = False
            if child.waiter.done():
                continue
            if healthy:
                if missed:
                    _say(f"{child.spec.name} answers its health check again")
                missed, child.state = 0, "up"
                continue
            missed += 1
            child.state = "unhealthy"
            if missed == 1:
                first_miss = time.monotonic()
                _say(f"{child.spec.name} (pid {child.process.pid}) does not answer its health check")
            if missed >= policy.hang_checks:
                waited = time.monotonic() - first_miss
                _say(f"{child.spec.name} has not answered {missed} health checks in a row ({waited:.1f}s); killing it")
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                return await child.waiter

    async def _keep(self, child: _Child) -> None:
        """Restart ``child`` whenever it dies, until it dies too often (then give up)."""
        policy = self.policy
        while True:
            code = await self._watch(child)
            if child.pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 1.0)
            now = time.monotonic()
            child.deaths.append(now)
            while child.deaths and child.deaths[0] < now - policy.window:
                child.deaths.popleft()
            child.state, child.last_exit = "restarting", describe_exit(code)
            name = f"{child.spec.name} (pid {child.process.pid})"
            if len(child.deaths) >= policy.max_deaths:
                message = (
                    f"{name} {child.last_exit}; it died {len(child.deaths)} times within {policy.window:.0f}s: "
                    "giving up, stopping everything"
                )
                self._give_up(message)
                return
            delay = policy.delay(len(child.deaths))
            _say(
                f"{name} {child.last_exit}; restarting it in {delay:.1f}s "
                f"(death {len(child.deaths)} of {policy.max_deaths} allowed within {policy.window:.0f}s)"
            )
            await asyncio.sleep(delay)
            try:
                child.process, child.pump = await self._spawn(child.spec)
            except OSError as exc:  # e.g. the binary is gone: nothing to restart
                self._give_up(f"{child.spec.name} cannot be restarted ({exc}); stopping everything")
                return
            child.waiter = asyncio.create_task(child.process.wait())
            child.restarts += 1
            child.state = "starting"
            try:
                await self._until_healthy(child)
            except ChildFailed as exc:
                _say(str(exc))
                if not child.waiter.done():
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                continue  # _watch returns at once: counted as another death
            _say(f"{child.spec.name} restarted (pid {child.process.pid}) and healthy")

    def _give_up(self, message: str) -> None:
        if self._gave_up is not None and not self._gave_up.done():
            self._gave_up.set_result(message)

    async def wait(self) -> int:
        """Until a signal (exit 0) or a child that keeps dying (exit 1); restarts children meanwhile."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        self._gave_up = loop.create_future()
        self._keepers = [asyncio.create_task(self._keep(child)) for child in self._children]
        stop_task = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stop_task, self._gave_up], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if self._gave_up in done:
            _say(self._gave_up.result())
            return 1
        _say("stopping")
        return 0

    async def stop(self) -> None:
        self._stopping = True
        for keeper in self._keepers:
            keeper.cancel()
        for keeper in self._keepers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
        for child in reversed(self._children):  # Envoy was started last: it stops first
            child.state = "stopped"
            if child.process.returncode is None:
                if child.spec.drain is not None:
                    try:
                        await child.spec.drain()
                    except Exception as exc:  # a drain that fails must not keep the child running
                        _say(f"{child.spec.name}: draining failed ({exc}); stopping it now")
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
                    child.process.send_signal(signal.SIGCONT)  # a stopped (hung) child must see the SIGTERM
                try:
                    await asyncio.wait_for(asyncio.shield(child.waiter), self._stop_timeout)
                except TimeoutError:
                    _say(f"{child.spec.name} did not stop within {self._stop_timeout:.0f}s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                    await child.waiter
            if child.pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 1.0)

    def signal(self, name: str, signum: int) -> bool:
        """Send ``signum`` to the child called ``name`` once it has started (a child still starting may not
        handle the signal yet, and reads its files as they are anyway); False if there is none."""
        for child in self._children:
            if child.spec.name == name and child.state in ("up", "unhealthy") and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signum)
                    return True
        return False

    def status(self) -> dict[str, Any]:
        """Each child's state, and whether the gateway can serve (every essential child up)."""
        children = {
            child.spec.name: {
                "state": child.state,
                "pid": child.process.pid if child.process.returncode is None else None,
                "restarts": child.restarts,
                **({"last_exit": child.last_exit} if child.last_exit else {}),
                **({} if child.spec.essential else {"essential": False}),
            }
            for child in self._children
        }
        serving = all(child.state == "up" for child in self._children if child.spec.essential)
        degraded = any(child.state != "up" for child in self._children)
        status = "unavailable" if not serving or self._stopping else "degraded" if degraded else "ok"
        return {"status": status, "children": children}

    @property
    def names(self) -> Sequence[str]:
        return [child.spec.name for child in self._children]

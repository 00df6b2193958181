"""Start child processes, wait until each is healthy, and stop them all together.

A child that dies stops the rest with a message naming it; SIGINT/SIGTERM stops every child in order
(Envoy first, after its ``drain`` hook let the requests in flight finish, so no new requests arrive while the
services behind it drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

HealthCheck = Callable[[], Awaitable[bool]]


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    health: HealthCheck
    stdout: int | None = None  # None: inherit (Envoy's access log goes to our stdout)
    env: dict[str, str] | None = None
    drain: Callable[[], Awaitable[object]] | None = None  # awaited before its SIGTERM (Envoy: finish in-flight)


@dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    waiter: asyncio.Task[int] = field(init=False)


class ChildFailed(Exception):
    pass


def _say(message: str) -> None:
    print(f"tokenvoy: {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, startup_timeout: float = 30.0, stop_timeout: float = 10.0) -> None:
        self._children: list[_Child] = []
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout

    async def start(self, spec: ChildSpec) -> None:
        process = await asyncio.create_subprocess_exec(
            *spec.argv, stdout=spec.stdout, stdin=asyncio.subprocess.DEVNULL, env=spec.env
        )
        child = _Child(spec, process)
        child.waiter = asyncio.create_task(process.wait())
        self._children.append(child)
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if child.waiter.done():
                raise ChildFailed(f"{spec.name} exited with code {child.waiter.result()} while starting")
            with contextlib.suppress(Exception):
                if await spec.health():
                    return
            if time.monotonic() > deadline:
                raise ChildFailed(f"{spec.name} did not become healthy within {self._startup_timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def wait(self) -> int:
        """Until a signal (exit 0) or a child's death (exit 1)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        stop_task = asyncio.create_task(stop.wait())
        waiters = {child.waiter: child for child in self._children}
        done, _ = await asyncio.wait([stop_task, *waiters], return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        for task in done:
            if task in waiters:
                child = waiters[task]
                _say(f"{child.spec.name} exited unexpectedly with code {task.result()}; stopping everything")
                return 1
        _say("stopping")
        return 0

    async def stop(self) -> None:
        for child in reversed(self._children):  # Envoy was started last: it stops first
            if child.process.returncode is None:
                if child.spec.drain is not None:
                    try:
                        await child.spec.drain()
                    except Exception as exc:  # a drain that fails must not keep the child running
                        _say(f"{child.spec.name}: draining failed ({exc}); stopping it now")
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(child.waiter), self._stop_timeout)
                except TimeoutError:
                    _say(f"{child.spec.name} did not stop within {self._stop_timeout:.0f}s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                    await child.waiter

    def signal(self, name: str, signum: int) -> bool:
        """Send ``signum`` to the running child called ``name``; False if there is none."""
        for child in self._children:
            if child.spec.name == name and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signum)
                    return True
        return False

    @property
    def names(self) -> Sequence[str]:
        return [child.spec.name for child in self._children]

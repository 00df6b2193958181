"""The service shell both gRPC services share: listen addresses, health, drain, the event loop, the file watcher."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.filewatch import FileWatcher, files_digest
from tokenvoy.grpcserver import (
    config_health_service,
    grpc_client_target,
    parse_listen,
    run,
    serve_until_signalled,
    start_service,
)
from tokenvoy.runner.run import uvloop_args

# ---- listen addresses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "[::1]:0", "localhost:65535"])
def test_host_and_port_are_served_as_given(listen: str) -> None:
    assert parse_listen(listen) == listen


@pytest.mark.parametrize("listen", ["8081", "127.0.0.1:", ":8081", "127.0.0.1:http", "127.0.0.1:65536", "unix:"])
def test_a_malformed_address_is_refused_with_its_text(listen: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_listen(listen)


def test_a_stale_socket_is_cleared_but_a_regular_file_is_never_deleted(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))
    assert parse_listen(f"unix://{stale}") == f"unix:{stale}"
    assert not stale.exists()

    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a socket"):
        parse_listen(f"unix:{precious}")
    assert precious.read_text() == "keep me"


# ---- health, drain, config version --------------------------------------------------------------------------


async def _status(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            return -1
        return reply.status


async def test_health_says_serving_then_not_serving_once_stop_is_asked(tmp_path: Path) -> None:
    listen = f"unix:{tmp_path / 'svc.sock'}"
    service = await start_service("demo", listen, lambda server: ["demo.v1.Demo"])
    target = grpc_client_target(listen)
    assert await _status(target) == health_pb2.HealthCheckResponse.SERVING
    assert await _status(target, "demo.v1.Demo") == health_pb2.HealthCheckResponse.SERVING

    await service.serve_config_version("aaaa")
    await service.serve_config_version("bbbb")
    assert await _status(target, config_health_service("bbbb", "demo")) == health_pb2.HealthCheckResponse.SERVING
    assert await _status(target, config_health_service("aaaa", "demo")) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _status(target, config_health_service("cccc", "demo")) == -1

    stop = asyncio.Event()
    reloads: list[str] = []
    serving = asyncio.create_task(serve_until_signalled(service, 1.0, reload=lambda: reloads.append("x"), stop=stop))
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.1)
    assert reloads == ["x"]
    stop.set()
    await serving
    assert service.tasks == []


async def test_an_address_in_use_is_an_os_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await start_service("demo", f"127.0.0.1:{port}", lambda server: [])


# ---- the event loop -----------------------------------------------------------------------------------------


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_services_run_on_uvloop_unless_turned_off() -> None:
    assert run(_loop_type()) is uvloop.Loop
    assert not issubclass(run(_loop_type(), use_uvloop=False), uvloop.Loop)


# ---- the file watcher ---------------------------------------------------------------------------------------


def test_the_watcher_sees_an_edit_a_replacement_a_removal_and_a_return(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("a: 1\n")
    second.write_text("b: 1\n")
    watcher = FileWatcher([first, second])
    assert watcher.changed() == []

    first.write_text("a: 22\n")
    assert watcher.changed() == [str(first)]
    watcher.mark()
    assert watcher.changed() == []

    replacement = tmp_path / "b.new"
    replacement.write_text("b: 2\n")  # same size: the inode tells (an editor's rename, a ConfigMap's symlink swap)
    replacement.replace(second)
    assert watcher.changed() == [str(second)]
    watcher.mark()

    second.unlink()
    assert watcher.changed() == [str(second)]
    watcher.mark()
    assert watcher.changed() == []
    second.write_text("b: 3\n")
    assert watcher.changed() == [str(second)]


def test_the_digest_names_the_bytes_read(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("one\n")
    watcher = FileWatcher([config])
    text, digest = watcher.read_stable(lambda paths: Path(paths[0]).read_text())
    assert (text, digest) == ("one\n", files_digest([str(config)]))
    config.write_text("two\n")
    assert files_digest([str(config)]) != digest


async def test_polling_reports_changes_and_survives_a_failing_handler(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("one\n")
    watcher = FileWatcher([config])
    seen: list[list[str]] = []
    errors: list[BaseException] = []

    def on_change(changed: list[str]) -> None:
        watcher.mark()
        seen.append(changed)
        if len(seen) == 1:
            raise RuntimeError("a bug in the reload")

    polling = asyncio.create_task(watcher.poll(0.01, on_change, errors.append))
    try:
        config.write_text("two, longer\n")
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        config.write_text("three, longer still\n")
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        polling.cancel()
    assert seen == [[str(config)], [str(config)]]
    assert [str(e) for e in errors] == ["a bug in the reload"]


def test_tokenvoy_run_turns_uvloop_off_for_both_services_by_its_environment_variable() -> None:
    assert uvloop_args({}) == []
    assert uvloop_args({"TOKENVOY_NO_UVLOOP": "0"}) == []
    assert uvloop_args({"TOKENVOY_NO_UVLOOP": "1"}) == ["--no-uvloop"]


@pytest.mark.parametrize("flags, loop", [([], "uvloop"), (["--no-uvloop"], "asyncio")])
def test_extproc_and_ratelimit_say_which_event_loop_serves(tmp_path: Path, flags: list[str], loop: str) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("domain: ai\ndescriptors: []\n")
    commands = {
        "extproc": ["extproc", "--no-admin"],
        "ratelimit": ["ratelimit", "--config", str(budgets), "--admin-listen", "off"],
    }
    for name, command in commands.items():
        sock = tmp_path / f"{name}.sock"
        log = tmp_path / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "tokenvoy", *command, "--listen", f"unix:{sock}", *flags], stderr=stderr
            )
        try:
            deadline = time.monotonic() + 30
            while f"(event loop: {loop})" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{name} did not start: {log.read_text()}"
                time.sleep(0.05)
            assert asyncio.run(_status(f"unix:{sock}")) == health_pb2.HealthCheckResponse.SERVING
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0

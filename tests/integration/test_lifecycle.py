"""What users see when a part of the gateway is missing, dies or is asked to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.config.loader import load_text
from tokenvoy.render.bootstrap import render_bootstrap
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.runner.run import envoy_binary


def _wait_ready(admin_port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "envoy exited while starting"
        try:
            if httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("envoy not ready")


def test_extproc_not_running_gives_a_fast_clear_5xx(tmp_path: Path) -> None:
    listener_port, admin_port = free_port(), free_port()
    config = load_text(gateway_config(listener_port, free_port(), 1000))
    options = EnvoyOptions(
        extproc_address=f"unix:{tmp_path / 'nobody-listens.sock'}",
        ratelimit_address=f"unix:{tmp_path / 'nobody-either.sock'}",
        admin_port=admin_port,
    )
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(yaml.safe_dump(render_bootstrap(config, options)))
    argv = [envoy_binary(), "-c", str(bootstrap), "--disable-hot-restart", "--log-level", "error"]
    envoy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(admin_port, envoy)
        started = time.monotonic()
        response = httpx.post(
            f"http://127.0.0.1:{listener_port}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        elapsed = time.monotonic() - started
    finally:
        envoy.terminate()
        envoy.wait(10)
    assert response.status_code == 500
    assert elapsed < 5, f"took {elapsed:.1f}s: a missing extproc must fail fast, not hang"
    error = response.json()["error"]
    assert error["type"] == "gateway_unavailable"
    assert "extproc" in error["message"]


def _health(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    reply = httpx.get(f"{gateway.admin_url}/healthz", timeout=5)
    return reply.status_code, reply.json()


def _pid(gateway: Gateway, child: str) -> int:
    pid = _health(gateway)[1]["children"][child]["pid"]
    assert pid, f"{child} is not running"
    return int(pid)


def _until(predicate: Callable[[], bool], what: str, gateway: Gateway, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}\n{gateway.stderr()}")
        time.sleep(0.1)


def _restarted(gateway: Gateway, child: str, times: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        code, health = _health(gateway)
        return code == 200 and health["children"][child]["restarts"] >= times and health["status"] == "ok"

    return check


def _chat(gateway: Gateway, **extra: Any) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"x-user-id": "alice"}, timeout=60)


def test_healthz_reports_every_child_up(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        code, health = _health(gateway)
        assert code == 200 and health["status"] == "ok"
        assert set(health["children"]) == {
            f"fake provider 127.0.0.1:{gateway.fake_url.rsplit(':', 1)[1]}",
            "ratelimit",
            "extproc",
            "envoy",
        }
        assert {child["state"] for child in health["children"].values()} == {"up"}
        assert sorted(child["pid"] for child in health["children"].values()) == sorted(gateway.children())
    finally:
        gateway.stop()


def test_a_crashed_extproc_is_restarted_and_the_gateway_serves_again(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        others = {name: _pid(gateway, name) for name in ("envoy", "ratelimit")}
        extproc = _pid(gateway, "extproc")
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-user-id": "alice", "x-testupstream-chunk-delay-ms": "300"}
        received, cut = b"", False
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as stream:
            chunks = stream.iter_raw()
            received += next(chunks)
            os.kill(extproc, signal.SIGKILL)  # it was reading this stream's answer
            try:
                for chunk in chunks:
                    received += chunk
            except httpx.HTTPError:
                cut = True
        assert cut and b"data: [DONE]" not in received  # the stream it was processing is cut
        _until(_restarted(gateway, "extproc"), "extproc restarted", gateway)
        assert _chat(gateway).status_code == 200
        assert {name: _pid(gateway, name) for name in others} == others  # nobody else was touched
        assert _health(gateway)[1]["children"]["extproc"]["last_exit"] == "was killed by signal SIGKILL"
        assert f"extproc (pid {extproc}) was killed by signal SIGKILL; restarting it in 0.5s" in gateway.stderr()
    finally:
        assert gateway.stop() == 0


def test_ratelimit_killed_while_a_stream_is_in_flight_the_stream_finishes_and_requests_are_served(
    tmp_path: Path,
) -> None:
    gateway = start_gateway(tmp_path)
    try:
        client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-testupstream-chunk-delay-ms": "300", "x-user-id": "alice"},
        )
        chunks = iter(stream)
        first = next(chunks)
        ratelimit = _pid(gateway, "ratelimit")
        os.kill(ratelimit, signal.SIGKILL)
        _until(lambda: "ratelimit (pid" in gateway.stderr(), "the death reported", gateway)
        served = _chat(gateway)  # while ratelimit is down or restarting: fail open
        rest = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert text == _chat(gateway).json()["choices"][0]["message"]["content"]  # the whole answer arrived
        assert served.status_code == 200
        _until(_restarted(gateway, "ratelimit"), "ratelimit restarted", gateway)
        assert f"ratelimit (pid {ratelimit}) was killed by signal SIGKILL; restarting it" in gateway.stderr()
    finally:
        assert gateway.stop() == 0


def test_a_restarted_in_memory_ratelimit_starts_counting_again(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, budget_tokens=20)
    try:
        statuses = [_chat(gateway, max_tokens=16).status_code for _ in range(4)]
        assert statuses[-1] == 429, statuses  # alice spent her 20 tokens
        os.kill(_pid(gateway, "ratelimit"), signal.SIGKILL)
        _until(_restarted(gateway, "ratelimit"), "ratelimit restarted", gateway)
        assert _chat(gateway, max_tokens=16).status_code == 200  # its counters were in its memory
    finally:
        assert gateway.stop() == 0


def test_a_hung_ratelimit_is_reported_and_requests_are_served_meanwhile(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        ratelimit = _pid(gateway, "ratelimit")
        os.kill(ratelimit, signal.SIGSTOP)  # slower than Envoy's 200 ms: the check times out
        _until(lambda: _health(gateway)[1]["children"]["ratelimit"]["state"] != "up", "reported", gateway)
        code, health = _health(gateway)
        assert (code, health["status"]) == (200, "degraded")  # fail open: the gateway still serves
        assert _chat(gateway).status_code == 200
        _until(_restarted(gateway, "ratelimit"), "the hung ratelimit replaced", gateway)
        assert f"ratelimit (pid {ratelimit}) does not answer its health check" in gateway.stderr()
    finally:
        assert gateway.stop() == 0


def test_a_hung_extproc_answers_503_on_healthz_then_is_replaced(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        extproc = _pid(gateway, "extproc")
        os.kill(extproc, signal.SIGSTOP)
        started = time.monotonic()
        during = _chat(gateway)  # stuck until the hung extproc is killed, then Envoy answers
        elapsed = time.monotonic() - started
        print(f"request during the hang answered after {elapsed:.1f}s")
        assert during.status_code == 500 and during.json()["error"]["type"] == "gateway_unavailable"
        stderr = gateway.stderr()
        assert f"extproc (pid {extproc}) does not answer its health check" in stderr
        assert "extproc has not answered 3 health checks in a row" in stderr
        _until(_restarted(gateway, "extproc"), "extproc replaced", gateway)
        assert _chat(gateway).status_code == 200
    finally:
        assert gateway.stop() == 0


def test_healthz_is_503_while_extproc_is_hung(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        os.kill(_pid(gateway, "extproc"), signal.SIGSTOP)
        replies: list[tuple[int, dict[str, Any]]] = []

        def unavailable() -> bool:
            replies.append(_health(gateway))
            return replies[-1][0] == 503

        _until(unavailable, "503", gateway)
        health = replies[-1][1]
        assert health["status"] == "unavailable"
        assert health["children"]["extproc"]["state"] in ("unhealthy", "restarting", "starting")
        _until(_restarted(gateway, "extproc"), "extproc replaced", gateway)
    finally:
        assert gateway.stop() == 0


def test_a_killed_envoy_is_restarted_on_the_same_port(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        envoy = _pid(gateway, "envoy")
        os.kill(envoy, signal.SIGKILL)
        _until(_restarted(gateway, "envoy"), "envoy restarted", gateway)
        assert _chat(gateway).status_code == 200
        assert f"envoy (pid {envoy}) was killed by signal SIGKILL; restarting it" in gateway.stderr()
    finally:
        assert gateway.stop() == 0


def test_a_child_that_keeps_dying_stops_everything_with_a_message_naming_it(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    children = gateway.children()
    name = f"fake provider 127.0.0.1:{gateway.fake_url.rsplit(':', 1)[1]}"
    for death in range(1, 5):
        os.kill(_pid(gateway, name), signal.SIGKILL)
        _until(_restarted(gateway, name, death), f"restart {death}", gateway)
    os.kill(_pid(gateway, name), signal.SIGKILL)
    assert gateway.process.wait(60) == 1
    assert f"{name} (pid" in gateway.stderr() and "it died 5 times within 60s: giving up" in gateway.stderr()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"child {pid} still running"


def test_sigterm_stops_every_child_and_exits_zero(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    children = gateway.children()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    assert gateway.stop(signal.SIGTERM) == 0
    assert "tokenvoy: stopping" in gateway.stderr()
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in children)


def test_sigterm_lets_a_stream_in_flight_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    """`docker stop`: Envoy stops accepting, the open stream gets all its events, then everything exits 0."""
    gateway = start_gateway(tmp_path)
    body = {"model": "m", "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-testupstream-chunk-delay-ms": "250"}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30) as reply:
        lines = reply.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        gateway.process.send_signal(signal.SIGTERM)
        rest = list(lines)
    assert first.startswith("data: {")
    assert "data: [DONE]" in rest, rest[-3:]
    assert len([line for line in rest if line.startswith("data: {")]) >= 8, "every word arrived"
    assert gateway.stop(signal.SIGTERM) == 0
    try:
        httpx.get(f"{gateway.url}/v1/models", timeout=2)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the gateway still accepts connections after SIGTERM")


def test_a_busy_port_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        config = tmp_path / "gateway.yaml"
        config.write_text(gateway_config(busy_port, free_port(), 1000))
        argv = [sys.executable, "-m", "tokenvoy", "run", "--config", str(config), "--run-dir", str(tmp_path / "run")]
        argv += ["--admin-port", str(free_port())]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"127.0.0.1:{busy_port} (gateway listener)" in result.stderr
    assert "port already in use" in result.stderr


def test_an_invalid_config_names_the_resource_and_field(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        gateway_config(free_port(), free_port(), 1000).replace("name: fake\n  annotations", "name: fak\n  annotations")
    )
    argv = [sys.executable, "-m", "tokenvoy", "run", "--config", str(config), "--run-dir", str(tmp_path / "run")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "AIServiceBackend/fake: spec.backendRef.name: Backend/fake does not exist" in result.stderr
    assert str(config) in result.stderr


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True

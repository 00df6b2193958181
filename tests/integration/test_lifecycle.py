"""What users see when a part of the gateway is missing, dies or is asked to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.integration.conftest import free_port, gateway_config, start_gateway
from tokenvoy.config.loader import load_text
from tokenvoy.render.envoy import EnvoyOptions, render_bootstrap
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


def test_a_child_that_dies_stops_the_rest_with_a_message_naming_it(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    children = gateway.children()
    assert len(children) == 4  # fake provider, ratelimit, extproc, envoy
    extproc = next(pid for pid in children if b"extproc" in Path(f"/proc/{pid}/cmdline").read_bytes())
    os.kill(extproc, signal.SIGKILL)
    assert gateway.process.wait(30) == 1
    assert "extproc exited unexpectedly" in gateway.stderr()
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

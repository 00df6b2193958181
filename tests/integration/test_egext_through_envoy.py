"""The extension server's output served by the real Envoy, with extproc on the sidecar's Unix socket: a
cross-provider fallback that native EG mode cannot do.

EG's own xDS (its ``egctl translate`` example, the HTTPRoute's cluster in the DNS shape a Backend with fqdn
endpoints gets) goes through ``PostTranslateModify``; the HTTP listener (its routes inlined: EG serves them
over RDS), the AI cluster and the extproc cluster become Envoy's static config. The rule's first backendRef
(OpenAI) refuses connections, so Envoy retries to the next priority (Anthropic, the fake provider) and the
upstream filter translates that attempt for Anthropic.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import egext_xds as xds
from tests.ports import free_port
from tests.test_egext import AI_CLUSTER, FALLBACK, egctl, request_of
from tokenvoy.contract import EXTPROC_CLUSTER
from tokenvoy.egext import load_extension_config, post_translate_modify
from tokenvoy.runner.run import envoy_binary

HOST = "www.example.com"  # the example HTTPRoute's hostname


def _config(directory: Path, dead: int, fake: int) -> Path:
    text = FALLBACK.read_text()
    text = text.replace("hostname: api.openai.com\n        port: 443", f"hostname: localhost\n        port: {dead}")
    text = text.replace("hostname: api.anthropic.com\n        port: 443", f"hostname: localhost\n        port: {fake}")
    assert text.count("hostname: localhost") == 2
    path = directory / "gateway.yaml"
    path.write_text(text)
    return path


def _bootstrap(directory: Path, config: Path, socket: Path, listen: int, dead: int, fake: int, admin: int) -> Path:
    resources = egctl(localities=2)
    cluster = next(c for c in resources["clusters"] if c["name"] == AI_CLUSTER)
    for locality, port in zip(cluster["loadAssignment"]["endpoints"], (dead, fake), strict=True):
        locality["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"] = {"address": "127.0.0.1", "portValue": port}
    listener = next(item for item in resources["listeners"] if item["name"] == "default/eg/http")
    listener["address"]["socketAddress"] = {"address": "127.0.0.1", "portValue": listen}
    response = post_translate_modify(
        request_of(resources), load_extension_config([str(config)], extproc_socket=str(socket))
    )
    routes = {r.name: xds.decode("route", r.SerializeToString()) for r in response.routes}
    (served,) = [
        xds.decode("listener", raw.SerializeToString()) for raw in response.listeners if raw.name == listener["name"]
    ]
    hcm = served["defaultFilterChain"]["filters"][0]["typedConfig"]
    hcm["routeConfig"] = routes[hcm.pop("rds")["routeConfigName"]]
    clusters = [
        xds.decode("cluster", c.SerializeToString())
        for c in response.clusters
        if c.name in (AI_CLUSTER, EXTPROC_CLUSTER)
    ]
    bootstrap = {
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": admin}}},
        "staticResources": {"listeners": [served], "clusters": clusters},
    }
    path = directory / "envoy.json"
    # envoy-data-plane writes an empty Any as {"@type": ""}; EG's JSON (and Envoy's) is {}
    path.write_text(json.dumps(bootstrap).replace('"config": {"@type": ""}', '"config": {}'))
    return path


def _start(argv: list[str], logs: Path, name: str) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.out").open("wb") as out, (logs / f"{name}.err").open("wb") as err:
        return subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    directory = tmp_path_factory.mktemp("egext")
    listen, dead, fake, admin = (free_port() for _ in range(4))
    socket = directory / "extproc.sock"
    config = _config(directory, dead, fake)
    bootstrap = _bootstrap(directory, config, socket, listen, dead, fake, admin)
    tokenvoy = [sys.executable, "-m", "tokenvoy"]
    processes = [
        _start([*tokenvoy, "testupstream", "--port", str(fake)], directory, "fake"),
        _start(
            [*tokenvoy, "extproc", "--config", str(config), "--listen", f"unix:{socket}", "--no-admin"],
            directory,
            "extproc",
        ),
    ]
    url, fake_url = f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{fake}"
    try:
        deadline = time.monotonic() + 90
        while not socket.exists():
            assert all(p.poll() is None for p in processes), f"a process exited; logs in {directory}"
            assert time.monotonic() < deadline, f"extproc did not start; logs in {directory}"
            time.sleep(0.2)
        envoy = [envoy_binary(), "-c", str(bootstrap), "--log-level", "warn", "--disable-hot-restart"]
        processes.append(_start(envoy, directory, "envoy"))
        while True:
            assert all(p.poll() is None for p in processes), f"a process exited; logs in {directory}"
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Envoy did not come up; logs in {directory}"
            time.sleep(0.2)
        yield url, fake_url, directory
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_openai_down_falls_back_to_anthropic_translated_per_attempt(stack: tuple[str, str, Path]) -> None:
    url, fake_url, directory = stack
    answer = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"host": HOST},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]},
        timeout=60,
    )
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}; logs in {directory}"
    body = answer.json()
    assert body["object"] == "chat.completion"  # the client's API, translated back from Anthropic's
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    received = httpx.get(f"{fake_url}/__testupstream/requests", timeout=10).json()
    # EG's listener is an edge (use_remote_address): Envoy replaces the client's x-request-id
    (sent,) = received  # the first attempt (OpenAI, priority 0) was refused before any byte
    assert sent["path"] == "/v1/messages"  # Anthropic's API, for the attempt that reached Anthropic
    assert sent["headers"]["authorization"] == "Bearer sk-ant-test"  # the credential of that backend
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert int(sent["headers"]["content-length"]) == len(sent["body"].encode())  # restored upstream
    assert json.loads(sent["body"])["model"] == "claude-haiku-4-5"  # its modelNameOverride


def test_a_streamed_chat_falls_back_too(stack: tuple[str, str, Path]) -> None:
    url, _, directory = stack
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers={"host": HOST},
        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Count to three"}]},
        timeout=60,
    ) as answer:
        assert answer.status_code == 200, f"{answer.status_code}; logs in {directory}"
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

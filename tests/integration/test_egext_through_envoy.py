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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import egext_xds as xds
from tests.integration.egstack import Processes, cluster_stat, envoy, tokenvoy
from tests.ports import free_port
from tests.test_egext import AI_CLUSTER, FALLBACK, egctl, request_of
from tokenvoy.contract import EXTPROC_CLUSTER
from tokenvoy.egext import load_extension_config, post_translate_modify

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


@dataclass
class ExtensionStack:
    url: str
    fake_url: str
    admin_url: str
    logs: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtensionStack]:
    directory = tmp_path_factory.mktemp("egext")
    listen, dead, fake, admin = (free_port() for _ in range(4))
    socket = directory / "extproc.sock"
    config = _config(directory, dead, fake)
    bootstrap = _bootstrap(directory, config, socket, listen, dead, fake, admin)
    processes = Processes(directory)
    try:
        processes.start("fake", tokenvoy("testupstream", "--port", str(fake)))
        processes.start(
            "extproc", tokenvoy("extproc", "--config", str(config), "--listen", f"unix:{socket}", "--no-admin")
        )
        processes.wait(socket.exists, "extproc's socket")  # Envoy's first request must find the sidecar
        processes.start("envoy", envoy(bootstrap))
        processes.wait_for_url(f"http://127.0.0.1:{admin}/ready", "Envoy")
        processes.wait_for_url(f"http://127.0.0.1:{fake}/__testupstream/requests", "the fake provider")
        yield ExtensionStack(
            f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{fake}", f"http://127.0.0.1:{admin}", directory
        )
    finally:
        processes.stop()


def test_openai_down_falls_back_to_anthropic_translated_per_attempt(stack: ExtensionStack) -> None:
    url, fake_url, directory = stack.url, stack.fake_url, stack.logs
    refused_before = cluster_stat(stack.admin_url, AI_CLUSTER, "upstream_cx_connect_fail")
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
    # the first attempt went to the OpenAI locality of EG's cluster (priority 0), whose endpoint refused it
    assert cluster_stat(stack.admin_url, AI_CLUSTER, "upstream_cx_connect_fail") > refused_before


def test_a_streamed_chat_falls_back_too(stack: ExtensionStack) -> None:
    url, directory = stack.url, stack.logs
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

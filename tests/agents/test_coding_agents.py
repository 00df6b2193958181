"""The real coding-agent CLIs, from the npm registry, against the default ``tokenvoy run``.

Claude Code, Codex, Cline and gemini-cli (versions pinned in ``clis.py``, installed once per cache) run
non-interactively with a throwaway HOME, telemetry and updates off, every base URL on 127.0.0.1. Between
each CLI and the gateway sits a recording proxy: what the CLI sends is compared with
tests/fixtures/agents/requests.json (``TOKENVOY_RECORD_AGENTS=1`` rewrites it from this run). Each
(CLI, backend schema) pair the client API reaches is asserted as it behaves today: the fake's answer on the
CLI's stdout, the tool round trip (the fakes call the first tool offered, then answer text after its
result) and the access log's token counts. Pairs tokenvoy cannot serve yet are asserted as their current
failure, with the reason beside them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agents import clis, recording
from tests.agents.recorder import Recorded, Recorder
from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.config.defaults import DEFAULT_BUDGET_TOKENS_PER_HOUR
from tokenvoy.testupstream.openai_chat import WORDS

SENTENCE = " ".join(WORDS)  # every fake's natural answer
PROMPT = "Say hello to the gateway"
RECORD = os.environ.get("TOKENVOY_RECORD_AGENTS") == "1"


@pytest.fixture(scope="module")
def prefix() -> Path:
    return clis.install()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The default config as ``tokenvoy run`` has it: one model per backend schema, 100,000 tokens a user."""
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, DEFAULT_BUDGET_TOKENS_PER_HOUR, showcase=True)
    running = start_gateway(tmp_path_factory.mktemp("agents"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def recorder(gateway: Gateway) -> Iterator[Recorder]:
    proxy = Recorder(gateway.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _matches_fixture(client: str, version: str, model: str, request: Recorded) -> None:
    """The CLI's main request has the recorded shape (or, when recording, becomes it)."""
    observed = {"version": version, "model": model, "request": recording.shape(request)}
    fixture = recording.load() if recording.FIXTURE.exists() else {}
    if RECORD:
        recording.save({**fixture, client: observed})
        return
    assert fixture.get(client) == observed, f"{client} sends something else than the fixture records"


def _log_entries(gateway: Gateway, predicate: Callable[[dict[str, Any]], bool], count: int) -> list[dict[str, Any]]:
    """At least ``count`` access-log lines matching (Envoy flushes its log about once a second)."""
    deadline = time.monotonic() + 15
    while True:
        entries = [entry for entry in gateway.access_log() if predicate(entry)]
        if len(entries) >= count or time.monotonic() > deadline:
            assert len(entries) >= count, entries
            return entries
        time.sleep(0.2)


def _metered(entry: dict[str, Any], backend: str) -> None:
    assert entry["response_code"] == 200, entry
    assert entry["genai_backend_name"] == backend, entry
    for key in ("genai_tokens_input", "genai_tokens_output", "genai_tokens_total"):
        assert entry[key] > 0, (key, entry)


def _blocks(request: Recorded) -> list[dict[str, Any]]:
    last = request.json()["messages"][-1]["content"]
    return last if isinstance(last, list) else []


# -- Claude Code (Anthropic Messages API at /anthropic) -----------------------------------------------------

CLAUDE = clis.VERSIONS["@anthropic-ai/claude-code"]


CLAUDE_BACKENDS = [
    ("claude-sonnet-4-6", "fake-anthropic", "Anthropic"),
    ("claude-haiku-4-5@20251001", "fake-vertex-anthropic", "GCPAnthropic"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "AWSAnthropic"),
    ("gpt-4o-mini", "fake", "OpenAI"),
    ("amazon.nova-lite-v1:0", "fake-bedrock", "AWSBedrock"),
    ("azure-gpt-4o-mini", "fake-azure", "AzureOpenAI"),
    ("gemini-2.5-flash", "fake-vertex", "GCPVertexAI"),
]


@pytest.mark.parametrize(("model", "backend", "schema"), CLAUDE_BACKENDS, ids=[s for _, _, s in CLAUDE_BACKENDS])
def test_claude_code_answers_with_a_tool_round_trip_through_every_messages_schema(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path, model: str, backend: str, schema: str
) -> None:
    """Claude Code as users run it: its default beta flags (Bedrock is sent only those AWS documents), adaptive
    thinking, effort, context management and, for model names it does not know (``gpt-4o-mini``, Nova), a
    ``role: "system"`` message at ``messages[1]`` (translated for OpenAI and Converse)."""
    user = f"claude-{uuid.uuid4().hex[:8]}"
    done = clis.claude_code(prefix, home, recorder.url, model, PROMPT, user)
    assert done.returncode == 0, done
    assert done.stdout.strip() == SENTENCE

    turns = [r for r in recorder.requests if r.target == "/anthropic/v1/messages?beta=true"]
    assert len(turns) >= 2, [r.target for r in recorder.requests]
    first = turns[0].json()
    assert first["max_tokens"] == 32000 and first["stream"] is True
    assert {"context_management", "thinking", "metadata"} <= set(first)
    assert "claude-code-20250219" in turns[0].headers["anthropic-beta"]
    if schema in ("OpenAI", "AWSBedrock", "AzureOpenAI", "GCPVertexAI"):  # a model name Claude Code does not know
        assert first["messages"][1]["role"] == "system"
    # The fake called the one tool offered (Read); Claude Code ran it and sent its result back.
    results = [b for b in _blocks(turns[-1]) if b.get("type") == "tool_result"]
    assert results and results[0]["tool_use_id"], results
    if backend == "fake-anthropic":
        _matches_fixture("claude-code", CLAUDE, model, turns[0])

    entries = _log_entries(gateway, lambda e: e.get("x-user-id") == user, count=2)
    for entry in entries:
        _metered(entry, backend)


# -- Codex (OpenAI Responses API) ---------------------------------------------------------------------------

CODEX = clis.VERSIONS["@openai/codex"]


def test_codex_refuses_the_chat_wire_api_at_config_load(prefix: Path, home: Path) -> None:
    """Why Codex needs ``/v1/responses``: its chat-completions provider mode is gone."""
    done = clis.codex(prefix, home, "http://127.0.0.1:9", "gpt-4o-mini", PROMPT, "nobody", wire_api="chat")
    assert done.returncode != 0
    assert '`wire_api = "chat"` is no longer supported' in done.stderr


CODEX_BACKENDS = [
    ("gpt-4o-mini", "fake", "OpenAI"),
    ("azure-gpt-4o-mini", "fake-azure", "AzureOpenAI"),
    ("claude-sonnet-4-6", "fake-anthropic", "Anthropic"),
    ("amazon.nova-lite-v1:0", "fake-bedrock", "AWSBedrock"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "AWSAnthropic"),
    ("gemini-2.5-flash", "fake-vertex", "GCPVertexAI"),
    ("claude-haiku-4-5@20251001", "fake-vertex-anthropic", "GCPAnthropic"),
]
PASSED_THROUGH = ("OpenAI", "AzureOpenAI")  # the Responses API as it is; the others get it translated


@pytest.mark.parametrize(("model", "backend", "schema"), CODEX_BACKENDS, ids=[s for _, _, s in CODEX_BACKENDS])
def test_codex_answers_with_a_tool_round_trip(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path, model: str, backend: str, schema: str
) -> None:
    """``codex exec`` with ``wire_api = "responses"``: the Responses API to each backend schema (translated to
    Chat Completions, then to the schema, for all but OpenAI and Azure, with Codex's built-in web search and
    sub-agent tools turned off: those run only on OpenAI). The fake calls Codex's first function tool
    (``exec_command``); Codex runs it and sends the call and its output back, then prints the fake's text
    answer. Every turn is metered."""
    user = f"codex-{uuid.uuid4().hex[:8]}"
    translated = schema not in PASSED_THROUGH
    done = clis.codex(prefix, home, recorder.url, model, PROMPT, user, function_tools_only=translated)
    assert done.returncode == 0, done
    assert SENTENCE in done.stdout, done

    turns = [r for r in recorder.requests if r.target == "/v1/responses"]
    assert len(turns) >= 2, [r.target for r in recorder.requests]
    first = turns[0]
    assert first.headers["authorization"] == "Bearer unused"
    assert first.json()["stream"] is True
    if schema == "OpenAI":
        _matches_fixture("codex", CODEX, model, first)
    # The fake called Codex's first function tool; Codex ran it and sent the call and its output back.
    items = turns[1].json()["input"]
    calls = {i["call_id"] for i in items if i.get("type") == "function_call"}
    outputs = {i["call_id"] for i in items if i.get("type") == "function_call_output"}
    assert calls and calls == outputs

    entries = _log_entries(gateway, lambda e: e.get("x-user-id") == user, count=2)
    for entry in entries:
        _metered(entry, backend)


def test_codex_with_its_built_in_tools_on_is_refused_by_a_translated_backend(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path
) -> None:
    """By default Codex also offers OpenAI's built-in web search and its sub-agent tool group, which only the
    Responses API itself runs: a translated backend answers a 422 naming them, before any provider is called."""
    user = f"codex-built-in-{uuid.uuid4().hex[:8]}"
    done = clis.codex(prefix, home, recorder.url, "claude-sonnet-4-6", PROMPT, user)
    assert done.returncode != 0
    assert "cannot be sent to backend 'fake-anthropic'" in done.stderr, done.stderr[-2000:]
    assert "('web_search')" in done.stderr and "('namespace' 'multi_agent_v1')" in done.stderr
    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user)
    assert entry["response_code"] == 422


# -- Cline (its OpenAI-compatible provider) -----------------------------------------------------------------

CLINE = clis.VERSIONS["cline"]
CHAT_BACKENDS = [
    ("gpt-4o-mini", "fake", "OpenAI"),
    ("azure-gpt-4o-mini", "fake-azure", "AzureOpenAI"),
    ("claude-sonnet-4-6", "fake-anthropic", "Anthropic"),
    ("amazon.nova-lite-v1:0", "fake-bedrock", "AWSBedrock"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "AWSAnthropic"),
    ("gemini-2.5-flash", "fake-vertex", "GCPVertexAI"),
    ("claude-haiku-4-5@20251001", "fake-vertex-anthropic", "GCPAnthropic"),
]


def _run_result(stdout: str) -> dict[str, Any]:
    events = [orjson.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return next(e for e in events if e.get("type") == "run_result")


@pytest.mark.parametrize(("model", "backend", "schema"), CHAT_BACKENDS, ids=[s for _, _, s in CHAT_BACKENDS])
def test_cline_answers_with_a_tool_round_trip_through_every_chat_schema(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path, model: str, backend: str, schema: str
) -> None:
    done = clis.cline(prefix, home, recorder.url, model, PROMPT)
    assert done.returncode == 0, done
    result = _run_result(done.stdout)
    assert result["finishReason"] == "completed", result
    assert result["text"] and SENTENCE.startswith(result["text"]), result["text"]

    turns = [r for r in recorder.requests if r.target == "/v1/chat/completions"]
    assert len(turns) >= 2, [r.target for r in recorder.requests]
    # The fake called Cline's first tool (read_files); Cline ran it and sent the result back.
    calls = turns[1].json()["messages"]
    call_ids = {c["id"] for m in calls if m["role"] == "assistant" for c in m.get("tool_calls") or []}
    answered = {m["tool_call_id"] for m in calls if m["role"] == "tool"}
    assert call_ids and call_ids == answered
    if schema == "OpenAI":
        _matches_fixture("cline", CLINE, model, turns[0])

    entries = _log_entries(
        gateway,
        lambda e: e.get("genai_model_name") == model and str(e.get("user-agent")).startswith("ai-sdk/"),
        count=2,
    )
    for entry in entries:
        _metered(entry, backend)


CLINE_ANTHROPIC = [
    ("claude-sonnet-4-6", "fake-anthropic", "Anthropic"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "AWSAnthropic"),
]


@pytest.mark.parametrize(("model", "backend", "schema"), CLINE_ANTHROPIC, ids=[s for _, _, s in CLINE_ANTHROPIC])
def test_cline_anthropic_provider_answers_with_the_anthropic_v1_base_url(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path, model: str, backend: str, schema: str
) -> None:
    """Cline's Anthropic provider calls ``<base>/messages``: the base URL the README gives it ends in ``/v1``."""
    done = clis.cline(prefix, home, recorder.url, model, PROMPT, provider="anthropic", path="/anthropic/v1")
    assert done.returncode == 0, done
    result = _run_result(done.stdout)
    assert result["finishReason"] == "completed", result
    assert result["text"] and SENTENCE.startswith(result["text"]), result["text"]
    turns = [r for r in recorder.requests if r.target.split("?")[0] == "/anthropic/v1/messages"]
    assert len(turns) >= 2, [r.target for r in recorder.requests]
    results = [b for b in _blocks(turns[-1]) if b.get("type") == "tool_result"]
    assert results, turns[-1].json()["messages"][-1]
    entries = _log_entries(
        gateway, lambda e: e.get("genai_model_name") == model and e.get("genai_backend_name") == backend, count=2
    )
    for entry in entries:
        _metered(entry, backend)


def test_cline_anthropic_provider_on_an_openai_backend_is_refused_for_its_web_search_server_tool(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path
) -> None:
    """Cline's Anthropic provider offers Anthropic's own ``web_search_20250305`` tool, which only Anthropic runs:
    toward an OpenAI-schema backend the gateway answers a 422 naming it (its OpenAI-compatible provider works)."""
    done = clis.cline(prefix, home, recorder.url, "gpt-4o-mini", PROMPT, provider="anthropic", path="/anthropic/v1")
    assert done.returncode != 0
    assert "Anthropic server tool 'web_search_20250305' only runs on Anthropic" in done.stdout
    assert recorder.requests[0].json()["tools"][0]["type"] == "web_search_20250305"


# -- gemini-cli (Gemini API) --------------------------------------------------------------------------------

GEMINI = clis.VERSIONS["@google/gemini-cli"]
GEMINI_TARGET = "/v1beta/models/{model}:streamGenerateContent?alt=sse"


@pytest.mark.parametrize(("model", "backend", "schema"), CHAT_BACKENDS, ids=[s for _, _, s in CHAT_BACKENDS])
def test_gemini_cli_answers_with_a_tool_round_trip_through_every_chat_schema(
    prefix: Path, gateway: Gateway, recorder: Recorder, home: Path, model: str, backend: str, schema: str
) -> None:
    """gemini-cli speaks Google's Gemini API (``GOOGLE_GEMINI_BASE_URL``, an ``x-goog-api-key``, or a Bearer
    key with ``GEMINI_API_KEY_AUTH_MECHANISM=bearer``, tried on the OpenAI schema): passed to Gemini on
    Vertex AI on Vertex's path, translated for every other schema; ``x-user-id`` from
    ``GEMINI_CLI_CUSTOM_HEADERS`` budgets it."""
    user = f"gemini-cli-{uuid.uuid4().hex[:8]}"
    bearer = schema == "OpenAI"
    done = clis.gemini_cli(prefix, home, recorder.url, model, PROMPT, user=user, bearer=bearer)
    assert done.returncode == 0, done
    assert done.stdout.strip() == SENTENCE

    turns = [r for r in recorder.requests if r.target == GEMINI_TARGET.format(model=model)]
    assert len(turns) >= 2, [r.target for r in recorder.requests]
    if bearer:
        assert turns[0].headers["authorization"] == "Bearer unused"  # (the SDK still adds its x-goog-api-key)
    else:
        assert turns[0].headers["x-goog-api-key"] == "unused"
    # The fake called gemini-cli's first tool; gemini-cli ran it and sent the result back.
    history = turns[1].json()["contents"]
    calls = [p["functionCall"] for c in history if c.get("role") == "model" for p in c["parts"] if "functionCall" in p]
    results = [p["functionResponse"] for c in history for p in c["parts"] if "functionResponse" in p]
    assert calls and [r["name"] for r in results] == [c["name"] for c in calls]
    if schema != "GCPVertexAI":  # the gateway named the call; gemini-cli answered that id
        assert [r["id"] for r in results] == [c["id"] for c in calls]
    if schema == "GCPVertexAI":
        _matches_fixture("gemini-cli", GEMINI, model, turns[0])

    entries = _log_entries(gateway, lambda e: e.get("x-user-id") == user, count=2)
    assert all(str(e.get("user-agent")).startswith("GeminiCLI") for e in entries)
    for entry in entries:
        _metered(entry, backend)

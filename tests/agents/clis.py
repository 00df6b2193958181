"""The real coding-agent CLIs from the npm registry: pinned versions, a cached install, and how to run each
one against a local gateway with a throwaway HOME, telemetry and auto-update off, and no other address.

Installed once into a cache directory (``$TOKENVOY_AGENT_CLIS``, else ``~/.cache/tokenvoy/agent-clis``) and
reused while the versions there are the pinned ones. Every package ships its native binary inside the
registry (Claude Code and Codex as per-platform optional dependencies, Cline as ``@cline/cli-<platform>``),
so nothing is downloaded from elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# The versions under test (the fixture tests/fixtures/agents/requests.json was recorded with these).
VERSIONS: dict[str, str] = {
    "@anthropic-ai/claude-code": "2.1.332",
    "@openai/codex": "0.171.0",
    "cline": "3.0.65",
    "@google/gemini-cli": "0.61.0",
}
INSTALL_TIMEOUT = 900.0  # seconds; a first install downloads ~1.4 GB of native binaries


def cache_dir() -> Path:
    configured = os.environ.get("TOKENVOY_AGENT_CLIS")
    return Path(configured) if configured else Path.home() / ".cache" / "tokenvoy" / "agent-clis"


def _installed_version(prefix: Path, package: str) -> str | None:
    manifest = prefix / "node_modules" / package / "package.json"
    try:
        return json.loads(manifest.read_text()).get("version")
    except (OSError, ValueError):
        return None


def install() -> Path:
    """The prefix holding every pinned CLI, installed with npm when any version there differs."""
    prefix = cache_dir()
    if all(_installed_version(prefix, name) == version for name, version in VERSIONS.items()):
        return prefix
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(
            "the coding-agent tests need `node` and `npm` on PATH to install "
            f"{', '.join(VERSIONS)} from the npm registry (Debian: apt-get install nodejs npm)"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in VERSIONS.items()]
    argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save", *specs]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"npm install {' '.join(specs)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    wrong = {n: _installed_version(prefix, n) for n, v in VERSIONS.items() if _installed_version(prefix, n) != v}
    if wrong:
        pytest.fail(f"npm installed other versions than pinned: {wrong}")
    return prefix


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: no key, proxy or config of the developer's leaks into the CLI."""
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Run:
    """Run a CLI in its own session; on timeout its whole process group is killed and the test fails."""
    with (cwd / "cli.stdout").open("w+") as out, (cwd / "cli.stderr").open("w+") as err:
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            out.seek(0)
            err.seek(0)
            pytest.fail(f"{argv[0]} did not finish within {timeout}s:\n{out.read()[-3000:]}\n{err.read()[-3000:]}")
        out.seek(0)
        err.seek(0)
        return Run(process.returncode, out.read(), err.read())


# -- each CLI's non-interactive invocation ------------------------------------------------------------------


def claude_code(prefix: Path, home: Path, base_url: str, model: str, prompt: str, user: str) -> Run:
    """``claude -p`` as users run it (default betas, thinking, effort, context management), with only the
    Read tool offered so the fake's call of the first tool is harmless (reading a file that is not there)."""
    env = base_env(home) | {
        "ANTHROPIC_BASE_URL": f"{base_url}/anthropic",
        "ANTHROPIC_API_KEY": "unused",
        "ANTHROPIC_CUSTOM_HEADERS": f"x-user-id: {user}",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "API_TIMEOUT_MS": "30000",
    }
    binary = str(prefix / "node_modules" / ".bin" / "claude")
    argv = [binary, "-p", prompt, "--model", model, "--tools", "Read", "--allowedTools", "Read"]
    return run(argv, env, home, timeout=90)


CODEX_CONFIG = """\
model = "{model}"
model_provider = "tokenvoy"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.tokenvoy]
name = "tokenvoy"
base_url = "{base_url}/v1"
env_key = "OPENAI_API_KEY"
wire_api = "{wire_api}"
http_headers = {{ "x-user-id" = "{user}" }}
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 20000
"""


# Codex's built-in tools off: web search (a Responses `web_search` tool) and sub-agents (a `namespace` tool
# group). Only its function tools are left, which tokenvoy translates to backends without the Responses API.
CODEX_FUNCTION_TOOLS_ONLY = """\
[agents]
enabled = false
"""


def codex(
    prefix: Path,
    home: Path,
    base_url: str,
    model: str,
    prompt: str,
    user: str,
    wire_api: str = "responses",
    function_tools_only: bool = False,
) -> Run:
    """``codex exec`` with a custom model provider in ``$CODEX_HOME/config.toml`` (no retries)."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    config = CODEX_CONFIG.format(model=model, base_url=base_url, wire_api=wire_api, user=user)
    if function_tools_only:
        config = 'web_search = "disabled"\n' + config + "\n" + CODEX_FUNCTION_TOOLS_ONLY
    (codex_home / "config.toml").write_text(config)
    env = base_env(home) | {"CODEX_HOME": str(codex_home), "OPENAI_API_KEY": "unused"}
    binary = str(prefix / "node_modules" / ".bin" / "codex")
    return run([binary, "exec", "--skip-git-repo-check", prompt], env, home, timeout=60)


def cline(
    prefix: Path, home: Path, base_url: str, model: str, prompt: str, provider: str = "openai", path: str = "/v1"
) -> Run:
    """``cline auth`` (its OpenAI-compatible provider ``-p openai`` by default) then ``cline --json``, in local
    mode (no background hub daemon left behind) with auto-update off. ``cline auth`` takes a base URL only for
    the OpenAI providers: for ``-p anthropic`` it is written into the provider's settings
    (``~/.cline/data/settings/providers.json``, ``baseUrl``), where the other providers keep theirs."""
    env = base_env(home) | {
        "CLINE_NO_AUTO_UPDATE": "1",
        "CLINE_SESSION_BACKEND_MODE": "local",
        "DISABLE_TELEMETRY": "1",
    }
    binary = str(prefix / "node_modules" / ".bin" / "cline")
    url = ["-b", f"{base_url}{path}"] if provider == "openai" else []
    auth = run([binary, "auth", "-p", provider, "-k", "unused", "-m", model, *url], env, home, 60)
    if auth.returncode != 0:
        pytest.fail(f"cline auth failed ({auth.returncode}):\n{auth.stdout}\n{auth.stderr}")
    if not url:
        settings_file = home / ".cline" / "data" / "settings" / "providers.json"
        settings = json.loads(settings_file.read_text())
        settings["providers"][provider]["settings"]["baseUrl"] = f"{base_url}{path}"
        settings_file.write_text(json.dumps(settings))
    return run([binary, "--json", "-t", "60", prompt], env, home, timeout=90)


GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


def gemini_cli(
    prefix: Path, home: Path, base_url: str, model: str, prompt: str, user: str | None = None, bearer: bool = False
) -> Run:
    """``gemini -p`` with an API key and ``GOOGLE_GEMINI_BASE_URL``; usage statistics and updates off.
    ``user``: sent as ``x-user-id`` (``GEMINI_CLI_CUSTOM_HEADERS``); ``bearer``: the key as
    ``Authorization: Bearer`` instead of ``x-goog-api-key`` (``GEMINI_API_KEY_AUTH_MECHANISM``)."""
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(GEMINI_SETTINGS))
    env = base_env(home) | {
        "GEMINI_API_KEY": "unused",
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GEMINI_CLI_NO_RELAUNCH": "1",
    }
    if user is not None:
        env["GEMINI_CLI_CUSTOM_HEADERS"] = f"x-user-id: {user}"
    if bearer:
        env["GEMINI_API_KEY_AUTH_MECHANISM"] = "bearer"
    binary = str(prefix / "node_modules" / ".bin" / "gemini")
    return run([binary, "-p", prompt, "-m", model], env, home, timeout=60)

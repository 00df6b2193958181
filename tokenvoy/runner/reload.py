"""Live reload for ``tokenvoy run``: a changed config file reaches new requests, requests in flight finish.

Every second the config files are stat'ed. On a change they are loaded and checked like at start (the
loader, credentials and CEL costs, the typed Envoy messages, then ``envoy --mode validate`` on the result);
any problem refuses the edit (one log line each) and the previous config keeps serving. A good config
is applied in the order that keeps each request consistent (docs/reload.md):

1. ``ratelimit.yaml`` is replaced and the ratelimit service told (SIGHUP): limits apply from its next call.
2. extproc is told (SIGHUP) and must report, through its gRPC health, that it serves this very version of
   the files. New requests use the new config; a request in flight keeps the one it started with, and
   extproc still knows the previous configs' endpoints for attempts Envoy routes by them.
3. Envoy's filesystem xDS files are replaced: first the clusters of both configs (routes never name a
   cluster Envoy lacks), then routes and listener, then the new clusters alone. Each step waits until
   Envoy's admin reports the version.

What cannot change while running (the listener's address and port, a ratelimit service that was not
started, a fake provider on a new port) is logged as "restart needed" and kept as it was; the rest applies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenvoy.config.loader import ConfigError, load_config
from tokenvoy.config.model import GatewayConfig
from tokenvoy.extproc.runtime import build_runtime
from tokenvoy.filewatch import DEFAULT_POLL_INTERVAL_S, FileWatcher
from tokenvoy.grpcserver import config_health_service
from tokenvoy.render.budgets import render_ratelimit_config
from tokenvoy.render.envoy import EnvoyOptions
from tokenvoy.render.files import XDS_DIR, dump, replace_file, write_xds
from tokenvoy.runner.health import grpc_serving, http_get
from tokenvoy.runner.secrets import write_direct_secrets
from tokenvoy.runner.supervisor import Supervisor
from tokenvoy.runner.workers import ExtprocWorker, extproc_workers

POLL_INTERVAL_S = DEFAULT_POLL_INTERVAL_S
EXTPROC_CONFIRM_TIMEOUT_S = 15.0  # loading cloud credentials may take a while
ENVOY_APPLY_TIMEOUT_S = 10.0  # a DNS cluster warms up before Envoy swaps it in


def _say(message: str) -> None:
    print(f"tokenvoy: {message}", file=sys.stderr, flush=True)


def with_overrides(config: GatewayConfig, port: int | None, host: str | None) -> GatewayConfig:
    """``--port`` / ``--host`` win over the config's Gateway listener, at start and at every reload."""
    listener = config.listener
    if port is not None:
        listener = dataclasses.replace(listener, port=port)
    if host is not None:
        listener = dataclasses.replace(listener, address=host)
    return dataclasses.replace(config, listener=listener)


def fake_endpoints(config: GatewayConfig) -> set[tuple[str, int]]:
    return {(b.endpoint.host, b.endpoint.port) for b in config.backends.values() if b.fake_provider}


def plan(
    running: GatewayConfig, new: GatewayConfig, ratelimit_running: bool, fakes_running: set[tuple[str, int]]
) -> tuple[GatewayConfig, GatewayConfig, list[str]]:
    """What to apply of ``new`` while ``running`` serves: (the config for extproc and the budgets, the one
    Envoy gets, the "restart needed" notes for what is kept as it was)."""
    notes = []
    if new.listener != running.listener:
        was, wanted = running.listener, new.listener
        notes.append(
            f"the listener moves to {wanted.address}:{wanted.port} only when tokenvoy run restarts; "
            f"it keeps serving on {was.address}:{was.port}"
        )
        new = dataclasses.replace(new, listener=was)
    envoy = new
    if new.budgets and not ratelimit_running:
        notes.append(
            "budgets need the ratelimit service, which tokenvoy run starts only when the config has budgets "
            "at start: they are not enforced until a restart"
        )
        envoy = dataclasses.replace(new, budgets=())
    for host, port in sorted(fake_endpoints(new) - fakes_running):
        notes.append(f"the fake provider on {host}:{port} starts only when tokenvoy run restarts")
    return new, envoy, notes


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-lines:])


class Reloader:
    """Watches the config files of a running ``tokenvoy run`` and applies good edits (module docstring)."""

    def __init__(
        self,
        *,
        paths: Sequence[str],
        run_dir: Path,
        options: EnvoyOptions,
        supervisor: Supervisor,
        config: GatewayConfig,
        digest: str,
        port: int | None = None,
        host: str | None = None,
        envoy_binary: str,
        interval: float = POLL_INTERVAL_S,
        extproc: Sequence[ExtprocWorker] = (),
    ) -> None:
        self.files = FileWatcher(paths)
        self.paths = self.files.paths
        self.run_dir = run_dir
        self.xds_dir = (run_dir / XDS_DIR).resolve()
        self.options = options
        self.supervisor = supervisor
        self.config = config  # what serves now (restart-only parts as at start)
        self.digest = digest
        self.port, self.host = port, host
        self.envoy_binary = envoy_binary
        self.interval = interval
        self.extproc = list(extproc) or extproc_workers(run_dir, 1)  # every extproc process loads each version
        self.ratelimit_running = bool(config.budgets)
        self.fakes_running = fake_endpoints(config)
        self.generation = 0
        from tokenvoy.render import bootstrap

        self._clusters = bootstrap.backend_clusters(config, options)  # what Envoy's CDS holds now

    async def run(self) -> None:
        """Poll forever (cancel to stop); an unexpected error is logged and polling goes on."""

        def report(exc: BaseException) -> None:  # a bug must not stop the gateway: say it, keep serving
            _say(f"reload failed unexpectedly ({type(exc).__name__}: {exc}); the previous config keeps serving")

        await self.files.poll(self.interval, lambda _changed: self.reload(), report)

    def _refuse(self, problems: Sequence[str]) -> bool:
        for problem in problems:
            _say(f"reload refused: {problem}")
        _say("the previous config keeps serving; fix the file and save it again")
        return False

    async def reload(self) -> bool:
        started = time.monotonic()
        self.files.mark()
        try:
            new, digest = await asyncio.to_thread(self.files.read_stable, load_config)
            new = with_overrides(new, self.port, self.host)
            await asyncio.to_thread(build_runtime, new)  # credentials and CEL costs, as at start
        except ConfigError as exc:
            return self._refuse(exc.problems)
        if digest == self.digest:
            return True  # saved without a change
        config, envoy_config, notes = plan(self.config, new, self.ratelimit_running, self.fakes_running)
        try:
            rendered = await asyncio.to_thread(self._render, envoy_config)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError: a typed message refused a value
            return self._refuse([f"the Envoy config cannot be built: {exc}"])
        if problem := await self._envoy_refuses(rendered["static"]):
            return self._refuse([f"Envoy refuses the rendered config: {problem}"])
        for note in notes:
            _say(f"restart needed: {note}")
        if self.ratelimit_running:
            replace_file(self.run_dir / "ratelimit.yaml", dump(rendered["ratelimit"]))
            self.supervisor.signal("ratelimit", signal.SIGHUP)
        if not await self._extproc_serves(digest):
            return False
        if self.options.secrets_dir is not None:  # before Envoy reads a cluster that names a new key's file
            await asyncio.to_thread(write_direct_secrets, config, Path(self.options.secrets_dir))
        await self._update_envoy(rendered["resources"], digest)
        self.config, self.digest = config, digest
        routes = ", ".join(route.name for route in config.routes)
        _say(
            f"reloaded {', '.join(self.paths)} in {time.monotonic() - started:.1f}s (version {digest}; routes: "
            f"{routes}; backends: {', '.join(config.backends)}); requests in flight finish on the previous config"
        )
        return True

    def _render(self, config: GatewayConfig) -> dict[str, Any]:
        from tokenvoy.render import bootstrap

        return {
            "resources": bootstrap.dynamic_resources(config, self.options, self.xds_dir),
            "static": bootstrap.to_json(bootstrap.static_bootstrap(config, self.options)),
            "ratelimit": render_ratelimit_config(config),
        }

    async def _envoy_refuses(self, static_bootstrap: dict[str, Any]) -> str | None:
        """``envoy --mode validate`` on the same resources in one file: Envoy's own checks (regexes, CEL,
        ranges) before anything changes. None when Envoy accepts them."""
        with tempfile.TemporaryDirectory(prefix="tokenvoy-validate-") as directory:
            path = Path(directory) / "envoy.yaml"
            path.write_text(dump(static_bootstrap), encoding="utf-8")
            process = await asyncio.create_subprocess_exec(
                self.envoy_binary,
                "--mode",
                "validate",
                "-c",
                str(path),
                "--log-level",
                "error",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
            output, _ = await process.communicate()
        return None if process.returncode == 0 else _tail(output.decode(errors="replace"))

    async def _extproc_serves(self, digest: str) -> bool:
        """SIGHUP every extproc process and wait until each one's gRPC health says it serves exactly these
        files (a worker restarted meanwhile reads them at its start)."""
        waiting = list(self.extproc)
        for worker in waiting:
            self.supervisor.signal(worker.name, signal.SIGHUP)
        deadline = time.monotonic() + EXTPROC_CONFIRM_TIMEOUT_S
        while time.monotonic() < deadline:
            for worker in list(waiting):
                try:
                    if await grpc_serving(worker.listen, config_health_service(digest)):
                        waiting.remove(worker)
                except Exception:  # NOT_FOUND until extproc has loaded this version
                    pass
            if not waiting:
                return True
            if self.files.changed():
                _say("the config changed again while extproc was loading it; applying the newer version next")
                return False
            await asyncio.sleep(0.1)
        names = ", ".join(worker.name for worker in waiting)
        _say(
            f"reload not applied: {names} did not load version {digest} within {EXTPROC_CONFIRM_TIMEOUT_S:.0f}s "
            "(its log above says why); Envoy keeps the previous config"
        )
        return False

    async def _update_envoy(self, resources: Any, digest: str) -> None:
        from tokenvoy.render.bootstrap import DynamicResources

        self.generation += 1
        new_names = {cluster.name for cluster in resources.clusters}
        union = [*resources.clusters, *(c for c in self._clusters if c.name not in new_names)]
        steps = [
            ("clusters", DynamicResources([], [], union), f"{digest}.{self.generation}.add", True, False),
            ("routes and listener", resources, f"{digest}.{self.generation}", False, True),
        ]
        if len(union) > len(resources.clusters):
            steps.append(("unused clusters removed", resources, f"{digest}.{self.generation}", True, False))
        for what, step, version, cds, routes in steps:
            write_xds(step, self.xds_dir, version, cds=cds, routes=routes)
            if not await self._envoy_reports(version, cds=cds, routes=routes):
                _say(
                    f"Envoy did not apply the new {what} (version {version}) within {ENVOY_APPLY_TIMEOUT_S:.0f}s; "
                    "see Envoy's log above"
                )
        self._clusters = list(resources.clusters)

    async def _envoy_reports(self, version: str, *, cds: bool, routes: bool) -> bool:
        readouts = [
            *(["cluster_manager.cds"] if cds else []),
            *(["listener_manager.lds", "http.tokenvoy.rds.tokenvoy"] if routes else []),
        ]
        pattern = "|".join(re.escape(name) for name in readouts)
        path = f"/stats?filter=^({pattern})\\.version_text$"
        deadline = time.monotonic() + ENVOY_APPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                admin = self.options.admin_socket
                _, body = await http_get("127.0.0.1", self.options.admin_port, path, unix=admin)
            except OSError:
                body = b""
            found = dict(re.findall(rb'^([\w.]+)\.version_text: "(.*)"$', body, re.MULTILINE))
            if all(found.get(name.encode()) == version.encode() for name in readouts):
                return True
            await asyncio.sleep(0.05)
        return False

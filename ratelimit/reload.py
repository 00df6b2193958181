"""Reading the config files, and reloading them when they change (polled every second) or on SIGHUP.

A reload only swaps the immutable :class:`RateLimitConfig` the service reads for each request: counters
live in the backend under keys made of the domain, the request's descriptor values and the window start,
so they carry over (a budget raised from 100 to 200 keeps what was already spent). A file that fails to
load keeps the previous configuration in force and the error is logged with the file, domain and
descriptor path. Polling ``stat`` (mtime, size, inode) needs no dependency and also sees Kubernetes
ConfigMap updates, which swap a symlink instead of writing the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import RateLimitConfig, RateLimitConfigError, load_config
from .metrics import RateLimitMetrics

__all__ = ["DEFAULT_POLL_INTERVAL_S", "ConfigWatcher", "describe_config", "read_config_files"]

logger = logging.getLogger("tokenvoy.ratelimit")

DEFAULT_POLL_INTERVAL_S = 1.0

_Signature = tuple[int, int, int, int] | str


def read_config_files(paths: Sequence[str | os.PathLike[str]]) -> RateLimitConfig:
    """Read and parse rate limit YAML files (one domain each); errors name the file."""
    if not paths:
        raise RateLimitConfigError("no rate limit configuration file given")
    sources: list[tuple[str, str]] = []
    for path in paths:
        name = os.fspath(path)
        try:
            sources.append((name, Path(name).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise RateLimitConfigError(f"{name}: cannot read: {reason}") from None
    return load_config(sources)


def describe_config(config: RateLimitConfig) -> str:
    """``ai (2 limits, budgets.yaml), ...`` for startup and reload log lines."""
    parts = [
        f"{name} ({d.limit_count} limit{'' if d.limit_count == 1 else 's'}, {d.source})"
        for name, d in sorted(config.domains.items())
    ]
    return ", ".join(parts) or "none"


def _signature(path: str) -> _Signature:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class ConfigWatcher:
    """Loads the config files and hands every successfully reloaded version to ``apply``.

    Nothing here blocks for long: a reload reads and parses a few small files on the event loop.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        apply: Callable[[RateLimitConfig], None] | None = None,
        *,
        interval: float = DEFAULT_POLL_INTERVAL_S,
        metrics: RateLimitMetrics | None = None,
    ) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.apply = apply  # set by the server once the service exists
        self.interval = interval
        self._metrics = metrics
        self._seen: list[_Signature] = []

    def _signatures(self) -> list[_Signature]:
        return [_signature(p) for p in self.paths]

    def load(self) -> RateLimitConfig:
        """Initial load: raises :class:`RateLimitConfigError`. Stat first, so an edit during the read is seen."""
        seen = self._signatures()
        config = read_config_files(self.paths)
        self._seen = seen
        return config

    def check(self) -> bool | None:
        """Reload if any file changed since the last attempt: True/False for the result, None if unchanged."""
        seen = self._signatures()
        if seen == self._seen:
            return None
        previous = self._seen or [""] * len(seen)
        changed = [path for path, old, new in zip(self.paths, previous, seen, strict=True) if old != new]
        # reload() records the new signatures first, so a broken edit is reported once, not every second
        return self.reload(f"{', '.join(changed)} changed")

    def reload(self, reason: str) -> bool:
        """Load now (``reason`` goes into the log line); on failure keep the previous configuration."""
        self._seen = self._signatures()
        try:
            config = read_config_files(self.paths)
        except RateLimitConfigError as exc:
            logger.error("rate limit config reload failed (%s), keeping the previous configuration: %s", reason, exc)
            if self._metrics is not None:
                self._metrics.config_reloads.labels("failure").inc()
            return False
        if self.apply is not None:
            self.apply(config)
        logger.info("rate limit config reloaded (%s), domains: %s", reason, describe_config(config))
        if self._metrics is not None:
            self._metrics.config_reloads.labels("success").inc()
        return True

    async def run(self) -> None:
        """Poll forever (cancel to stop). Never raises: an unexpected error is logged and polling goes on."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:
                logger.exception("rate limit config watcher failed; will retry")

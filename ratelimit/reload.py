"""Reading the config files, and reloading them when they change (polled every second) or on SIGHUP.

A reload only swaps the immutable :class:`RateLimitConfig` the service reads for each request: counters
live in the backend under keys made of the domain, the request's descriptor values and the window start,
so they carry over (a budget raised from 100 to 200 keeps what was already spent). A file that fails to
load keeps the previous configuration in force and the error is logged with the file, domain and
descriptor path. Polling ``stat`` (mtime, size, inode) needs no dependency and also sees Kubernetes
ConfigMap updates, which swap a symlink instead of writing the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tokenvoy.filewatch import DEFAULT_POLL_INTERVAL_S, FileWatcher, log_watch_error

from .config import RateLimitConfig, RateLimitConfigError, load_config
from .metrics import RateLimitMetrics

__all__ = ["DEFAULT_POLL_INTERVAL_S", "ConfigWatcher", "describe_config", "read_config_files"]

logger = logging.getLogger("tokenvoy.ratelimit")


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
        self.files = FileWatcher(paths)
        self.paths = self.files.paths
        self.apply = apply  # set by the server once the service exists
        self.interval = interval
        self._metrics = metrics

    def load(self) -> RateLimitConfig:
        """Initial load: raises :class:`RateLimitConfigError`. Stat first, so an edit during the read is seen."""
        self.files.mark()
        return read_config_files(self.paths)

    def check(self) -> bool | None:
        """Reload if any file changed since the last attempt: True/False for the result, None if unchanged."""
        changed = self.files.changed()
        if not changed:
            return None
        # reload() marks the files first, so a broken edit is reported once, not every second
        return self.reload(f"{', '.join(changed)} changed")

    def reload(self, reason: str) -> bool:
        """Load now (``reason`` goes into the log line); on failure keep the previous configuration."""
        self.files.mark()
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
        await self.files.poll(
            self.interval,
            lambda changed: self.reload(f"{', '.join(changed)} changed"),
            log_watch_error(logger, "rate limit"),
        )

"""One watcher for the config files of extproc, ratelimit and ``tokenvoy run``: polls ``stat``, not content.

``stat`` (device, inode, mtime, size) is cheap every second, needs no dependency, and sees a file that was
replaced rather than written (editors that save by rename, Kubernetes ConfigMaps that swap a symlink).
The content digest names one version of the files: ``tokenvoy run`` waits for extproc to serve that
version (docs/reload.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["DEFAULT_POLL_INTERVAL_S", "FileWatcher", "files_digest"]

DEFAULT_POLL_INTERVAL_S = 1.0

Signature = tuple[int, int, int, int] | str
T = TypeVar("T")


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)  # a missing file is a state too: its return is a change
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def files_digest(paths: Sequence[str]) -> str:
    """Names one version of ``paths`` (their names and bytes; an unreadable file by its error)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fsencode(path) + b"\0")
        try:
            digest.update(Path(path).read_bytes())
        except OSError as exc:
            digest.update(f"unreadable: {exc.strerror}".encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class FileWatcher:
    """Tells which of ``paths`` changed since the last :meth:`mark`.

    Mark *before* reading the files: an edit made during the read is then seen by the next check, and a
    broken edit is reported once, not at every poll.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self._seen = self._signatures()

    def _signatures(self) -> list[Signature]:
        return [_signature(p) for p in self.paths]

    def mark(self) -> None:
        """The files as they are now are the ones seen."""
        self._seen = self._signatures()

    def changed(self) -> list[str]:
        """The paths whose ``stat`` differs from the last :meth:`mark` (empty: nothing changed)."""
        return [path for path, old, new in zip(self.paths, self._seen, self._signatures(), strict=True) if old != new]

    def read_stable(self, load: Callable[[Sequence[str]], T], attempts: int = 5) -> tuple[T, str]:
        """``load(paths)`` and the digest of exactly the bytes it read (read again if a file changed meanwhile)."""
        for _ in range(attempts):
            before = files_digest(self.paths)
            value = load(self.paths)
            if files_digest(self.paths) == before:
                break
        return value, before

    async def poll(
        self,
        interval: float,
        on_change: Callable[[list[str]], Awaitable[object] | object],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Every ``interval`` seconds, call ``on_change(changed paths)`` if some changed; forever (cancel to stop).
        ``on_change`` marks (or reloads, which marks). An unexpected error goes to ``on_error`` and polling goes on.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                changed = self.changed()
                if changed:
                    result = on_change(changed)
                    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                        await result
            except Exception as exc:
                on_error(exc)


def log_watch_error(logger: logging.Logger, what: str) -> Callable[[BaseException], None]:
    """An ``on_error`` for :meth:`FileWatcher.poll` that logs the traceback and says polling goes on."""

    def report(exc: BaseException) -> None:
        logger.error("%s config watcher failed; will retry", what, exc_info=exc)

    return report

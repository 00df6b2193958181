"""Where counters live. The limiter is pure; a backend is the only thing that does I/O.

One :meth:`CounterBackend.add` call per RLS request carries every counter the request touches, so a
networked backend can apply them in a single round trip and atomically (a Redis Lua script doing
``INCRBY`` + floor at 0 + ``EXPIREAT`` per key), and so an in-process backend needs no locking under
asyncio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .limiter import CounterOp

__all__ = ["BackendUnavailable", "CounterBackend", "CounterOp"]


class BackendUnavailable(Exception):
    """The counters cannot be read or written right now (network, timeout, server down).

    The service answers such calls by its failure mode (open or closed) instead of a gRPC error, so the
    outcome does not depend on Envoy's ``failure_mode_deny``. Any other exception is a bug and becomes
    ``UNAVAILABLE``.
    """


@runtime_checkable
class CounterBackend(Protocol):
    """Storage for fixed-window counters."""

    @property
    def available(self) -> bool:
        """False while the storage is known to be unreachable (exported as a metric, read at scrape time)."""
        ...

    async def add(self, ops: Sequence[CounterOp]) -> list[int]:
        """Apply ``ops`` in order and return each counter's value right after its own op.

        Contract: a delta of 0 reads without creating anything; a negative delta never takes a counter
        below 0; a counter may be dropped once the clock reaches its ``expires_at`` (the end of its
        window: its key embeds the window start, so it is never read again). Ops naming the same key
        see each other's effect, in order. Raises :class:`BackendUnavailable` when the storage cannot
        be reached; it must then give up quickly (Envoy's filter timeout is a few hundred ms at most).
        """
        ...

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...

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

__all__ = ["CounterBackend", "CounterOp"]


@runtime_checkable
class CounterBackend(Protocol):
    """Storage for fixed-window counters."""

    async def add(self, ops: Sequence[CounterOp]) -> list[int]:
        """Apply ``ops`` in order and return each counter's value right after its own op.

        Contract: a delta of 0 reads without creating anything; a negative delta never takes a counter
        below 0; a counter may be dropped once the clock reaches its ``expires_at`` (the end of its
        window: its key embeds the window start, so it is never read again). Ops naming the same key
        see each other's effect, in order.
        """
        ...

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...

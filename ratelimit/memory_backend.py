"""In-process counters: for a single ratelimit instance, tests and the local demo.

Counters are lost on restart and not shared between processes; use a shared backend (Redis) when more
than one ratelimit server enforces the same budgets.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence

from .limiter import CounterOp

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Dict of counters with expiry by window.

    Counters are grouped by ``expires_at`` (all counters of one window and unit share it), and a heap of
    those times lets each call drop every expired group in O(expired) work, so memory stays bounded by
    the counters of the windows that are still open.
    """

    __slots__ = ("_clock", "_counts", "_expiry_heap", "_groups")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._groups: dict[int, list[str]] = {}
        self._expiry_heap: list[int] = []

    @property
    def available(self) -> bool:
        """Always: the counters are in this process."""
        return True

    def __len__(self) -> int:
        """Number of live counters (after the last sweep)."""
        return len(self._counts)

    async def add(self, ops: Sequence[CounterOp]) -> list[int]:
        """See :meth:`tokenvoy.ratelimit.backend.CounterBackend.add`. Atomic: no await inside."""
        self._sweep(self._clock())
        counts = self._counts
        results: list[int] = []
        for op in ops:
            current = counts.get(op.key)
            if current is None:
                if op.delta <= 0:
                    results.append(0)  # reads and refunds of an unknown counter store nothing
                    continue
                counts[op.key] = op.delta
                self._track(op.key, op.expires_at)
                results.append(op.delta)
                continue
            value = current + op.delta
            if value < 0:
                value = 0
            counts[op.key] = value
            results.append(value)
        return results

    async def close(self) -> None:
        """Drop everything."""
        self._counts.clear()
        self._groups.clear()
        self._expiry_heap.clear()

    def _track(self, key: str, expires_at: int) -> None:
        group = self._groups.get(expires_at)
        if group is None:
            self._groups[expires_at] = [key]
            heapq.heappush(self._expiry_heap, expires_at)
        else:
            group.append(key)

    def _sweep(self, now: float) -> None:
        heap = self._expiry_heap
        while heap and heap[0] <= now:
            for key in self._groups.pop(heapq.heappop(heap)):
                self._counts.pop(key, None)

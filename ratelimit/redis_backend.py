"""Redis counters: one budget shared by every ratelimit replica, surviving their restarts.

Each :meth:`RedisBackend.add` is **one** round trip: an ``EVALSHA`` of a small Lua script that applies
all the request's ops atomically (Redis runs a script without interleaving other commands), so two
replicas charging the same counter can never lose an update, and a check (``GET``) sees every charge
committed before it. ``EVAL`` is the fallback when Redis answers ``NOSCRIPT`` (after a Redis restart or
``SCRIPT FLUSH``); it also caches the script again.

Key layout: ``<prefix><domain>_<key1>_<value1>_..._<window start>`` with the default prefix
``tokenvoy:rl:``, e.g. ``tokenvoy:rl:ai_budget_gpt_x-user-id_alice_1700000000``. The window start is in the
key, so each window is a new key; the first write of a key sets its TTL to the end of its window, so
Redis drops old windows by itself. The TTL is computed from this process's clock (``expires_at - now``),
so a replica whose clock is a little off from Redis's still keeps its counter for the whole window.

Availability: every call is bounded by ``timeout`` (default 50 ms). A connection error or timeout marks
the backend unavailable: calls then fail at once with :class:`BackendUnavailable` (no connection attempt
per request) while a background task pings Redis with exponential backoff, and the first successful ping
makes the backend available again. The service decides what to answer meanwhile (its failure mode) and
logs the incident; this module logs nothing above debug level.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
import urllib.parse
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .backend import BackendUnavailable
from .limiter import CounterOp

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT_S",
    "MAX_COUNTER",
    "RedisBackend",
    "redact_url",
]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "tokenvoy:rl:"
DEFAULT_TIMEOUT_S = 0.05
# Connecting (or a TLS handshake) may take longer than one call may wait: the probe and the first
# connection get this much, so a slow connect still ends up in the pool that calls reuse.
CONNECT_TIMEOUT_S = 1.0
PROBE_MIN_BACKOFF_S = 0.05
PROBE_MAX_BACKOFF_S = 2.0

# Counters and deltas are capped at 2**40 (far above any uint32 limit, so no answer changes): Lua numbers
# are doubles that Redis turns into text with 14 significant digits, and INCRBY must stay far from int64
# overflow however many huge hits_addend values arrive.
MAX_COUNTER = 2**40

# KEYS[i]: counter i; ARGV[2i-1]: signed delta (|delta| <= cap); ARGV[2i]: TTL in seconds (to the window end).
# Returns the counter after each op. A read (0) or a refund (< 0) never creates a key and never goes below 0.
_SCRIPT = f"""
local cap = {MAX_COUNTER}
local out = {{}}
for i, key in ipairs(KEYS) do
  local delta = tonumber(ARGV[2 * i - 1])
  local v
  if delta > 0 then
    v = redis.call('INCRBY', key, delta)
    if v == delta then
      redis.call('EXPIRE', key, ARGV[2 * i])
    elseif v > cap then
      v = redis.call('DECRBY', key, v - cap)
    end
  else
    v = tonumber(redis.call('GET', key) or '0')
    if delta < 0 and v > 0 then
      v = redis.call('DECRBY', key, math.min(v, -delta))
    end
  end
  out[i] = v
end
return out
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


def redact_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class RedisBackend:
    """:class:`~tokenvoy.ratelimit.backend.CounterBackend` on Redis (``redis://``, ``rediss://``, ``unix://``).

    Needs Redis 2.6+ (Lua scripting) as a single server or a primary (Redis Cluster is not supported: the
    keys of one request would have to share a hash slot).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        max_backoff: float = PROBE_MAX_BACKOFF_S,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"redis timeout must be positive, got {timeout!r}")
        self.url = redact_url(url)
        self.prefix = prefix
        self.timeout = timeout
        self._clock = clock
        self._max_backoff = max_backoff
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=max(timeout, CONNECT_TIMEOUT_S),
            socket_connect_timeout=max(timeout, CONNECT_TIMEOUT_S),
            # No retry: a retried EVALSHA whose reply was lost would charge twice, and retries would
            # blow the time budget. A failure is answered by the failure mode instead.
            retry=Retry(NoBackoff(), 0),
        )
        self._available = True
        self.last_error = ""
        self._probe: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """False from a connection error or timeout until a background ping succeeds."""
        return self._available

    async def connect(self) -> bool:
        """Ping once at startup (with the connect timeout); if that fails, start probing and return False."""
        try:
            async with asyncio.timeout(max(self.timeout, CONNECT_TIMEOUT_S)):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._mark_unavailable(exc)
            return False
        return True

    async def add(self, ops: Sequence[CounterOp]) -> list[int]:
        """See :meth:`tokenvoy.ratelimit.backend.CounterBackend.add`: one script call, bounded by ``timeout``."""
        if not ops:
            return []
        if not self._available:
            raise BackendUnavailable(f"redis at {self.url} is unavailable: {self.last_error}")
        now = self._clock()
        prefix = self.prefix
        keys = [prefix + op.key for op in ops]
        args: list[int] = []
        for op in ops:
            delta = op.delta
            if delta > MAX_COUNTER:
                delta = MAX_COUNTER
            elif delta < -MAX_COUNTER:
                delta = -MAX_COUNTER
            args.append(delta)
            args.append(max(1, math.ceil(op.expires_at - now)))
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    counts = await self._client.evalsha(_SCRIPT_SHA, len(keys), *keys, *args)
                except NoScriptError:
                    counts = await self._client.eval(_SCRIPT, len(keys), *keys, *args)
        except ResponseError as exc:
            # Redis answered (OOM, READONLY, BUSY, a foreign value in a key...): the connection is fine.
            raise BackendUnavailable(f"redis at {self.url} refused the counter script: {_describe(exc)}") from exc
        except (RedisError, OSError, TimeoutError) as exc:
            self._mark_unavailable(exc)
            raise BackendUnavailable(f"redis at {self.url}: {self.last_error}") from exc
        return [int(c) for c in counts]

    async def close(self) -> None:
        """Stop probing and close the connections."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        await self._client.aclose()

    def _mark_unavailable(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self.last_error = f"no answer within {self.timeout * 1000:g} ms"
        else:
            self.last_error = _describe(exc)
        if not self._available:
            return
        self._available = False
        logger.debug("redis at %s unavailable: %s", self.url, self.last_error)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_available())

    async def _probe_until_available(self) -> None:
        """Drop every pooled connection (they may be dead), then ping with backoff until Redis answers."""
        with contextlib.suppress(RedisError, OSError):
            await self._client.connection_pool.disconnect()
        delay = PROBE_MIN_BACKOFF_S
        while True:
            await asyncio.sleep(delay * random.uniform(0.75, 1.0))
            try:
                async with asyncio.timeout(max(self.timeout, CONNECT_TIMEOUT_S)):
                    await self._client.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                self.last_error = _describe(exc)
                logger.debug("redis at %s still unavailable: %s", self.url, self.last_error)
                delay = min(delay * 2, self._max_backoff)
                continue
            self._available = True
            logger.debug("redis at %s available again", self.url)
            return

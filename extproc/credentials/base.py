"""The one interface every cloud credential implements, and the background token refresher they share.

The ext_proc handlers are synchronous code on grpc.aio's event loop: nothing here may block them. A
signer's ``sign`` only computes (SigV4) or reads a cached value (OAuth tokens); fetching and refreshing
tokens happens in a daemon thread started once extproc serves (``start``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

log = logging.getLogger("tokenvoy.extproc.credentials")

# A token is refreshed ahead of expiry by the larger of 20% of its lifetime and min(5 minutes, half of
# it): a 1-hour token at 48 minutes, a 10-second test token at 5 seconds.
MIN_REFRESH_WAIT_S = 0.5
MAX_RETRY_WAIT_S = 60.0


class CredentialUnavailable(Exception):
    """The policy cannot authenticate this request now (no token yet, token expired): answered with 503."""


class Signer(Protocol):
    """Authenticates requests to the backends of one ``BackendSecurityPolicy``."""

    policy: str  # "BackendSecurityPolicy/name", for messages
    needs_request: bool  # sign() needs method, authority, path and the final body (SigV4); else ignores them
    removes: tuple[str, ...]  # client headers to drop (credentials of this kind that the gateway does not set)

    def sign(self, method: str, authority: str, path: str, body: bytes) -> dict[str, str]:
        """The headers to set on this attempt; raises ``CredentialUnavailable``. Hot path: no I/O."""
        ...

    def start(self) -> None:
        """Begin background refreshing (no-op for credentials that need none)."""
        ...

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first fetch attempt finished (success or failure), at most ``timeout`` s."""
        ...

    def stop(self) -> None: ...


def redact(text: str, secrets: Iterable[str]) -> str:
    """Error text from a client library, with any secret value it might echo replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line for logs and client errors: the exception type and its first line, secrets redacted."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return redact(text[:300], secrets)


def refresh_wait(lifetime: float) -> float:
    """Seconds to wait after a fetch before refreshing a token valid for ``lifetime`` seconds."""
    margin = max(0.2 * lifetime, min(300.0, 0.5 * lifetime))
    return max(lifetime - margin, MIN_REFRESH_WAIT_S)


class TokenRefresher:
    """Keeps a bearer token fresh in a daemon thread; the hot path only reads the cached header.

    ``fetch`` returns (token, expiry as unix seconds). It runs in the thread only, so it may block (HTTP).
    Failures are retried with exponential backoff (1 s … 60 s); a still-valid token keeps being used.
    """

    needs_request = False

    def __init__(
        self,
        policy: str,
        fetch: Callable[[], tuple[str, float]],
        secrets: Iterable[str] = (),
        removes: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.removes = removes
        self._fetch = fetch
        self._secrets = tuple(secrets)
        self._clock = clock
        self._state: tuple[dict[str, str], float] | None = None  # (headers, expires at), swapped atomically
        self._error = "no access token fetched yet"
        self._failing = False
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self._thread: threading.Thread | None = None
        self.fetches = 0  # successful fetches, for tests and logs

    def sign(self, method: str, authority: str, path: str, body: bytes) -> dict[str, str]:
        state = self._state
        if state is not None and self._clock() < state[1]:
            return state[0]
        reason = self._error if state is None else f"the access token expired; last refresh: {self._error}"
        raise CredentialUnavailable(f"{self.policy} has no valid access token ({reason})")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"token {self.policy}", daemon=True)
            self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._first_attempt.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    def refresh_once(self) -> float:
        """Fetch now; returns seconds until the next attempt. Called by the thread (and by tests)."""
        try:
            token, expires_at = self._fetch()
        except Exception as exc:  # any library failure: keep the old token, log, retry later
            self._error = describe(exc, self._secrets)
            self._failing = True
            log.error("%s: cannot get an access token: %s", self.policy, self._error)
            raise
        now = self._clock()
        self._state = ({"authorization": f"Bearer {token}"}, expires_at)
        self.fetches += 1
        if self._failing or self.fetches == 1:
            log.info("%s: got an access token, valid for %.0f s", self.policy, expires_at - now)
        self._failing = False
        self._error = "ok"
        return refresh_wait(max(expires_at - now, 0.0))

    def _run(self) -> None:
        retry = 1.0
        while not self._stop.is_set():
            try:
                wait = self.refresh_once()
                retry = 1.0
            except Exception:
                wait = retry
                retry = min(retry * 2, MAX_RETRY_WAIT_S)
            self._first_attempt.set()
            self._stop.wait(wait)

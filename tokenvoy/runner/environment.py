"""The environment each child of ``tokenvoy run`` gets: only extproc sees the provider credentials.

Credentials reach extproc as ``${env:NAME}`` references of any name, and the cloud SDKs read ``AWS_*``,
``AZURE_*``, ``GOOGLE_*`` variables of their own, so no list of secret names can be complete. Envoy, the
ratelimit service and the fake provider therefore get an allowlist: what a process needs to run (``PATH``,
locale, ``HOME``, Python's settings), plus the few variables each one reads itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_BASE_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV"}
    | {"SSL_CERT_FILE", "SSL_CERT_DIR"}
)
_BASE_PREFIXES = ("LC_", "PYTHON")

ENVOY_EXTRA: tuple[str, ...] = ()
RATELIMIT_EXTRA = ("REDIS_URL",)  # its counters' backend (``--redis-url`` default)
FAKE_PROVIDER_EXTRA = ("TESTUPSTREAM_",)  # the fake provider's own settings (keys it accepts, in tests)


def child_environ(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The allowlisted part of ``environ``; an ``extra`` entry ending in ``_`` is a prefix, else a name."""
    extra = tuple(extra)
    prefixes = _BASE_PREFIXES + tuple(e for e in extra if e.endswith("_"))
    names = _BASE_NAMES | {e for e in extra if not e.endswith("_")}
    return {key: value for key, value in environ.items() if key in names or key.startswith(prefixes)}

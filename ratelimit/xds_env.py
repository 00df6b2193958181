"""envoyproxy/ratelimit's environment turned into ``tokenvoy ratelimit`` arguments.

Envoy Gateway (EG) configures its ratelimit Deployment with envoyproxy/ratelimit's environment variables
(``CONFIG_TYPE=GRPC_XDS_SOTW``, the xDS server, node id and mutual TLS files, the gRPC server's TLS, Redis,
Prometheus, the ports). :func:`argv_from_env` maps that environment to the command line of
``tokenvoy ratelimit``, so tokenvoy runs in EG's Deployment unchanged (``tokenvoy ratelimit --from-env``)
and the mapping is one visible list of flags, logged at startup.

The names, defaults and value syntax are envoyproxy/ratelimit's (``src/settings/settings.go``): booleans as
Go's ``strconv.ParseBool``, durations as Go's ``time.ParseDuration``, ``KEY=VALUE`` pairs for the node
metadata and ``KEY:VALUE`` pairs for the extra headers. A variable that would change behaviour tokenvoy does
not have (statsd, memcache, Redis Sentinel or Cluster, global shadow or quota mode, tracing, ...) is an
:class:`EnvSettingsError` naming it; variables that only tune envoyproxy/ratelimit's internals (pool
sizes, pipelining, the runtime directory in xDS mode, the statsd-exporter mapping) are ignored.

Pure: reads only the mapping it is given.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping

__all__ = ["EnvSettingsError", "argv_from_env", "describe_argv", "uses_xds_env"]

XDS_CONFIG_TYPE = "GRPC_XDS_SOTW"


class EnvSettingsError(ValueError):
    """A variable of envoyproxy/ratelimit's environment has a value tokenvoy cannot honour; names it."""


def uses_xds_env(env: Mapping[str, str]) -> bool:
    """Whether ``env`` is envoyproxy/ratelimit's xDS setup (what EG's Deployment sets)."""
    return env.get("CONFIG_TYPE", "").strip() == XDS_CONFIG_TYPE


# Variables with no effect in tokenvoy whatever their value (tuning of envoyproxy/ratelimit's internals).
IGNORED = frozenset(
    {
        "RUNTIME_ROOT",  # FILE config only; EG sets them in xDS mode too
        "RUNTIME_SUBDIRECTORY",
        "RUNTIME_APPDIRECTORY",
        "RUNTIME_IGNOREDOTFILES",
        "RUNTIME_WATCH_ROOT",
        "DEBUG_HOST",  # envoyproxy/ratelimit's debug port (pprof, /rlconfig): tokenvoy has none
        "DEBUG_PORT",
        "GRPC_SERVER_TLS_CA_CERT",  # EG sets it; envoyproxy/ratelimit reads GRPC_CLIENT_TLS_CACERT instead
        "GRPC_MAX_CONNECTION_AGE",
        "GRPC_MAX_CONNECTION_AGE_GRACE",
        "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
        "PROMETHEUS_MAPPER_YAML",  # statsd names -> Prometheus: tokenvoy exports its own names directly
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS",
        "STATSD_HOST",
        "STATSD_PORT",
        "EXTRA_TAGS",
        "STATS_FLUSH_INTERVAL",
        "DISABLE_STATS",
        "NEAR_LIMIT_RATIO",
        "LOCAL_CACHE_SIZE_IN_BYTES",
        "EXPIRATION_JITTER_MAX_SECONDS",
        "REDIS_POOL_SIZE",
        "REDIS_PIPELINE_WINDOW",
        "REDIS_PIPELINE_LIMIT",
        "REDIS_POOL_ON_EMPTY_BEHAVIOR",
        "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION",
        "REDIS_STARTUP_INITIAL_INTERVAL",
        "REDIS_STARTUP_MAX_INTERVAL",
        "REDIS_STARTUP_MAX_ELAPSED_TIME",
        "TRACING_SERVICE_NAME",  # only with TRACING_ENABLED, which is refused
        "TRACING_SERVICE_NAMESPACE",
        "TRACING_SERVICE_INSTANCE_ID",
        "TRACING_SAMPLING_RATE",
        "TRACING_EXPORTER_PROTOCOL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    }
)

# Booleans that must stay false: each turns on a behaviour tokenvoy does not have.
UNSUPPORTED_WHEN_TRUE = {
    "USE_STATSD": "statsd output (tokenvoy exports Prometheus metrics: set USE_STATSD=false, USE_PROMETHEUS=true)",
    "USE_DOG_STATSD": "DogStatsD output",
    "SHADOW_MODE": "global shadow mode (shadow_mode per descriptor is supported)",
    "QUOTA_MODE": "global quota mode",
    "LIMIT_RESPONSE_HEADERS_ENABLED": "RateLimit-* response headers",
    "RESPONSE_DYNAMIC_METADATA": "the request's descriptors in the response's dynamic metadata",
    "MERGE_DOMAIN_CONFIG": "merging several configs of one domain",
    "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "not counting calls over the limit",
    "REDIS_PERSECOND": "a second Redis for per-second limits",
    "REDIS_PERSECOND_TLS": "a second Redis for per-second limits",
    "TRACING_ENABLED": "OpenTelemetry tracing of the ratelimit service",
    "MEMCACHE_TLS": "memcache",
}

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "error",
    "panic": "error",
}


class _Env:
    """Typed reads of one environment; every error names the variable and its value."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def has(self, name: str) -> bool:
        return name in self.env and self.env[name] != ""

    def str(self, name: str, default: str = "") -> str:
        value = self.env.get(name, "")
        return value if value != "" else default

    def error(self, name: str, message: str) -> EnvSettingsError:
        return EnvSettingsError(f"{name}={self.env.get(name, '')!r}: {message}")

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.env.get(name, "").strip()
        if value == "":
            return default
        if value in _GO_TRUE:
            return True
        if value in _GO_FALSE:
            return False
        raise self.error(name, "not a boolean (true or false)")

    def int(self, name: str, default: int, minimum: int = 0) -> int:
        value = self.env.get(name, "").strip()
        if value == "":
            return default
        try:
            number = int(value, 10)
        except ValueError:
            raise self.error(name, "not an integer") from None
        if number < minimum:
            raise self.error(name, f"must be at least {minimum}")
        return number

    def float(self, name: str, default: float) -> float:
        value = self.env.get(name, "").strip()
        if value == "":
            return default
        try:
            return float(value)
        except ValueError:
            raise self.error(name, "not a number") from None

    def seconds(self, name: str, default: float) -> float:
        """A Go duration (``10s``, ``1m30s``, ``500ms``; ``0`` alone) in seconds."""
        value = self.env.get(name, "").strip()
        if value == "":
            return default
        if value == "0":
            return 0.0
        position, total = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != position:
                break
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            position = match.end()
        if position != len(value) or position == 0:
            raise self.error(name, "not a duration (e.g. 10s, 1m30s, 500ms)")
        return total


def _listen(host: str, port: int) -> str:
    host = host or "0.0.0.0"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _seconds_text(seconds: float) -> str:
    return f"{seconds:g}"


def argv_from_env(env: Mapping[str, str]) -> list[str]:
    """The ``tokenvoy ratelimit`` arguments that do what envoyproxy/ratelimit does with ``env``.

    Raises :class:`EnvSettingsError` (naming the variable) for a value tokenvoy cannot honour or parse.
    """
    e = _Env(env)
    argv: list[str] = []

    # The config source: only the xDS client (EG's setup); files are tokenvoy's own --config.
    config_type = e.str("CONFIG_TYPE", "FILE").strip()
    if config_type != XDS_CONFIG_TYPE:
        raise e.error(
            "CONFIG_TYPE",
            f"only {XDS_CONFIG_TYPE} is read from the environment (for files, run tokenvoy ratelimit --config FILE)",
        )
    argv += ["--xds-server", e.str("CONFIG_GRPC_XDS_SERVER_URL", "localhost:18000").strip()]
    argv += ["--xds-node-id", e.str("CONFIG_GRPC_XDS_NODE_ID", "default")]
    for entry in e.str("CONFIG_GRPC_XDS_NODE_METADATA").split(","):
        key, sep, value = entry.partition("=")
        if sep:  # envoyproxy/ratelimit skips an entry without "="
            argv += ["--xds-node-metadata", f"{key}={value}"]
    for entry in filter(None, e.str("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS").split(",")):
        key, sep, value = entry.partition(":")
        if not sep or not key:
            raise e.error("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", f"entry {entry!r} is not KEY:VALUE")
        argv += ["--xds-header", f"{key}:{value}"]
    if e.bool("CONFIG_GRPC_XDS_SERVER_USE_TLS"):
        argv.append("--xds-tls")
        cert, key = e.str("CONFIG_GRPC_XDS_CLIENT_TLS_CERT"), e.str("CONFIG_GRPC_XDS_CLIENT_TLS_KEY")
        if bool(cert) != bool(key):
            missing = "CONFIG_GRPC_XDS_CLIENT_TLS_KEY" if cert else "CONFIG_GRPC_XDS_CLIENT_TLS_CERT"
            raise EnvSettingsError(f"{missing} is not set: a client certificate needs its key and the other way round")
        if cert:
            argv += ["--xds-cert", cert, "--xds-key", key]
        if e.has("CONFIG_GRPC_XDS_SERVER_TLS_CACERT"):
            argv += ["--xds-ca", e.str("CONFIG_GRPC_XDS_SERVER_TLS_CACERT")]
        if e.has("CONFIG_GRPC_XDS_SERVER_TLS_SAN"):
            argv += ["--xds-server-name", e.str("CONFIG_GRPC_XDS_SERVER_TLS_SAN")]
    argv += ["--xds-backoff-initial", _seconds_text(e.seconds("XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", 10.0))]
    argv += ["--xds-backoff-max", _seconds_text(e.seconds("XDS_CLIENT_BACKOFF_MAX_INTERVAL", 60.0))]
    if e.float("XDS_CLIENT_BACKOFF_RANDOM_FACTOR", 0.5) != 0.5 or not e.bool("XDS_CLIENT_BACKOFF_JITTER", True):
        name = "XDS_CLIENT_BACKOFF_RANDOM_FACTOR" if e.has("XDS_CLIENT_BACKOFF_RANDOM_FACTOR") else ""
        name = name or "XDS_CLIENT_BACKOFF_JITTER"
        raise e.error(name, "only the default backoff jitter (random factor 0.5) is supported")
    max_message = e.int("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", 0)
    if max_message:
        argv += ["--xds-max-message-bytes", str(max_message)]
    if not e.bool("FORCE_START_WITHOUT_INITIAL_CONFIG"):
        argv.append("--xds-wait-for-config")
    if e.bool("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED"):
        argv.append("--healthy-with-config")

    # The ports: gRPC (unix socket or HOST:PORT), the HTTP port with /healthcheck, Prometheus.
    if e.has("GRPC_UDS"):
        argv += ["--listen", "unix:" + e.str("GRPC_UDS")]
    else:
        argv += ["--listen", _listen(e.str("GRPC_HOST", "0.0.0.0"), e.int("GRPC_PORT", 8081, 0))]
    argv += ["--admin-listen", _listen(e.str("HOST", "0.0.0.0"), e.int("PORT", 8080, 0))]
    if e.bool("USE_PROMETHEUS"):
        if e.str("PROMETHEUS_PATH", "/metrics") != "/metrics":
            raise e.error("PROMETHEUS_PATH", "tokenvoy serves its metrics on /metrics only")
        host, sep, port = e.str("PROMETHEUS_ADDR", ":9090").rpartition(":")
        if not sep or not port.isdigit():
            raise e.error("PROMETHEUS_ADDR", "expected [HOST]:PORT")
        argv += ["--metrics-listen", _listen(host.strip("[]"), int(port))]
    if e.bool("GRPC_SERVER_USE_TLS"):
        cert, key = e.str("GRPC_SERVER_TLS_CERT"), e.str("GRPC_SERVER_TLS_KEY")
        if not cert or not key:
            missing = "GRPC_SERVER_TLS_KEY" if cert else "GRPC_SERVER_TLS_CERT"
            raise EnvSettingsError(f"{missing} is not set: GRPC_SERVER_USE_TLS=true needs a certificate and its key")
        argv += ["--tls-cert", cert, "--tls-key", key]
        if e.has("GRPC_CLIENT_TLS_CACERT"):
            argv += ["--tls-client-ca", e.str("GRPC_CLIENT_TLS_CACERT")]
        if e.has("GRPC_CLIENT_TLS_SAN"):
            raise e.error("GRPC_CLIENT_TLS_SAN", "checking the client certificate's SAN is not supported")

    # The counters.
    backend = e.str("BACKEND_TYPE", "redis").strip().lower()
    if backend != "redis":
        raise e.error("BACKEND_TYPE", "only redis is supported")
    redis_type = e.str("REDIS_TYPE", "SINGLE").strip().upper()
    if redis_type != "SINGLE":
        raise e.error("REDIS_TYPE", "only a single Redis server (SINGLE) is supported, not Sentinel or Cluster")
    if e.has("REDIS_URL"):
        argv += ["--redis-url", _redis_url(e)]
    if e.has("REDIS_TIMEOUT"):
        timeout = e.seconds("REDIS_TIMEOUT", 0.0)
        if timeout <= 0:
            raise e.error("REDIS_TIMEOUT", "must be positive")
        argv += ["--redis-timeout", _seconds_text(timeout)]
    if e.has("CACHE_KEY_PREFIX"):
        argv += ["--redis-prefix", e.str("CACHE_KEY_PREFIX")]

    for name, what in UNSUPPORTED_WHEN_TRUE.items():
        if e.bool(name):
            raise e.error(name, f"not supported by tokenvoy ratelimit: {what}")
    if e.has("MEMCACHE_HOST_PORT") or e.has("MEMCACHE_SRV"):
        name = "MEMCACHE_HOST_PORT" if e.has("MEMCACHE_HOST_PORT") else "MEMCACHE_SRV"
        raise e.error(name, "memcache is not supported (Redis only)")

    log_format = e.str("LOG_FORMAT", "text").strip().lower()
    if log_format != "text":
        raise e.error("LOG_FORMAT", "tokenvoy logs text lines only")
    level = e.str("LOG_LEVEL", "warn").strip().lower()
    if level not in _LOG_LEVELS:
        raise e.error("LOG_LEVEL", f"expected one of {', '.join(_LOG_LEVELS)}")
    argv += ["--log-level", _LOG_LEVELS[level]]
    return argv


def _redis_url(e: _Env) -> str:
    """``REDIS_SOCKET_TYPE`` + ``REDIS_URL`` (``host:port`` or a socket path) + auth and TLS as one URL."""
    socket_type = e.str("REDIS_SOCKET_TYPE", "unix").strip().lower()
    address = e.str("REDIS_URL").strip()
    if "," in address:
        raise e.error("REDIS_URL", "one Redis address only (a list is for Sentinel or Cluster)")
    auth = e.str("REDIS_AUTH")
    user, sep, password = auth.partition(":")
    if not sep:
        user, password = "", auth
    userinfo = ""
    if auth:
        userinfo = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@"
    tls = e.bool("REDIS_TLS")
    if socket_type == "unix":
        if tls:
            raise e.error("REDIS_TLS", "TLS over a unix socket is not supported")
        return f"unix://{userinfo}{address}"
    if socket_type != "tcp":
        raise e.error("REDIS_SOCKET_TYPE", "expected tcp or unix")
    if "://" in address:
        raise e.error("REDIS_URL", "expected HOST:PORT without a scheme, as envoyproxy/ratelimit reads it")
    params: list[tuple[str, str]] = []
    if tls:
        for name, param in (
            ("REDIS_TLS_CLIENT_CERT", "ssl_certfile"),
            ("REDIS_TLS_CLIENT_KEY", "ssl_keyfile"),
            ("REDIS_TLS_CACERT", "ssl_ca_certs"),
        ):
            if e.has(name):
                params.append((param, e.str(name)))
        if e.bool("REDIS_TLS_SKIP_HOSTNAME_VERIFICATION"):
            params.append(("ssl_check_hostname", "false"))
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    return f"{'rediss' if tls else 'redis'}://{userinfo}{address}{query}"


_SECRET_FLAGS = {"--redis-url"}


def describe_argv(argv: list[str], redact: Callable[[str], str]) -> str:
    """The arguments as one line for the startup log, with ``redact`` applied to the Redis URL."""
    shown: list[str] = []
    for index, arg in enumerate(argv):
        previous = argv[index - 1] if index else ""
        shown.append(redact(arg) if previous in _SECRET_FLAGS else arg)
    return " ".join(shown)

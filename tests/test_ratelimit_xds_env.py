"""envoyproxy/ratelimit's environment, as Envoy Gateway's ratelimit Deployment sets it, to tokenvoy's flags.

The environments below are the ``env`` lists EG renders for its ratelimit Deployment, written out from
envoyproxy/gateway at d32f282 (``internal/infrastructure/kubernetes/ratelimit/testdata/deployments/
default.yaml`` and ``redis-tls-settings.yaml``, made by ``expectedRateLimitContainerEnv`` in ``resource.go``
of that directory). The names and defaults they are read with are envoyproxy/ratelimit's
(``src/settings/settings.go``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tokenvoy.ratelimit.redis_backend import redact_url
from tokenvoy.ratelimit.server import _server_tls, _xds_settings, build_parser, parse_args
from tokenvoy.ratelimit.xds_env import EnvSettingsError, argv_from_env, describe_argv, uses_xds_env
from tokenvoy.render.cli import main as render_main

# EG's default Deployment (Redis backend at redis.redis.svc:6379, Prometheus on)
EG_DEFAULT_ENV = {
    "RUNTIME_ROOT": "/data",
    "RUNTIME_SUBDIRECTORY": "ratelimit",
    "RUNTIME_IGNOREDOTFILES": "true",
    "RUNTIME_WATCH_ROOT": "false",
    "LOG_LEVEL": "info",
    "USE_STATSD": "false",
    "CONFIG_TYPE": "GRPC_XDS_SOTW",
    "CONFIG_GRPC_XDS_SERVER_URL": "envoy-gateway:18001",
    "CONFIG_GRPC_XDS_NODE_ID": "envoy-ratelimit",
    "GRPC_SERVER_USE_TLS": "true",
    "GRPC_SERVER_TLS_CERT": "/certs/tls.crt",
    "GRPC_SERVER_TLS_KEY": "/certs/tls.key",
    "GRPC_SERVER_TLS_CA_CERT": "/certs/ca.crt",
    "CONFIG_GRPC_XDS_SERVER_USE_TLS": "true",
    "CONFIG_GRPC_XDS_CLIENT_TLS_CERT": "/certs/tls.crt",
    "CONFIG_GRPC_XDS_CLIENT_TLS_KEY": "/certs/tls.key",
    "CONFIG_GRPC_XDS_SERVER_TLS_CACERT": "/certs/ca.crt",
    "FORCE_START_WITHOUT_INITIAL_CONFIG": "true",
    "REDIS_SOCKET_TYPE": "tcp",
    "REDIS_URL": "redis.redis.svc:6379",
    "USE_PROMETHEUS": "true",
    "PROMETHEUS_ADDR": ":19001",
    "PROMETHEUS_MAPPER_YAML": "/etc/statsd-exporter/conf.yaml",
}

# EG's Deployment with Redis over TLS and a client certificate (its redis-tls-settings case adds REDIS_AUTH
# through the Deployment patch, and turns statsd on, which tokenvoy refuses: see below)
EG_REDIS_TLS_ENV = EG_DEFAULT_ENV | {
    "REDIS_TLS": "true",
    "REDIS_TLS_CLIENT_CERT": "/redis-certs/tls.crt",
    "REDIS_TLS_CLIENT_KEY": "/redis-certs/tls.key",
    "REDIS_AUTH": "redis_auth_password",
}

# A Kubernetes pod has these too: nothing of envoyproxy/ratelimit's, so never an error
POD_ENV = {"HOSTNAME": "envoy-ratelimit-7d9c", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "PATH": "/usr/bin"}


def flags(argv: list[str]) -> dict[str, list[str]]:
    """``--flag value`` pairs and bare ``--flag`` switches, by flag."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.setdefault(flag, []).append(argv[i + 1])
            i += 2
        else:
            out.setdefault(flag, [])
            i += 1
    return out


def test_egs_default_deployment() -> None:
    assert uses_xds_env(EG_DEFAULT_ENV)
    argv = argv_from_env(EG_DEFAULT_ENV | POD_ENV)
    assert flags(argv) == {
        "--xds-server": ["envoy-gateway:18001"],
        "--xds-node-id": ["envoy-ratelimit"],
        "--xds-tls": [],
        "--xds-cert": ["/certs/tls.crt"],
        "--xds-key": ["/certs/tls.key"],
        "--xds-ca": ["/certs/ca.crt"],
        "--xds-backoff-initial": ["10"],
        "--xds-backoff-max": ["60"],
        "--listen": ["0.0.0.0:8081"],  # EG's Service and Envoy's ratelimit cluster: port 8081
        "--admin-listen": ["0.0.0.0:8080"],  # EG's probes: GET /healthcheck on 8080
        "--metrics-listen": ["0.0.0.0:19001"],  # EG's prometheus.io/port annotation
        "--tls-cert": ["/certs/tls.crt"],  # Envoy reaches ratelimit_cluster over TLS
        "--tls-key": ["/certs/tls.key"],
        "--redis-url": ["redis://redis.redis.svc:6379"],
        "--log-level": ["info"],
    }
    # FORCE_START_WITHOUT_INITIAL_CONFIG=true: serve at once, no --xds-wait-for-config


def test_the_flags_parse_into_the_settings_the_server_runs_with() -> None:
    args, from_env = parse_args([], EG_DEFAULT_ENV)  # no flags at all: CONFIG_TYPE implies --from-env
    assert from_env is not None
    parser = build_parser()
    xds = _xds_settings(args, parser)
    assert xds is not None
    assert (xds.server, xds.node_id, xds.backoff_initial_s, xds.backoff_max_s) == (
        "envoy-gateway:18001",
        "envoy-ratelimit",
        10.0,
        60.0,
    )
    assert xds.tls is not None
    assert (xds.tls.ca_file, xds.tls.cert_file, xds.tls.key_file, xds.tls.server_name) == (
        "/certs/ca.crt",
        "/certs/tls.crt",
        "/certs/tls.key",
        None,
    )
    tls = _server_tls(args, parser)
    assert tls is not None and (tls.cert_file, tls.key_file, tls.client_ca_file) == (
        "/certs/tls.crt",
        "/certs/tls.key",
        None,  # envoyproxy/ratelimit reads GRPC_CLIENT_TLS_CACERT, not the GRPC_SERVER_TLS_CA_CERT EG sets
    )
    assert (args.listen, args.admin_listen, args.metrics_listen) == ("0.0.0.0:8081", "0.0.0.0:8080", "0.0.0.0:19001")
    assert args.redis_url == "redis://redis.redis.svc:6379" and args.config is None
    assert not args.xds_wait_for_config and not args.healthy_with_config


def test_flags_given_as_well_override_the_environment() -> None:
    args, _ = parse_args(["--from-env", "--listen", "127.0.0.1:9"], EG_DEFAULT_ENV)
    assert args.listen == "127.0.0.1:9" and args.xds_server == "envoy-gateway:18001"
    # a flag alone, as appended to the Deployment's command: the environment is still read
    args, from_env = parse_args(["--redis-failure-mode", "closed"], EG_DEFAULT_ENV)
    assert from_env is not None and args.xds_server == "envoy-gateway:18001" and args.redis_failure_mode == "closed"


def test_without_the_environment_nothing_is_implied() -> None:
    args, from_env = parse_args(["--config", "x.yaml"], EG_DEFAULT_ENV)
    assert from_env is None and args.xds_server is None  # an explicit source wins over CONFIG_TYPE
    args, from_env = parse_args([], POD_ENV)
    assert from_env is None and args.xds_server is None and args.config is None


def test_redis_over_tls_with_a_client_certificate_and_auth() -> None:
    url = flags(argv_from_env(EG_REDIS_TLS_ENV))["--redis-url"][0]
    assert url == (
        "rediss://:redis_auth_password@redis.redis.svc:6379"
        "?ssl_certfile=%2Fredis-certs%2Ftls.crt&ssl_keyfile=%2Fredis-certs%2Ftls.key"
    )
    shown = describe_argv(argv_from_env(EG_REDIS_TLS_ENV), redact_url)
    assert "redis_auth_password" not in shown and "rediss://:***@redis.redis.svc:6379" in shown


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"REDIS_SOCKET_TYPE": "unix", "REDIS_URL": "/var/run/redis.sock"}, "unix:///var/run/redis.sock"),
        ({"REDIS_URL": "/var/run/redis.sock", "REDIS_AUTH": "u:p@ss"}, "unix://u:p%40ss@/var/run/redis.sock"),
        (
            {"REDIS_SOCKET_TYPE": "tcp", "REDIS_URL": "r:6380", "REDIS_TLS": "1", "REDIS_TLS_CACERT": "/ca.pem"},
            "rediss://r:6380?ssl_ca_certs=%2Fca.pem",
        ),
        (
            {
                "REDIS_URL": "r:1",
                "REDIS_SOCKET_TYPE": "tcp",
                "REDIS_TLS": "T",
                "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION": "t",
            },
            "rediss://r:1?ssl_check_hostname=false",
        ),
    ],
)
def test_redis_addresses(env: dict[str, str], url: str) -> None:
    base = {"CONFIG_TYPE": "GRPC_XDS_SOTW"}
    assert flags(argv_from_env(base | env))["--redis-url"] == [url]


def test_envoyproxy_ratelimits_defaults_where_eg_sets_nothing() -> None:
    argv = flags(argv_from_env({"CONFIG_TYPE": "GRPC_XDS_SOTW"}))
    assert argv["--xds-server"] == ["localhost:18000"] and argv["--xds-node-id"] == ["default"]
    assert "--xds-tls" not in argv  # plaintext: the server warns at startup
    assert "--xds-wait-for-config" in argv  # FORCE_START_WITHOUT_INITIAL_CONFIG defaults to false
    assert argv["--log-level"] == ["warning"] and "--redis-url" not in argv  # counters in memory
    assert "--metrics-listen" not in argv and "--tls-cert" not in argv


def test_the_xds_extras() -> None:
    argv = flags(
        argv_from_env(
            {
                "CONFIG_TYPE": "GRPC_XDS_SOTW",
                "CONFIG_GRPC_XDS_NODE_METADATA": "zone=a,bad,x=y=z",
                "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS": "x-token:abc,x-b:c",
                "CONFIG_GRPC_XDS_SERVER_USE_TLS": "true",
                "CONFIG_GRPC_XDS_SERVER_TLS_SAN": "envoy-gateway.envoy-gateway-system.svc",
                "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL": "500ms",
                "XDS_CLIENT_BACKOFF_MAX_INTERVAL": "1m30s",
                "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES": "8388608",
                "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED": "true",
                "GRPC_UDS": "/tmp/rl.sock",
                "GRPC_SERVER_USE_TLS": "true",
                "GRPC_SERVER_TLS_CERT": "/c",
                "GRPC_SERVER_TLS_KEY": "/k",
                "GRPC_CLIENT_TLS_CACERT": "/ca",
                "HOST": "::",
                "PORT": "9080",
                "REDIS_TIMEOUT": "250ms",
                "CACHE_KEY_PREFIX": "eg:",
            }
        )
    )
    assert argv["--xds-node-metadata"] == ["zone=a", "x=y=z"]
    assert argv["--xds-header"] == ["x-token:abc", "x-b:c"]
    assert argv["--xds-server-name"] == ["envoy-gateway.envoy-gateway-system.svc"]
    assert argv["--xds-backoff-initial"] == ["0.5"] and argv["--xds-backoff-max"] == ["90"]
    assert argv["--xds-max-message-bytes"] == ["8388608"] and "--healthy-with-config" in argv
    assert argv["--listen"] == ["unix:/tmp/rl.sock"] and argv["--admin-listen"] == ["[::]:9080"]
    assert argv["--tls-client-ca"] == ["/ca"]
    assert argv["--redis-timeout"] == ["0.25"] and argv["--redis-prefix"] == ["eg:"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"CONFIG_TYPE": "FILE"}, "CONFIG_TYPE='FILE': only GRPC_XDS_SOTW is read from the environment"),
        ({"USE_STATSD": "true"}, "USE_STATSD='true': not supported by tokenvoy ratelimit: statsd output"),
        ({"USE_STATSD": "yes"}, "USE_STATSD='yes': not a boolean"),
        ({"REDIS_TYPE": "SENTINEL"}, "REDIS_TYPE='SENTINEL': only a single Redis server"),
        ({"BACKEND_TYPE": "memcache"}, "BACKEND_TYPE='memcache': only redis is supported"),
        ({"REDIS_SOCKET_TYPE": "udp"}, "REDIS_SOCKET_TYPE='udp': expected tcp or unix"),
        ({"REDIS_URL": "redis://r:1"}, "REDIS_URL='redis://r:1': expected HOST:PORT without a scheme"),
        ({"REDIS_URL": "a:1,b:2"}, "REDIS_URL='a:1,b:2': one Redis address only"),
        ({"SHADOW_MODE": "true"}, "SHADOW_MODE='true': not supported by tokenvoy ratelimit: global shadow mode"),
        ({"TRACING_ENABLED": "true"}, "TRACING_ENABLED='true': not supported"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud': expected one of"),
        ({"LOG_FORMAT": "json"}, "LOG_FORMAT='json': tokenvoy logs text lines only"),
        ({"PORT": "http"}, "PORT='http': not an integer"),
        ({"PROMETHEUS_PATH": "/stats"}, "PROMETHEUS_PATH='/stats': tokenvoy serves its metrics on /metrics only"),
        ({"PROMETHEUS_ADDR": "19001"}, "PROMETHEUS_ADDR='19001': expected [HOST]:PORT"),
        ({"XDS_CLIENT_BACKOFF_MAX_INTERVAL": "60"}, "XDS_CLIENT_BACKOFF_MAX_INTERVAL='60': not a duration"),
        ({"XDS_CLIENT_BACKOFF_JITTER": "false"}, "XDS_CLIENT_BACKOFF_JITTER='false': only the default backoff"),
        ({"GRPC_SERVER_TLS_KEY": ""}, "GRPC_SERVER_TLS_KEY is not set"),
        ({"CONFIG_GRPC_XDS_CLIENT_TLS_KEY": ""}, "CONFIG_GRPC_XDS_CLIENT_TLS_KEY is not set"),
        ({"GRPC_CLIENT_TLS_SAN": "envoy"}, "GRPC_CLIENT_TLS_SAN='envoy': checking the client certificate's SAN"),
        ({"MEMCACHE_HOST_PORT": "m:11211"}, "MEMCACHE_HOST_PORT='m:11211': memcache is not supported"),
    ],
)
def test_what_tokenvoy_cannot_honour_is_an_error_naming_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(EnvSettingsError) as caught:
        argv_from_env(EG_DEFAULT_ENV | change)
    assert message in str(caught.value)


def test_an_error_in_the_environment_is_exit_1_with_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenvoy.ratelimit import server

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(server.os, "environ", EG_DEFAULT_ENV | {"USE_STATSD": "true"})
        assert server.main([]) == 1
    assert "environment: USE_STATSD='true'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "a.yaml", "--xds-server", "h:1"], "two config sources: give exactly one"),
        ([], "no config source: give --config FILE, --xds-server HOST:PORT or --from-env"),
        (["--xds-server", "h:1", "--xds-cert", "c"], "--xds-cert and --xds-key go together"),
        (["--xds-server", "h:1", "--xds-server-name", "eg"], "--xds-server-name needs TLS"),
        (["--xds-server", "h:1", "--xds-node-metadata", "zone"], "--xds-node-metadata 'zone': expected KEY=VALUE"),
        (["--config", "a.yaml", "--tls-client-ca", "ca"], "--tls-client-ca needs --tls-cert and --tls-key"),
    ],
)
def test_config_source_and_flag_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenvoy.ratelimit import server

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(server.os, "environ", dict(POD_ENV))
        with pytest.raises(SystemExit) as exited:
            server.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_rendered_eg_config_runs_tokenvoy_with_egs_environment(tmp_path: Path) -> None:
    """``render --target envoy-gateway --eg-ratelimit tokenvoy``: its ``rateLimitDeployment``, applied to the
    container EG renders (``command: [/bin/ratelimit]``, the env above), runs ``tokenvoy ratelimit`` on EG's
    xDS config server."""
    assert (
        render_main(
            [
                "--target",
                "envoy-gateway",
                "--eg-ratelimit",
                "tokenvoy",
                "--image",
                "r/tokenvoy:1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    (eg_config,) = yaml.safe_load_all((tmp_path / "envoy-gateway" / "envoy-gateway.yaml").read_text())
    spec = eg_config["provider"]["kubernetes"]["rateLimitDeployment"]
    assert eg_config["provider"]["type"] == "Kubernetes"
    assert spec["patch"]["type"] == "StrategicMerge"  # EG's default merge type, written out
    container = {
        "name": "envoy-ratelimit",
        "image": "docker.io/envoyproxy/ratelimit:master",
        "command": ["/bin/ratelimit"],
    }
    container["image"] = spec["container"]["image"]  # EG sets the container's image from this field
    (patched,) = spec["patch"]["value"]["spec"]["template"]["spec"]["containers"]
    assert patched["name"] == container["name"]  # strategic merge: containers merge by name
    container |= patched  # and a list of strings (command) is replaced
    assert container == {"name": "envoy-ratelimit", "image": "r/tokenvoy:1", "command": ["tokenvoy", "ratelimit"]}
    args, from_env = parse_args(container["command"][2:], EG_DEFAULT_ENV)
    assert from_env is not None and args.xds_server == "envoy-gateway:18001"


def test_by_default_the_rendered_eg_config_leaves_egs_ratelimit_alone(tmp_path: Path) -> None:
    assert render_main(["--target", "envoy-gateway", "--out", str(tmp_path)]) == 0
    (eg_config,) = yaml.safe_load_all((tmp_path / "envoy-gateway" / "envoy-gateway.yaml").read_text())
    assert "provider" not in eg_config

"""``tokenvoy render --target envoy-gateway --mode extension`` and ``tokenvoy eg-extension`` as a process: the
manifests validate against the published schemas, wire EG to the extension server and EG's Envoy pods to
an extproc sidecar, and the server started from the rendered ConfigMap serves the hook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import egext_xds as xds
from tests.manifests import schema_errors
from tests.ports import free_port
from tests.test_egext import AI_CLUSTER, FALLBACK, egctl, request_of
from tokenvoy.config.loader import ConfigError
from tokenvoy.egext import load_extension_config
from tokenvoy.egext.config import DEFAULT_EXTPROC_SOCKET
from tokenvoy.pb.envoygateway.extension import service_pb2_grpc
from tokenvoy.render.envoy_gateway import GatewayOptions, Manifests, render_envoy_gateway
from tokenvoy.render.gateway_cli import read_documents, write_manifests

GOLDEN_IN = xds.SHARED / "ai-gateway" / "translate_basic.in.yaml"


def _render(paths: list[str], **options: Any) -> Manifests:
    return render_envoy_gateway(read_documents(paths), GatewayOptions(mode="extension", **options))


def _by(manifests: Manifests, kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in manifests.resources() if r["kind"] == kind}


@pytest.mark.parametrize("paths", [[], [str(FALLBACK)], [str(GOLDEN_IN)]], ids=["default", "fallback", "basic"])
def test_every_resource_validates_and_extproc_is_a_sidecar_not_an_extension_policy(paths: list[str]) -> None:
    manifests = _render(paths)
    for resource in manifests.resources():
        assert schema_errors(resource) == [], f"{resource['kind']}/{resource['metadata']['name']}"
    kinds = {resource["kind"] for resource in manifests.resources()}
    assert {"EnvoyProxy", "HTTPRoute", "Backend", "ConfigMap", "Deployment", "Service"} <= kinds
    assert "EnvoyExtensionPolicy" not in kinds  # the extension server adds the router ext_proc


def test_a_cross_provider_fallback_renders_in_extension_mode_only() -> None:
    with pytest.raises(ConfigError, match="fallback"):
        render_envoy_gateway(read_documents([str(FALLBACK)]))
    route = _by(_render([str(FALLBACK)]), "HTTPRoute")["backend"]
    refs = [ref["name"] for ref in route["spec"]["rules"][0]["backendRefs"]]
    assert refs == ["openai", "anthropic"]  # both in the rule: one cluster, one locality each


def test_the_envoy_proxy_puts_extproc_beside_envoy_on_the_socket_the_server_names() -> None:
    manifests = _render([str(FALLBACK)])
    proxy = _by(manifests, "EnvoyProxy")["tokenvoy"]
    deployment = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    (sidecar,) = deployment["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before Envoy
    listen = sidecar["args"][sidecar["args"].index("--listen") + 1]
    assert listen == f"unix:{DEFAULT_EXTPROC_SOCKET}"
    assert "--translate-in-router" not in sidecar["args"]
    socket_dir = str(Path(DEFAULT_EXTPROC_SOCKET).parent)
    assert {"name": "tokenvoy-socket", "mountPath": socket_dir} in deployment["container"]["volumeMounts"]
    assert {"name": "tokenvoy-socket", "mountPath": socket_dir} in sidecar["volumeMounts"]
    assert {"name": "tokenvoy-socket", "emptyDir": {}} in deployment["pod"]["volumes"]
    secret_volumes = [v for v in deployment["pod"]["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in secret_volumes] == ["anthropic-key"]
    assert sidecar["securityContext"]["runAsUser"] == 65532  # Envoy's user: it may connect to the socket
    server = _by(manifests, "Deployment")["tokenvoy-eg-extension"]
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--extproc-socket") + 1] == DEFAULT_EXTPROC_SOCKET
    assert args[args.index("--namespace") + 1] == "default"
    (gateway,) = _by(manifests, "Gateway").values()
    assert gateway["spec"]["infrastructure"]["parametersRef"] == {
        "group": "gateway.envoyproxy.io",
        "kind": "EnvoyProxy",
        "name": "tokenvoy",
    }
    # extproc's config and Secrets live where EG runs the Envoy pods
    assert _by(manifests, "ConfigMap")["tokenvoy-config"]["metadata"]["namespace"] == "envoy-gateway-system"
    assert "-n envoy-gateway-system create secret generic anthropic-key" in manifests.readme


def test_the_eg_config_registers_the_server_for_every_resource() -> None:
    manifests = _render([str(FALLBACK)])
    manager = manifests.envoy_gateway_config["extensionManager"]
    hooks = manager["hooks"]["xdsTranslator"]
    assert hooks["post"] == ["Translation", "Cluster", "Route"]
    assert hooks["translation"] == {kind: {"includeAll": True} for kind in ("listener", "route", "cluster", "secret")}
    service = _by(manifests, "Service")["tokenvoy-eg-extension"]
    assert manager["service"]["fqdn"] == {
        "hostname": f"tokenvoy-eg-extension.{service['metadata']['namespace']}.svc.cluster.local",
        "port": service["spec"]["ports"][0]["port"],
    }
    assert manager["failOpen"] is False
    assert "tls" not in manager["service"]
    tls = _render([str(FALLBACK)], extension_tls_secret="tokenvoy-eg-extension-tls")
    assert tls.envoy_gateway_config["extensionManager"]["service"]["tls"] == {
        "certificateRef": {"kind": "Secret", "name": "tokenvoy-eg-extension-tls"}
    }
    container = _by(tls, "Deployment")["tokenvoy-eg-extension"]["spec"]["template"]["spec"]["containers"][0]
    assert "--tls-cert" in container["args"] and "--tls-key" in container["args"]


def test_ip_backends_are_refused_naming_them(tmp_path: Path) -> None:
    text = FALLBACK.read_text().replace(
        "    - fqdn:\n        hostname: api.openai.com\n        port: 443",
        "    - ip:\n        address: 10.0.0.7\n        port: 443",
    )
    assert "10.0.0.7" in text
    config = tmp_path / "ip.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"Backend/openai: spec.endpoints\[0\]: --mode extension needs fqdn"):
        _render([str(config)])


def test_the_server_loads_the_rendered_config_map_to_the_same_rules(tmp_path: Path) -> None:
    manifests = _render([str(FALLBACK)])
    rendered = tmp_path / "gateway.yaml"
    rendered.write_text(_by(manifests, "ConfigMap")["tokenvoy-config"]["data"]["gateway.yaml"])
    from_map = load_extension_config([str(rendered)], namespace="default")
    from_files = load_extension_config([str(FALLBACK)])
    assert set(from_map.rules) == set(from_files.rules) == {("default", "backend", 0)}
    for key, pieces in from_files.rules.items():
        assert from_map.rules[key].endpoint_metadata == pieces.endpoint_metadata
        assert from_map.rules[key].priorities == pieces.priorities == [0, 1]
        assert from_map.rules[key].retry_policy == pieces.retry_policy


def test_tokenvoy_eg_extension_serves_the_hook_from_the_rendered_files(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    write_manifests(_render([str(FALLBACK)]), out)
    config_map = next(d for d in yaml.safe_load_all((out / "10-tokenvoy.yaml").read_text()) if d["kind"] == "ConfigMap")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_map["data"]["gateway.yaml"])
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenvoy",
            "eg-extension",
            "--config",
            str(config),
            "--namespace",
            "default",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            response = service_pb2_grpc.EnvoyGatewayExtensionStub(channel).PostTranslateModify(
                request_of(egctl()), timeout=60
            )
        cluster = next(c for c in response.clusters if c.name == AI_CLUSTER)
        assert [e.priority for e in cluster.load_assignment.endpoints] == [0, 1]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "AI routes: default/backend" in output


def test_eg_extension_refuses_a_bad_config_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        FALLBACK.read_text().replace("name: openai\n          priority: 0", "name: nowhere\n          priority: 0")
    )
    result = subprocess.run(
        [sys.executable, "-m", "tokenvoy", "eg-extension", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "invalid config" in result.stderr and "nowhere" in result.stderr


def test_a_service_backend_ref_becomes_an_fqdn_backend_eg_inlines(tmp_path: Path) -> None:
    text = FALLBACK.read_text().replace(
        "  backendRef:\n    name: openai\n    kind: Backend\n    group: gateway.envoyproxy.io",
        "  backendRef:\n    name: local-llm\n    kind: Service\n    port: 8000",
    )
    assert "local-llm" in text
    config = tmp_path / "service.yaml"
    config.write_text(text)
    manifests = _render([str(config)])
    route = _by(manifests, "HTTPRoute")["backend"]
    assert route["spec"]["rules"][0]["backendRefs"][0] == {
        "group": "gateway.envoyproxy.io",
        "kind": "Backend",
        "name": "local-llm",
    }
    backend = _by(manifests, "Backend")["local-llm"]
    assert backend["spec"]["endpoints"] == [{"fqdn": {"hostname": "local-llm.default.svc.cluster.local", "port": 8000}}]
    assert schema_errors(backend) == []


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and its key, as the Secret of --extension-tls-secret would hold."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_eg_extension_serves_tls_with_the_secrets_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "tokenvoy", "eg-extension", "--config", str(FALLBACK)),
            *("--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            response = service_pb2_grpc.EnvoyGatewayExtensionStub(channel).PostTranslateModify(
                request_of(egctl()), timeout=60
            )
        assert any(c.name == AI_CLUSTER for c in response.clusters)
        with grpc.insecure_channel(f"localhost:{port}") as plain, pytest.raises(grpc.RpcError):
            service_pb2_grpc.EnvoyGatewayExtensionStub(plain).PostTranslateModify(request_of(egctl()), timeout=10)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "TLS" in output

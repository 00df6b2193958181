"""TLS to providers: BackendTLSPolicy and Backend ``spec.tls`` decide the SNI, the verified name and the CAs."""

from __future__ import annotations

import pytest

from tests.crds import crd_errors
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import Endpoint, TLSValidation

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"
BASE = """
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules: [{backendRefs: [{name: llm}]}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: llm}
spec:
  schema: {name: OpenAI}
  backendRef: {name: llm, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: llm}
spec:
  endpoints: [{fqdn: {hostname: llm.internal, port: 8443}}]
"""
POLICY = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: llm-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: llm}]
  validation:
    hostname: api.llm.example
    caCertificateRefs: [{group: "", kind: ConfigMap, name: llm-ca}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: llm-ca}
data:
  ca.crt: |
    -----BEGIN CERTIFICATE-----
    MIIBfake
    -----END CERTIFICATE-----
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_text(text, "gw.yaml")
    return excinfo.value.problems


def test_without_tls_settings_a_non_443_backend_is_plain_http() -> None:
    endpoint = load_text(BASE).backends["llm"].endpoint
    assert endpoint == Endpoint("llm.internal", 8443, tls=False)


def test_a_backend_tls_policy_turns_tls_on_with_its_hostname_and_private_ca() -> None:
    config = load_text(BASE + POLICY)
    endpoint = config.backends["llm"].endpoint
    assert endpoint.tls
    assert endpoint.tls_validation == TLSValidation("api.llm.example", PEM + "\n", (), "BackendTLSPolicy/llm-tls")
    assert endpoint.server_name == "api.llm.example"
    assert endpoint.verified_names == ("api.llm.example",)
    assert not any("ConfigMap/llm-ca" in line for line in config.ignored), "a referenced ConfigMap is used"


def test_subject_alt_names_replace_the_hostname_as_the_accepted_names() -> None:
    text = (BASE + POLICY).replace(
        "    hostname: api.llm.example\n",
        "    hostname: api.llm.example\n    subjectAltNames: [{type: Hostname, hostname: '*.llm.example'}]\n",
    )
    endpoint = load_text(text).backends["llm"].endpoint
    assert endpoint.server_name == "api.llm.example"
    assert endpoint.verified_names == ("*.llm.example",)


def test_system_cas_by_default_and_the_backends_own_sni() -> None:
    text = BASE + "  tls: {sni: gateway.llm.example, wellKnownCACertificates: System}\n"
    endpoint = load_text(text).backends["llm"].endpoint
    assert endpoint.tls and endpoint.server_name == "gateway.llm.example"
    assert endpoint.tls_validation is not None and endpoint.tls_validation.ca_certificates is None


def test_an_unreferenced_config_map_is_reported_ignored() -> None:
    text = BASE + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {a: b}\n"
    assert any(line.startswith("ConfigMap/other (gw.yaml): ignored") for line in load_text(text, "gw.yaml").ignored)


def test_every_tls_mistake_is_reported_with_its_location() -> None:
    text = (
        BASE.replace("port: 8443}}]", "port: 8443}}]\n  tls: {insecureSkipVerify: true}")
        + POLICY.replace("name: llm-ca}]", "name: missing-ca}]").replace("name: llm}]", "name: nowhere}]")
        + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: bare}\n"
        "spec: {targetRefs: [{kind: Backend, name: llm}], validation: {wellKnownCACertificates: Mozilla}}\n"
    )
    problems = _problems(text)
    expected = [
        "gw.yaml: Backend/llm: spec.tls.insecureSkipVerify: not supported by tokenvoy",
        "gw.yaml: BackendTLSPolicy/llm-tls: spec.validation.caCertificateRefs[0].name: ConfigMap/missing-ca does not",
        "gw.yaml: BackendTLSPolicy/llm-tls: spec.targetRefs[0]: Backend/nowhere is not a Backend of this config",
        "gw.yaml: BackendTLSPolicy/bare: spec.validation.hostname: required",
        "gw.yaml: BackendTLSPolicy/bare: spec.validation.wellKnownCACertificates: must be System, got 'Mozilla'",
    ]
    for start in expected:
        assert sum(p.startswith(start) for p in problems) == 1, (start, problems)
    assert len(problems) == len(expected), problems


def test_a_config_map_without_a_pem_bundle_is_refused() -> None:
    text = (BASE + POLICY).split("data:\n")[0] + "data: {ca.crt: not-a-certificate}\n"
    (problem,) = _problems(text)
    assert problem.startswith("gw.yaml: ConfigMap/llm-ca: data.ca.crt: must hold a PEM certificate bundle")


def test_the_tls_policy_matches_the_published_gateway_api_schema() -> None:
    documents = [d for d in __import__("yaml").safe_load_all(POLICY) if d]
    assert crd_errors(documents[0]) == []

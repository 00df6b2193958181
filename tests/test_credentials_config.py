"""BackendSecurityPolicy for cloud credentials: loading, the GCP path prefix, clear errors, docs examples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.crds import crd_errors
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import GatewayConfig
from tokenvoy.contract import ENDPOINT_ATTRIBUTE
from tokenvoy.extproc.credentials import CredentialUnavailable
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.server import build_runtime
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.testupstream import aws_auth

DOCS = Path(__file__).resolve().parents[1] / "docs" / "credentials.md"

BASE = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  rules:
    - backendRefs: [{name: b}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: provider}
spec:
  endpoints: [{fqdn: {hostname: provider.example.com, port: 443}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: b}
spec:
  schema: {SCHEMA}
  backendRef: {name: provider, kind: Backend, group: gateway.envoyproxy.io}
"""


def config(policy_type: str, field: str, spec: dict[str, Any], secret: dict[str, str] | None, schema: str) -> str:
    policy = {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "BackendSecurityPolicy",
        "metadata": {"name": "p"},
        "spec": {"type": policy_type, "targetRefs": [{"name": "b"}], field: spec},
    }
    documents = [policy]
    if secret is not None:
        documents.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": secret})
    return BASE.replace("{SCHEMA}", schema) + "---\n" + yaml.safe_dump_all(documents, sort_keys=False)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    return caught.value.problems


GCP_SPEC = {"projectName": "proj-1", "region": "europe-west4", "credentialsFile": {"secretRef": {"name": "s"}}}


def test_aws_credentials_file_profile_and_region_are_loaded_and_the_secret_is_not_read() -> None:
    text = config(
        "AWSCredentials",
        "awsCredentials",
        {"region": "eu-central-1", "credentialsFile": {"secretRef": {"name": "s"}, "profile": "prod"}},
        {"credentials": "${env:TOKENVOY_TEST_UNSET_AWS_FILE}"},
        "{name: AWSBedrock}",
    )
    policy = load_text(text).backends["b"].security
    assert policy is not None and policy.aws is not None
    assert (policy.type, policy.aws.region, policy.aws.profile) == ("AWSCredentials", "eu-central-1", "prod")
    assert policy.aws.credentials_file is not None
    assert policy.aws.credentials_file.origin == "Secret/s key 'credentials'"


def test_aws_without_a_credentials_file_uses_the_default_chain() -> None:
    text = config("AWSCredentials", "awsCredentials", {"region": "us-west-2"}, None, "{name: AWSBedrock}")
    aws = load_text(text).backends["b"].security.aws
    assert aws is not None and (aws.region, aws.credentials_file, aws.profile) == ("us-west-2", None, "default")


@pytest.mark.parametrize(
    ("schema", "prefix"),
    [
        ("{name: GCPVertexAI}", "/v1/projects/proj-1/locations/europe-west4"),
        ("{name: GCPAnthropic}", "/v1/projects/proj-1/locations/europe-west4"),
        ("{name: GCPAnthropic, prefix: /custom/v9}", "/custom/v9"),  # an explicit prefix wins
        ("{name: OpenAI}", "/v1"),  # not a GCP schema: its own default
    ],
)
def test_gcp_credentials_give_gcp_schemas_their_project_location_prefix(schema: str, prefix: str) -> None:
    backend = load_text(config("GCPCredentials", "gcpCredentials", GCP_SPEC, {"service_account.json": "{}"}, schema))
    gcp = backend.backends["b"].security.gcp
    assert gcp is not None and (gcp.project, gcp.region) == ("proj-1", "europe-west4")
    assert backend.backends["b"].path_prefix == prefix


def test_azure_credentials_are_loaded() -> None:
    spec = {"clientID": "cid", "tenantID": "tid", "clientSecretRef": {"name": "s"}}
    azure = load_text(
        config("AzureCredentials", "azureCredentials", spec, {"client-secret": "x"}, "{name: AzureOpenAI}")
    ).backends["b"]
    assert azure.security.azure is not None
    assert (azure.security.azure.client_id, azure.security.azure.tenant_id) == ("cid", "tid")
    assert azure.security.azure.client_secret.read() == "x"


@pytest.mark.parametrize(
    ("policy_type", "field", "spec", "secret", "expected"),
    [
        (
            "AWSCredentials",
            "awsCredentials",
            {"region": "us-east-1", "oidcExchangeToken": {"awsRoleArn": "arn:x", "oidc": {}}},
            None,
            "spec.awsCredentials.oidcExchangeToken: not supported by tokenvoy: OIDC token exchange",
        ),
        ("AWSCredentials", "awsCredentials", {}, None, "spec.awsCredentials.region: required"),
        (
            "AWSCredentials",
            "awsCredentials",
            {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "s"}}},
            {"apiKey": "x"},
            "Secret/s: stringData: has no key 'credentials'",
        ),
        (
            "AWSCredentials",
            "awsCredentials",
            {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "missing"}}},
            None,
            "spec.awsCredentials.credentialsFile.secretRef.name: Secret/missing does not exist",
        ),
        (
            "GCPCredentials",
            "gcpCredentials",
            {"projectName": "p", "region": "r", "workloadIdentityFederationConfig": {"projectID": "x"}},
            None,
            "spec.gcpCredentials.workloadIdentityFederationConfig: not supported by tokenvoy",
        ),
        ("GCPCredentials", "gcpCredentials", {"region": "r"}, None, "spec.gcpCredentials.projectName: required"),
        (
            "GCPCredentials",
            "gcpCredentials",
            {"projectName": "a/b", "region": "r"},
            None,
            "spec.gcpCredentials.projectName: must not contain '/'",
        ),
        (
            "AzureCredentials",
            "azureCredentials",
            {"clientID": "c", "tenantID": "t"},
            None,
            "spec.azureCredentials.clientSecretRef: required",
        ),
        (
            "AzureCredentials",
            "azureCredentials",
            {"clientID": "c", "tenantID": "t", "oidcExchangeToken": {"oidc": {}}},
            None,
            "spec.azureCredentials.oidcExchangeToken: not supported by tokenvoy",
        ),
        ("AzureCredentials", "apiKey", {"secretRef": {"name": "s"}}, None, "spec.azureCredentials: required"),
        ("AWSCredentials", "awsCredentials", {"region": "r", "role": "x"}, None, "spec.awsCredentials.role: unknown"),
    ],
)
def test_policy_problems_name_the_field(
    policy_type: str, field: str, spec: dict[str, Any], secret: dict[str, str] | None, expected: str
) -> None:
    found = problems(config(policy_type, field, spec, secret, "{name: OpenAI}"))
    assert any(expected in problem for problem in found), found


def test_the_field_of_another_type_and_credential_override_are_refused() -> None:
    text = config("APIKey", "apiKey", {"secretRef": {"name": "s"}}, {"apiKey": "k"}, "{name: OpenAI}")
    text = text.replace(
        "  apiKey:\n", "  awsCredentials: {region: r}\n  credentialOverride: {fromRequestHeaders: {}}\n  apiKey:\n"
    )
    found = problems(text)
    assert any("spec.awsCredentials: must not be set when spec.type is APIKey" in p for p in found), found
    assert any("spec.credentialOverride: not supported by tokenvoy" in p for p in found), found


def test_an_unreadable_cloud_secret_fails_at_startup_naming_backend_policy_and_key(monkeypatch) -> None:
    monkeypatch.delenv("TOKENVOY_TEST_UNSET_SA", raising=False)
    text = config(
        "GCPCredentials",
        "gcpCredentials",
        GCP_SPEC,
        {"service_account.json": "${TOKENVOY_TEST_UNSET_SA}"},
        "{name: GCPVertexAI}",
    )
    with pytest.raises(ConfigError) as caught:
        build_runtime(load_text(text))
    (message,) = caught.value.problems
    assert message.startswith("AIServiceBackend/b: BackendSecurityPolicy/p: Secret/s key 'service_account.json'")
    assert "TOKENVOY_TEST_UNSET_SA is not set" in message


# -- through the upstream ext_proc stream -----------------------------------------------------------------


def _headers(values: dict[str, str]) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
        )
    )


def _with_identity(message: ep.ProcessingRequest, endpoint: str | None = None) -> ep.ProcessingRequest:
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"connection.id": 3, "request.time": "2026-01-01T00:00:00Z", "request.id": "req-1"})
    if endpoint is not None:
        attributes.update({ENDPOINT_ATTRIBUTE: endpoint})
    return message


def _upstream_headers(config_text: str, client_headers: dict[str, str]) -> tuple[ep.ProcessingResponse, Any]:
    runtime = build_runtime(load_text(config_text))
    registry = RequestRegistry()
    router = RouterStream(runtime, registry, None, None)
    headers = {":path": "/v1/chat/completions", ":method": "POST", ":authority": "gateway:1975", **client_headers}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    router.handle(_with_identity(ep.ProcessingRequest(request_headers=_headers(headers))))
    router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(body), end_of_stream=True)))
    upstream = UpstreamStream(runtime, registry)
    endpoint = next(iter(runtime.endpoints))
    return upstream.handle(_with_identity(ep.ProcessingRequest(request_headers=_headers(headers)), endpoint)), runtime


def _mutation(response: ep.ProcessingResponse) -> tuple[dict[str, str], set[str], bytes]:
    common = response.request_headers.response
    set_headers = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    return set_headers, set(common.header_mutation.remove_headers), common.body_mutation.body


def test_an_aws_backend_gets_a_signature_for_its_hostname_and_the_clients_credentials_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = f"[default]\naws_access_key_id = {aws_auth.EXAMPLE_ACCESS_KEY_ID}\naws_secret_access_key = {aws_auth.EXAMPLE_SECRET_ACCESS_KEY}\n"  # noqa: E501
    text = config(
        "AWSCredentials",
        "awsCredentials",
        {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "s"}}},
        {"credentials": credentials},
        "{name: OpenAI}",
    )
    client = {"authorization": "Bearer client-key", "x-amz-security-token": "client-token", "x-api-key": "k"}
    response, _ = _upstream_headers(text, client)
    set_headers, removed, body = _mutation(response)
    assert set_headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={aws_auth.EXAMPLE_ACCESS_KEY_ID}/")
    assert {"x-amz-security-token", "x-api-key"} <= removed and "authorization" not in removed
    # what the provider receives: Host = the Backend's hostname (auto_host_rewrite), the client's body
    sent = {**set_headers, "host": "provider.example.com"}
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    verdict = aws_auth.verify("POST", set_headers[":path"], sent, body or raw, aws_auth.known_keys({}))
    assert isinstance(verdict, aws_auth.Verified), verdict


def test_a_token_backend_without_a_token_answers_503_in_the_clients_error_shape() -> None:
    spec = {"clientID": "cid", "tenantID": "tid", "clientSecretRef": {"name": "s"}}
    text = config("AzureCredentials", "azureCredentials", spec, {"client-secret": "x"}, "{name: OpenAI}")
    response, runtime = _upstream_headers(text, {})
    assert response.immediate_response.status.code == 503
    error = orjson.loads(response.immediate_response.body)["error"]
    assert error["code"] == "503" and error["message"].startswith("BackendSecurityPolicy/p has no valid access token")
    with pytest.raises(CredentialUnavailable):  # nothing was fetched: the runtime was never started
        runtime.signers["p"].sign("POST", "", "", b"")


# -- the documentation's examples -----------------------------------------------------------------------


def _doc_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_every_documented_policy_matches_the_published_crd_and_loads() -> None:
    examples = _doc_examples()
    policies = [doc for doc in examples if doc["kind"] == "BackendSecurityPolicy"]
    assert {p["spec"]["type"] for p in policies} == {"APIKey", "AWSCredentials", "GCPCredentials", "AzureCredentials"}
    for policy in policies:
        assert crd_errors(policy) == [], policy["metadata"]["name"]
    schemas = {"openai": "OpenAI", "bedrock": "AWSBedrock", "vertex": "GCPVertexAI", "azure-openai": "AzureOpenAI"}
    extra = [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "AIServiceBackend",
            "metadata": {"name": name},
            "spec": {"schema": {"name": schema}, "backendRef": {"name": "provider"}},
        }
        for name, schema in schemas.items()
    ]
    text = BASE.split("---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend")[0]
    text = text.replace("backendRefs: [{name: b}]", "backendRefs: [{name: openai}]")
    loaded: GatewayConfig = load_text(text + "---\n" + yaml.safe_dump_all(examples + extra, sort_keys=False))
    assert {name: loaded.backends[name].security.type for name in schemas} == {
        "openai": "APIKey",
        "bedrock": "AWSCredentials",
        "vertex": "GCPCredentials",
        "azure-openai": "AzureCredentials",
    }
    assert loaded.backends["vertex"].path_prefix == "/v1/projects/my-project/locations/us-east5"

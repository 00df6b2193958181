"""Fields of the published APIs accepted without an effect on a standalone gateway, and why."""

from __future__ import annotations

_SCOPE_ONLY = "namespaces only scope names, and names are unique in a config"
_SYSTEM_CAS = "System (the only value accepted) is what tokenvoy trusts when no caCertificateRefs are given"

# Fields of the published APIs accepted without an effect on a standalone gateway, and why. Every other field
# the loader accepts changes the loaded config or is refused naming it (tests/test_config_fields.py).
INERT_FIELDS: dict[str, dict[str, str]] = {
    "AIGatewayRoute": {
        "spec.parentRefs": "a standalone gateway has one listener: every route is attached to it",
        "spec.rules[].name": "names the rule for Kubernetes policy attachment; tokenvoy names rules <route>/rule/<n>",
        "spec.rules[].backendRefs[].namespace": _SCOPE_ONLY,
    },
    "AIServiceBackend": {"spec.backendRef.namespace": _SCOPE_ONLY},
    "BackendSecurityPolicy": {
        f"spec.{field}.{ref}.namespace": _SCOPE_ONLY
        for field, ref in (
            ("apiKey", "secretRef"),
            ("azureAPIKey", "secretRef"),
            ("anthropicAPIKey", "secretRef"),
            ("azureCredentials", "clientSecretRef"),
            ("awsCredentials", "credentialsFile.secretRef"),
            ("gcpCredentials", "credentialsFile.secretRef"),
        )
    },
    "Backend": {
        "spec.endpoints[].zone": "zone-aware routing chooses among endpoints; a Backend has one",
        "spec.tls.autoSNIFromEndpointHostname": "tokenvoy sends the endpoint's hostname as SNI already (or tls.sni)",
        "spec.tls.wellKnownCACertificates": _SYSTEM_CAS,
    },
    "BackendTrafficPolicy": {
        "spec.targetRefs[].group": "the target's kind is checked; its group follows from it",
        "spec.rateLimit.global.rules[].xRateLimitHeaders": "DraftVersion03, the only value accepted, is always sent",
    },
    "BackendTLSPolicy": {
        "spec.targetRefs[].group": "the target is an Envoy Gateway Backend of this config (its kind is checked)",
        "spec.validation.wellKnownCACertificates": _SYSTEM_CAS,
    },
    "SecurityPolicy": {
        "spec.apiKeyAuth.credentialRefs[].namespace": _SCOPE_ONLY,
        "spec.jwt.providers[].remoteJWKS.backendRef.namespace": _SCOPE_ONLY,
        "spec.jwt.providers[].remoteJWKS.backendRefs[].namespace": _SCOPE_ONLY,
        "spec.jwt.providers[].remoteJWKS.backendRefs[].weight": "a JWKS is fetched from one Backend",
        "spec.apiKeyAuth.sanitize": "true, the only value accepted, is what tokenvoy always does (the client's "
        "key never reaches a provider)",
        "spec.targetRefs[].group": "the target's kind is checked; its group follows from it",
        "spec.targetRef.group": "the target's kind is checked; its group follows from it",
        "spec.jwt.providers[].recomputeRoute": "extproc picks the route after authentication and clears the "
        "route cache itself",
    },
    "Gateway": {
        "spec.gatewayClassName": "a standalone gateway has no controller to select",
        "spec.infrastructure": "labels, annotations and parameters of the Kubernetes Deployment running Envoy",
        "spec.listeners[].name": "names the listener routes attach to; there is one",
    },
}

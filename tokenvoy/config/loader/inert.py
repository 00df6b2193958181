"""The reasons several kinds give for fields they accept without an effect (each kind's ``INERT``)."""

from __future__ import annotations

SCOPE_ONLY = "namespaces only scope names, and names are unique in a config"
SYSTEM_CAS = "System (the only value accepted) is what tokenvoy trusts when no caCertificateRefs are given"

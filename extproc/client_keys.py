"""The client API keys Envoy's ``api_key_auth`` filter checks, as the ECDS messages extproc sends it.

The keys are plaintext in Envoy's filter config (the filter compares them as sent), so they reach Envoy
over gRPC (ECDS) from this process, which read them from their Secret (a literal, ``${env:…}`` or
``${file:…}``), and are never written into a rendered file. Encoded by hand: four small messages, and
extproc must not import the full Envoy API (tests check the bytes with envoy-data-plane's messages).
"""

from __future__ import annotations

from tokenvoy.config.model import ApiKeyAuth
from tokenvoy.contract import API_KEY_AUTH_TYPE_URL, CLIENT_KEYS_FILTER, TYPED_EXTENSION_CONFIG_TYPE_URL


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _text(number: int, value: str) -> bytes:
    return _bytes_field(number, value.encode()) if value else b""


def _any(type_url: str, value: bytes) -> bytes:
    return _text(1, type_url) + _bytes_field(2, value)


def api_key_auth_config(auth: ApiKeyAuth, keys: dict[str, str]) -> bytes:
    """``ApiKeyAuth`` {credentials, key_sources (headers), forwarding (client id header, hide_credentials)};
    ``keys``: client id → API key, read from the credentials' Secrets."""
    message = b"".join(_bytes_field(1, _text(1, keys[c.client]) + _text(2, c.client)) for c in auth.credentials)
    message += b"".join(_bytes_field(2, _text(1, header)) for header in auth.headers)
    forwarding = _text(1, auth.client_id_header) + _varint(2 << 3 | 0) + _varint(1)  # hide_credentials: true
    return message + _bytes_field(3, forwarding)


def discovery_response(api_key_auth: bytes, version: str, nonce: str) -> bytes:
    """A ``DiscoveryResponse`` carrying the filter's ``TypedExtensionConfig`` (its name is the ECDS resource)."""
    typed = _text(1, CLIENT_KEYS_FILTER) + _bytes_field(2, _any(API_KEY_AUTH_TYPE_URL, api_key_auth))
    return (
        _text(1, version)
        + _bytes_field(2, _any(TYPED_EXTENSION_CONFIG_TYPE_URL, typed))
        + _text(4, TYPED_EXTENSION_CONFIG_TYPE_URL)
        + _text(5, nonce)
    )


def has_error_detail(request: bytes) -> bool:
    """Whether a ``DiscoveryRequest`` is a NACK (field 6, ``error_detail``): Envoy refused the last config."""
    index = 0
    try:
        while index < len(request):
            tag, index = _read_varint(request, index)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                _, index = _read_varint(request, index)
            elif wire == 2:
                length, index = _read_varint(request, index)
                if number == 6:
                    return True
                index += length
            elif wire == 1:
                index += 8
            elif wire == 5:
                index += 4
            else:
                return False
    except IndexError:
        return False
    return False


def _read_varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index
        shift += 7

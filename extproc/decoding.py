"""Undo the provider's ``content-encoding`` (gzip, deflate, br) before a translator reads the answer.

Why: usage extraction and translation read the body. The gateway asks providers for ``identity``
(``upstream.py``), but a proxy or CDN may compress anyway, and a user's ``headerMutation`` may ask for
compression on purpose; without decoding, usage would silently go missing. So the router decodes
centrally, once, and every translator (present and future) only ever sees plain bytes.

Incremental: a decoder takes the body in whatever pieces Envoy delivers (a compressed stream may be split
anywhere, even inside a gzip header or trailer) and returns the plain bytes available so far; ``finish``
at the end of the body says whether the compressed stream really ended.

* gzip (and its alias ``x-gzip``): one or more concatenated members (RFC 1952 §2.2), zero padding after
  a member tolerated as gzip(1) does; each member's CRC-32 and length are checked.
* deflate: RFC 9110 says zlib-wrapped (RFC 1950), but some servers send raw deflate (RFC 1951); the two
  are told apart by the zlib header (method, window, checksum) in the first two bytes.
* br: ``brotli.Decompressor``.
* Stacked codings (``gzip, br``) are undone in reverse order; ``identity`` is skipped.

Anything else (zstd, compress, …) raises :class:`UnsupportedEncoding`: the router then lets the answer
through untouched. Corrupt, truncated or trailing data raises :class:`DecodeError` with a message that
names the coding and the problem. One call may produce at most ``limit`` bytes (a decompression bomb
is refused, not buffered).
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli

MAX_DECODED = 64 * 1024 * 1024
"""Most plain bytes one body message may decode to (a buffered answer arrives as one message)."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


class DecodeError(Exception):
    """The compressed body is corrupt, truncated, followed by stray bytes, or decodes to too much; the message
    says which, for a sentence such as "the provider's answer cannot be decoded: <message>"."""


class UnsupportedEncoding(Exception):
    """A content coding this module cannot undo; ``coding`` names it."""

    def __init__(self, coding: str) -> None:
        super().__init__(f"unsupported content-encoding {coding!r}")
        self.coding = coding


class Decoder(Protocol):
    coding: str

    def feed(self, data: bytes) -> bytes:
        """The plain bytes ``data`` completes (possibly empty: a piece of a header, say)."""
        ...

    def finish(self) -> bytes:
        """At the end of the body: raises :class:`DecodeError` if the compressed stream did not end."""
        ...


def _too_large(limit: int) -> DecodeError:
    return DecodeError(f"it decodes to more than {limit} bytes in one body message")


def _truncated(coding: str) -> DecodeError:
    return DecodeError(f"truncated: the body ends before the {coding} data does")


def _trailing(coding: str) -> DecodeError:
    return DecodeError(f"stray bytes after the end of the {coding} data")


class GzipDecoder:
    """Concatenated gzip members, each checked (CRC-32, length) by zlib."""

    __slots__ = ("_limit", "_member", "_state", "coding")

    _NOTHING, _INSIDE, _BETWEEN = range(3)  # no byte yet; inside a member; after a member (padding allowed)

    def __init__(self, limit: int = MAX_DECODED, coding: str = "gzip") -> None:
        self.coding = coding
        self._limit = limit
        self._member = zlib.decompressobj(_GZIP_WBITS)
        self._state = self._NOTHING

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        budget = self._limit
        while data:
            if self._state == self._BETWEEN:
                data = data.lstrip(b"\0")
                if not data:
                    break
                self._member = zlib.decompressobj(_GZIP_WBITS)
            self._state = self._INSIDE
            try:
                piece = self._member.decompress(data, budget + 1)
            except zlib.error as exc:
                raise DecodeError(f"not valid gzip data ({exc})") from None
            budget -= len(piece)
            if budget < 0:
                raise _too_large(self._limit)
            out.append(piece)
            if self._member.eof:
                data = self._member.unused_data
                self._state = self._BETWEEN
            else:
                data = b""  # output stayed under max_length, so zlib took all the input
        return b"".join(out)

    def finish(self) -> bytes:
        if self._state == self._INSIDE:
            raise _truncated(self.coding)
        return b""


def is_zlib_header(first: int, second: int) -> bool:
    """RFC 1950: method 8 (deflate), window ≤ 32 KiB, no preset dictionary, header checksum a multiple of 31.

    A raw deflate stream from a conforming encoder never passes: its first byte has 8 only with padding
    bits that encoders write as zero."""
    return first & 0x0F == 8 and first >> 4 <= 7 and not second & 0x20 and ((first << 8) | second) % 31 == 0


class DeflateDecoder:
    """HTTP ``deflate``: zlib-wrapped (as specified) or raw (as some servers send), told apart on the first two
    bytes."""

    __slots__ = ("_inflater", "_limit", "_pending", "coding")

    def __init__(self, limit: int = MAX_DECODED, coding: str = "deflate") -> None:
        self.coding = coding
        self._limit = limit
        self._pending = b""  # the first byte, until the second tells which kind of deflate this is
        self._inflater: zlib._Decompress | None = None

    def feed(self, data: bytes) -> bytes:
        inflater = self._inflater
        if inflater is None:
            data = self._pending + data
            if len(data) < 2:
                self._pending = data
                return b""
            self._pending = b""
            inflater = zlib.decompressobj(_ZLIB_WBITS if is_zlib_header(data[0], data[1]) else _RAW_WBITS)
            self._inflater = inflater
        if not data:
            return b""
        if inflater.eof:
            raise _trailing(self.coding)
        try:
            out = inflater.decompress(data, self._limit + 1)
        except zlib.error as exc:
            raise DecodeError(f"not valid deflate data ({exc})") from None
        if len(out) > self._limit:
            raise _too_large(self._limit)
        if inflater.unused_data:
            raise _trailing(self.coding)
        return out

    def finish(self) -> bytes:
        if self._inflater is None:
            if self._pending:
                raise _truncated(self.coding)
            return b""  # an empty body
        if not self._inflater.eof:
            raise _truncated(self.coding)
        return b""


class BrotliDecoder:
    __slots__ = ("_decompressor", "_limit", "_started", "coding")

    def __init__(self, limit: int = MAX_DECODED, coding: str = "br") -> None:
        self.coding = coding
        self._limit = limit
        self._decompressor = brotli.Decompressor()
        self._started = False

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        decompressor = self._decompressor
        if decompressor.is_finished():
            raise _trailing(self.coding)
        self._started = True
        try:
            # The buffer grows in steps, so it may overshoot the limit a little: compared below.
            out = decompressor.process(data, output_buffer_limit=self._limit + 1)
        except brotli.error:
            # brotli reports stray bytes after a complete stream as a failure too
            raise DecodeError("not valid brotli data") from None
        if len(out) > self._limit:
            raise _too_large(self._limit)
        return out

    def finish(self) -> bytes:
        if self._started and not self._decompressor.is_finished():
            raise _truncated(self.coding)
        return b""


class ChainDecoder:
    """Stacked codings, e.g. ``content-encoding: gzip, br`` (gzip applied first, so undone last)."""

    __slots__ = ("_decoders", "coding")

    def __init__(self, decoders: list[Decoder], coding: str) -> None:
        self.coding = coding
        self._decoders = decoders  # in decoding order

    def feed(self, data: bytes) -> bytes:
        for decoder in self._decoders:
            data = decoder.feed(data)
        return data

    def finish(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = decoder.feed(data) + decoder.finish()
        return data


_DECODERS: dict[str, type[GzipDecoder] | type[DeflateDecoder] | type[BrotliDecoder]] = {
    "gzip": GzipDecoder,
    "x-gzip": GzipDecoder,  # RFC 9110 §8.4.1.3: treat as gzip
    "deflate": DeflateDecoder,
    "br": BrotliDecoder,
}


def decoder_for(content_encoding: str, limit: int = MAX_DECODED) -> Decoder | None:
    """A decoder for a ``content-encoding`` value; None when there is nothing to undo (empty, ``identity``).

    Raises :class:`UnsupportedEncoding` naming the first coding that cannot be undone."""
    codings = [c for c in (part.strip().lower() for part in content_encoding.split(",")) if c and c != "identity"]
    if not codings:
        return None
    decoders: list[Decoder] = []
    for coding in reversed(codings):  # listed in the order applied
        kind = _DECODERS.get(coding)
        if kind is None:
            raise UnsupportedEncoding(coding)
        decoders.append(kind(limit, coding))
    return decoders[0] if len(decoders) == 1 else ChainDecoder(decoders, ", ".join(codings))

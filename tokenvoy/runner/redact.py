"""Take credential header values out of Envoy's log lines before ``tokenvoy run`` prints them.

At debug level Envoy's ext_proc filter dumps every message extproc answers, header mutations included,
as protobuf text: the upstream filter's ``authorization`` / ``api-key`` / ``x-api-key`` value would be in
the log. Its HTTP connection manager dumps request headers as ``'name', 'value'``, its HTTP/1 codec (trace)
as ``key=name value=value``: the client's own key. These shapes are recognised here; the value is
replaced, the header name kept so the log still says what was set.
"""

from __future__ import annotations

import re
from collections.abc import Callable

SENSITIVE_HEADERS = (
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "x-amz-security-token",
)
REDACTED = b"<redacted>"

_NAMES = b"|".join(re.escape(name.encode()) for name in SENSITIVE_HEADERS)
# protobuf text: `key: "authorization"`, the value on the next line as `raw_value: "..."` or `value: "..."`
_PROTO_KEY = re.compile(rb'^\s*key:\s*"(?:' + _NAMES + rb')"\s*$', re.IGNORECASE)
_PROTO_VALUE = re.compile(rb'^(\s*(?:raw_)?value:\s*)".*"(\s*)$')
# the HTTP/1 codec at trace level: `completed header: key=authorization value=Bearer ...`
_KEY_VALUE = re.compile(rb"(\bkey=(?:" + _NAMES + rb")\s+value=)[^\r\n]*", re.IGNORECASE)
# header map dumps: `'authorization', 'Bearer ...'`; HTTP/1-like `authorization: Bearer ...`
_PAIR = re.compile(rb"('(?:" + _NAMES + rb")',\s*)'[^'\n]*'", re.IGNORECASE)
_COLON = re.compile(
    rb"(?<![\w-])((?:" + _NAMES + rb")[\"']?\s*[:=]\s*[\"']?)(?!<redacted>)[^\s\"',}][^\r\n\"',}]*", re.IGNORECASE
)


def line_redactor() -> Callable[[bytes], bytes]:
    """A filter for one stream of lines (it remembers a ``key:`` line until the value line after it)."""
    pending = False

    def redact(line: bytes) -> bytes:
        nonlocal pending
        if pending:
            pending = False
            match = _PROTO_VALUE.match(line)
            if match:
                return match.group(1) + b'"' + REDACTED + b'"' + match.group(2)
        if _PROTO_KEY.match(line):
            pending = True
            return line
        line = _KEY_VALUE.sub(rb"\1" + REDACTED, line)
        line = _PAIR.sub(rb"\1'" + REDACTED + rb"'", line)
        return _COLON.sub(rb"\1" + REDACTED, line)

    return redact

"""The SSE parser gives the same events however the provider's bytes are chunked."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.extproc.sse import SSEEvent, SSEParser

# A recorded OpenAI-style stream, with what real providers add around it: an `event:` field, a data
# field split over two lines, a comment inside an event, a keep-alive comment on its own (OpenRouter
# sends these while the model thinks), multi-byte UTF-8, and both LF and CRLF terminators.
RECORDED = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","choices":[{"delta":{"role":"assistant"}}]}\n\n'
    + 'data: {"id":"c1","choices":[{"delta":{"content":"h\u00e9llo \u65e5\u672c \U0001f680"}}]}\n\n'.encode()
    + b"event: message\r\n"
    b": a comment inside an event\r\n"
    b'data: {"id":"c1",\r\n'
    b'data: "choices":[]}\r\n\r\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
    b"data: [DONE]\n\n"
)

EXPECTED = [
    (None, ""),
    (None, '{"id":"c1","choices":[{"delta":{"role":"assistant"}}]}'),
    (None, '{"id":"c1","choices":[{"delta":{"content":"h\u00e9llo \u65e5\u672c \U0001f680"}}]}'),
    ("message", '{"id":"c1",\n"choices":[]}'),
    (None, '{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}'),
    (None, "[DONE]"),
]


def _feed(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _summary(events: list[SSEEvent]) -> list[tuple[str | None, str, bytes]]:
    return [(e.event, e.data, e.raw) for e in events]


def test_recorded_stream_fed_whole():
    events = _feed([RECORDED])
    assert [(e.event, e.data) for e in events] == EXPECTED
    assert b"".join(e.raw for e in events) == RECORDED


def test_events_are_returned_as_soon_as_their_blank_line_arrives():
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\n') == []
    first = parser.feed(b"\ndata: [DO")
    assert [(e.data, e.raw) for e in first] == [('{"a":1}', b'data: {"a":1}\n\n')]
    assert [e.data for e in parser.feed(b"NE]\n\n")] == ["[DONE]"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40))
def test_recorded_stream_survives_any_split(cuts):
    """Splits land inside UTF-8 characters, inside CRLF pairs and between the two blank-line bytes."""
    assert _summary(_feed(_split(RECORDED, cuts))) == _summary(_feed([RECORDED]))


def test_split_inside_every_multibyte_character_and_crlf():
    # The exhaustive version of the property for the places most likely to break: every single cut.
    whole = _summary(_feed([RECORDED]))
    for cut in range(len(RECORDED) + 1):
        assert _summary(_feed([RECORDED[:cut], RECORDED[cut:]])) == whole, cut
    # And byte by byte.
    assert _summary(_feed([RECORDED[i : i + 1] for i in range(len(RECORDED))])) == whole


def test_flush_returns_an_unterminated_last_event():
    parser = SSEParser()
    assert [e.data for e in parser.feed(b"data: one\n\ndata: two\ndata: lines")] == ["one"]
    last = parser.flush()
    assert [(e.data, e.raw) for e in last] == [("two\nlines", b"data: two\ndata: lines")]
    assert parser.flush() == []


def test_flush_keeps_trailing_bytes_of_a_stream_without_final_blank_line():
    # The tail after the last event still reaches the client when the stream is rebuilt from `raw`.
    events = _feed([b"data: a\n\n\n"])
    assert b"".join(e.raw for e in events) == b"data: a\n\n\n"
    assert [e.data for e in events if e.data] == ["a"]


def test_a_terminator_split_between_cr_and_lf_is_not_two_events():
    # "\r\n\r\n" cut right after a "\r": the parser must not emit the event early and leave "\n" behind.
    stream = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for cut in range(len(stream) + 1):
        events = _feed([stream[:cut], stream[cut:]])
        assert [(e.data, e.raw) for e in events] == [("a", b"data: a\r\n\r\n"), ("b", b"data: b\r\n\r\n")], cut


def test_mixed_line_endings_end_an_event():
    # A blank line may use a different line ending than the line before it ("\n\r\n", "\r\r\n").
    stream = b"data: a\n\r\ndata: b\r\r\ndata: c\r\n\n"
    assert [(e.data, e.raw) for e in _feed([stream])] == [
        ("a", b"data: a\n\r\n"),
        ("b", b"data: b\r\r\n"),
        ("c", b"data: c\r\n\n"),
    ]


# ---- any stream, any split: compared with a line-by-line reading of the SSE spec -------------------------

_EOL = st.sampled_from([b"\n", b"\r\n", b"\r"])
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=12,
)


@st.composite
def _line(draw) -> bytes:
    kind = draw(st.sampled_from(["data", "event", "comment", "id", "bare-data"]))
    text = draw(_TEXT).encode()
    if kind == "comment":
        return b":" + text
    if kind == "bare-data":
        return b"data"
    space = draw(st.sampled_from([b"", b" "]))
    return kind.encode() + b":" + space + text


@st.composite
def _stream(draw) -> bytes:
    out = b""
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            out += draw(_line()) + draw(_EOL)
        out += draw(_EOL)  # the blank line: mixed endings such as "\n\r\n" are legal
    if draw(st.booleans()):
        out += draw(_line())  # an unterminated last event
    return out


def _reference(stream: bytes) -> list[tuple[str | None, str]]:
    """Events per the WHATWG algorithm, plus the unterminated tail that ``flush()`` promises."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    for line in re.split(r"\r\n|\n|\r", stream.decode()):
        if line == "":
            if data or name is not None:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data or name is not None:
        events.append((name, "\n".join(data)))
    return events


@settings(max_examples=120, deadline=None)
@given(_stream(), st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_any_stream_any_split_matches_the_spec(stream, cuts):
    events = _feed(_split(stream, cuts))
    assert b"".join(e.raw for e in events) == stream
    # An event without data and name (a comment block, or a lone "data:") means nothing to a consumer.
    meaningful = [(e.event, e.data) for e in events if e.data or e.event is not None]
    assert meaningful == [(name, data) for name, data in _reference(stream) if data or name is not None]
    assert _summary(events) == _summary(_feed([stream]))

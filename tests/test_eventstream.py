"""AWS event stream framing: what Bedrock streams are decoded from, split anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenvoy.extproc.eventstream import EventStreamDecoder, EventStreamError, encode_event, encode_exception

STREAM = (
    encode_event("messageStart", b'{"role":"assistant"}')
    + encode_event("contentBlockDelta", '{"delta":{"text":"h\u00e9llo \u2603"}}'.encode())
    + encode_exception("throttlingException", b'{"message":"Too many requests"}')
)


def _decode_in_pieces(raw: bytes, cuts: list[int]) -> list[tuple[str, str, bytes]]:
    decoder = EventStreamDecoder()
    messages = []
    start = 0
    for cut in [*sorted(cuts), len(raw)]:
        messages += decoder.feed(raw[start:cut])
        start = cut
    assert decoder.pending == 0
    return [(m.message_type, m.event_type, m.payload) for m in messages]


def test_messages_come_out_with_their_types_and_payloads() -> None:
    assert _decode_in_pieces(STREAM, []) == [
        ("event", "messageStart", b'{"role":"assistant"}'),
        ("event", "contentBlockDelta", '{"delta":{"text":"h\u00e9llo \u2603"}}'.encode()),
        ("exception", "throttlingException", b'{"message":"Too many requests"}'),
    ]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_messages(cuts: list[int]) -> None:
    assert _decode_in_pieces(STREAM, cuts) == _decode_in_pieces(STREAM, [])


def test_a_cut_stream_leaves_pending_bytes() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(STREAM[:30]) == []
    assert decoder.pending == 30


def test_a_corrupted_message_is_refused_with_a_clear_error() -> None:
    corrupted = bytearray(STREAM)
    corrupted[20] ^= 0x01
    with pytest.raises(EventStreamError, match="invalid AWS event stream"):
        EventStreamDecoder().feed(bytes(corrupted))


def test_messages_before_a_corrupted_one_are_kept_on_the_error() -> None:
    corrupted = bytearray(STREAM)
    corrupted[-10] ^= 0x01  # inside the last message
    with pytest.raises(EventStreamError) as raised:
        EventStreamDecoder().feed(bytes(corrupted))
    assert [m.event_type for m in raised.value.messages] == ["messageStart", "contentBlockDelta"]

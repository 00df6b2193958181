"""In-place top-level JSON edits: the result is the same document with only the edited values replaced."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.extproc.jsonedit import set_top_level, top_level_spans

# Keys that also appear at the top level, so a nested "model" must never be mistaken for the top-level one.
_KEYS = st.one_of(
    st.sampled_from(["model", "stream", "stream_options", "messages", "tools", "content", 'we"ird', "back\\slash"]),
    st.text(max_size=6),
)
_STRINGS = st.one_of(
    st.sampled_from(
        ['say "hi"', "C:\\path\\", "h\u00e9llo \u65e5\u672c \U0001f680", '{"model": "x"}', "[1, 2]", "\\", '"']
    ),
    st.text(max_size=10),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    _STRINGS,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)),
    max_leaves=6,
)
_OBJECTS = st.dictionaries(_KEYS, _VALUES, max_size=5)
_UPDATES = st.dictionaries(_KEYS, _VALUES, max_size=3)


def _messy_json(value, rnd: random.Random) -> str:
    """JSON with arbitrary whitespace between every token, the way hand-written or odd SDK bodies look."""

    def ws() -> str:
        return "".join(rnd.choice(" \t\r\n") for _ in range(rnd.randrange(3)))

    def encode(item) -> str:
        if isinstance(item, dict):
            inner = ",".join(
                f"{ws()}{json.dumps(k, ensure_ascii=rnd.random() < 0.5)}{ws()}:{ws()}{encode(v)}{ws()}"
                for k, v in item.items()
            )
            return "{" + (inner or ws()) + "}"
        if isinstance(item, list):
            return "[" + (",".join(f"{ws()}{encode(v)}{ws()}" for v in item) or ws()) + "]"
        return json.dumps(item, ensure_ascii=rnd.random() < 0.5)

    return ws() + encode(value) + ws()


@st.composite
def _documents(draw) -> tuple[dict, bytes]:
    obj = draw(_OBJECTS)
    style = draw(st.sampled_from(["orjson", "json", "indent2", "indent4-ascii", "messy"]))
    if style == "orjson":
        raw = orjson.dumps(obj)
    elif style == "json":
        raw = json.dumps(obj, ensure_ascii=False).encode()
    elif style == "indent2":
        raw = json.dumps(obj, indent=2, ensure_ascii=False).encode()
    elif style == "indent4-ascii":
        raw = json.dumps(obj, indent=4).encode()
    else:
        raw = _messy_json(obj, draw(st.randoms(use_true_random=False))).encode()
    assert orjson.loads(raw) == obj
    return obj, raw


@settings(max_examples=70, deadline=None)
@given(_documents())
def test_spans_cover_exactly_each_top_level_value(document):
    obj, raw = document
    spans = top_level_spans(raw)
    assert set(spans) == set(obj)
    for key, (start, end) in spans.items():
        text = raw[start:end]
        assert text == text.strip(b" \t\r\n")
        assert orjson.loads(text) == obj[key]


@settings(max_examples=70, deadline=None)
@given(_documents(), _UPDATES)
def test_set_top_level_equals_a_dict_merge(document, updates):
    obj, raw = document
    out = set_top_level(raw, updates)
    merged = orjson.loads(out)
    assert merged == {**obj, **updates}
    # Existing keys keep their order (new keys may come first).
    assert [k for k in merged if k in obj] == list(obj)


@settings(max_examples=70, deadline=None)
@given(_documents(), st.data())
def test_bytes_outside_the_edited_value_are_untouched(document, data):
    obj, raw = document
    if not obj:
        return
    key = data.draw(st.sampled_from(sorted(obj)))
    value = data.draw(_VALUES)
    start, end = top_level_spans(raw)[key]
    out = set_top_level(raw, {key: value})
    encoded = orjson.dumps(value)
    assert out == raw[:start] + encoded + raw[end:]


@settings(max_examples=60, deadline=None)
@given(_documents(), _KEYS.filter(lambda k: k != ""), _VALUES)
def test_adding_a_key_keeps_every_original_byte(document, key, value):
    obj, raw = document
    if key in obj:
        return
    out = set_top_level(raw, {key: value})
    opening = raw.index(b"{") + 1
    assert out.startswith(raw[:opening])
    assert out.endswith(raw[opening:])
    assert orjson.loads(out) == {key: value, **obj}


@pytest.mark.parametrize("raw", [b"{}", b"{ }", b" {\n}\n", b"{\r\n\t}"])
def test_empty_object(raw):
    out = set_top_level(raw, {"model": "gpt-4o", "stream_options": {"include_usage": True}})
    assert orjson.loads(out) == {"model": "gpt-4o", "stream_options": {"include_usage": True}}


def test_nested_model_is_not_edited():
    raw = (
        b'{"messages":[{"role":"user","content":"{\\"model\\": \\"fake\\"}","model":"inner"}],'
        b'"tools":[{"model":"t"}],"model" : "gpt-4o-mini" ,"stream":true}'
    )
    out = set_top_level(raw, {"model": "gpt-4o"})
    assert out == raw.replace(b'"model" : "gpt-4o-mini"', b'"model" : "gpt-4o"')


def test_no_updates_returns_the_same_bytes():
    raw = b'{ "model": "x" }'
    assert set_top_level(raw, {}) is raw

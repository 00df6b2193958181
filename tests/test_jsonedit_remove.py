"""``remove_top_level``: any formatting, any values; the other members keep their exact bytes."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tokenvoy.extproc.jsonedit import remove_top_level, set_top_level

_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _KEYS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)
_FORMATS = st.sampled_from([{}, {"indent": 2}, {"separators": (",", ":")}, {"separators": (" , ", " : ")}])


@given(st.dictionaries(_KEYS, _VALUES, max_size=6), st.data(), _FORMATS)
def test_removing_keys_from_any_object(document: dict, data: st.DataObject, style: dict) -> None:
    raw = json.dumps(document, ensure_ascii=data.draw(st.booleans()), **style).encode()
    removed = data.draw(
        st.lists(st.sampled_from(sorted(document)) if document else _KEYS, max_size=3) | st.just(["absent"])
    )
    out = remove_top_level(raw, removed)
    # json, not orjson: orjson reads integers beyond 64 bits as floats, the edit keeps their bytes exactly
    assert json.loads(out) == {k: v for k, v in document.items() if k not in removed}
    if not set(removed) & set(document):
        assert out is raw  # nothing to do: the very same bytes


@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=6), st.data())
def test_kept_members_keep_their_bytes(document: dict, data: st.DataObject) -> None:
    raw = json.dumps(document, separators=(",", ":")).encode()
    key = data.draw(st.sampled_from(sorted(document)))
    out = remove_top_level(raw, [key])
    for name, value in document.items():
        if name != key:
            assert json.dumps({name: value}, separators=(",", ":")).encode()[1:-1] in out


def test_remove_then_set_as_the_upstream_filter_does() -> None:
    raw = b'{ "model" : "m", "user": {"a": [1, {"b": "}"}]}, "n": 1 }'
    out = set_top_level(remove_top_level(raw, ["user"]), {"tier": orjson.Fragment(b'"flex"')})
    assert orjson.loads(out) == {"model": "m", "n": 1, "tier": "flex"}
    assert remove_top_level(b"{}", ["x"]) == b"{}"
    assert orjson.loads(remove_top_level(b'{"x": 1}', ["x"])) == {}

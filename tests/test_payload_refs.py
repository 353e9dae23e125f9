"""Channel refs inside trigger payloads: converted to JSON wherever they are nested, the
caller's payload left untouched, and ref-free parts shared rather than copied."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from iii_trio.protocol import StreamChannelRef, unstructure_ref
from iii_trio.worker._refs import payload_to_json

refs = st.builds(
    StreamChannelRef,
    channel_id=st.uuids().map(str),
    access_key=st.text(min_size=1, max_size=8),
    direction=st.sampled_from(["read", "write"]),
)
leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
)
payloads = st.recursive(
    leaves | refs,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def _expected(value: Any) -> Any:
    if isinstance(value, StreamChannelRef):
        return unstructure_ref(value)
    if isinstance(value, dict):
        return {k: _expected(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_expected(v) for v in value]
    return value


def _needs_conversion(value: Any) -> bool:
    """A ref or a tuple (sent as a list) somewhere inside."""
    if isinstance(value, StreamChannelRef | tuple):
        return True
    if isinstance(value, dict):
        return any(_needs_conversion(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_needs_conversion(v) for v in value)
    return False


@given(payloads)
def test_refs_become_json_anywhere_and_the_input_is_untouched(payload: Any) -> None:
    before = copy.deepcopy(payload)
    out = payload_to_json(payload)
    assert out == _expected(payload)
    assert payload == before
    if isinstance(payload, dict | list) and not _needs_conversion(payload):
        assert out is payload  # nothing to convert: shared, not copied


def test_channel_ends_are_sent_as_their_refs() -> None:
    ref = StreamChannelRef(channel_id="c", access_key="k", direction="read")

    class End:  # anything with a ``ref`` attribute holding a ref, like ChannelReader
        def __init__(self) -> None:
            self.ref = ref

    assert payload_to_json({"reader": End(), "n": [1, End()]}) == {
        "reader": unstructure_ref(ref),
        "n": [1, unstructure_ref(ref)],
    }

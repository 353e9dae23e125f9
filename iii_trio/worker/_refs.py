"""Walking payloads for channel refs: turning refs into JSON on the way out, and into live
channel ends on the way in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import JSON, StreamChannelRef, is_channel_ref, structure_ref, unstructure_ref

#: Types that never hold a channel ref (checked first: almost every leaf is one of these).
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes})


def payload_to_json(value: Any) -> JSON:
    """``value`` with every :class:`StreamChannelRef` (or object with a ``ref`` attribute
    holding one, i.e. a channel end) replaced by its JSON form. Dicts and lists in which
    nothing changes are returned as they are (shared, not copied); tuples become lists."""
    cls = type(value)
    if cls in _PLAIN:
        return value  # type: ignore[no-any-return]
    if cls is dict:
        out: dict[str, JSON] | None = None
        for key, item in value.items():
            converted = payload_to_json(item)
            if out is None and converted is not item:
                out = dict(value)  # first change: copy, keep the caller's dict intact
            if out is not None:
                out[key] = converted
        return value if out is None else out
    if cls is list or cls is tuple:
        items = [payload_to_json(v) for v in value]
        if cls is list and all(a is b for a, b in zip(items, value, strict=True)):
            return value  # type: ignore[no-any-return]
        return items
    if isinstance(value, StreamChannelRef):
        return unstructure_ref(value)
    ref = getattr(value, "ref", None)
    if isinstance(ref, StreamChannelRef):
        return unstructure_ref(ref)
    if isinstance(value, dict):  # Mapping subclasses: as dicts
        return {k: payload_to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [payload_to_json(v) for v in value]
    return value  # type: ignore[no-any-return]


def replace_refs(value: JSON, open_end: Callable[[StreamChannelRef], object]) -> Any:
    """A copy of ``value`` with every channel ref (iii's structural test) replaced by
    ``open_end(ref)``. Values without refs are returned unchanged."""
    if isinstance(value, dict):
        if is_channel_ref(value):
            return open_end(structure_ref(value))
        return {k: replace_refs(v, open_end) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_refs(v, open_end) for v in value]
    return value


def contains_ref(value: JSON) -> bool:
    if isinstance(value, dict):
        return is_channel_ref(value) or any(contains_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_ref(v) for v in value)
    return False

"""``new_uuid``: what the wire and the official SDKs accept as an id."""

from __future__ import annotations

import uuid

from iii_trio.protocol import new_uuid
from iii_trio.protocol._codec import _is_uuid


def test_new_uuids_are_distinct_version_4_uuids_in_canonical_form() -> None:
    ids = [new_uuid() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    variants = set()
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case, hyphenated, 36 characters
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert _is_uuid(text)
        variants.add(text[19])
    assert variants == set("89ab")  # the two variant bits are set, the other two random

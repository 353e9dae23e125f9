"""Test helpers for users of iii_trio (the pytest plugin lives in ``_plugin``)."""

from __future__ import annotations

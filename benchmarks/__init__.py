"""Benchmarks for iii_trio, each against a baseline measured in the same run.

Run ``python -m benchmarks`` (or ``nox -s bench``); ``--quick`` for a short run, ``--help`` for
the options. What each benchmark measures is in ``benchmarks/README.md``.
"""

from __future__ import annotations

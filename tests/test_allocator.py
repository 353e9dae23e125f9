"""``tune_allocator``: glibc keeps freed memory instead of page-faulting it back in."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

import iii_trio

# Fill 4 MiB of heap with 64 KiB objects (each below glibc's 128 KiB mmap threshold, so none
# raises the trim threshold), free it all, repeat: with glibc's defaults the heap shrinks after
# every round and the next round faults every page in again.
_CHURN = """
import json, resource, sys
import iii_trio
tuned = iii_trio.tune_allocator() if sys.argv[1] == "tuned" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
blocks = [bytes(65536) for _ in range(64)]
del blocks
before = faults()
for _ in range(20):
    blocks = [bytes(65536) for _ in range(64)]
    del blocks
print(json.dumps({"tuned": tuned, "faults": faults() - before}))
"""

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are a glibc feature",
)


def _churn(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@glibc_only
def test_tuned_heap_is_not_given_back_and_faulted_in_again() -> None:
    default = _churn("default")
    tuned = _churn("tuned")
    assert tuned["tuned"] is True
    # 20 rounds x 4 MiB = 20,480 pages: the default heap faults most of them in again.
    assert isinstance(default["faults"], int) and default["faults"] > 5_000
    assert isinstance(tuned["faults"], int) and tuned["faults"] < 2_000


def test_rejects_impossible_thresholds() -> None:
    with pytest.raises(ValueError, match="negative"):
        iii_trio.tune_allocator(trim_threshold=-1)
    with pytest.raises(ValueError, match="M_MMAP_THRESHOLD"):
        iii_trio.tune_allocator(mmap_threshold=64 * 1024 * 1024)
    with pytest.raises(ValueError, match="C int"):
        iii_trio.tune_allocator(trim_threshold=2**31)


def test_cli_engine_flag_parses() -> None:
    from iii_trio._cli import _parser

    assert _parser().parse_args(["engine"]).tune_allocator is True
    assert _parser().parse_args(["engine", "--no-tune-allocator"]).tune_allocator is False

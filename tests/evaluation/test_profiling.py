"""Benchmark helpers (pipeline.evaluation.profiling): peak memory of a fresh process is its own."""

from __future__ import annotations

import sys

import pytest

from pipeline.evaluation.profiling import peak_rss_mib, run_child_json

CHILD = "import json; from pipeline.evaluation.profiling import peak_memory_mib; print(json.dumps(peak_memory_mib()))"


@pytest.mark.fast
def test_fresh_process_reports_its_own_peak_not_its_parents() -> None:
    """Linux's ru_maxrss carries the parent's peak into a child across exec; the measured peak must not."""
    ballast = bytearray(1536 * 2**20)
    ballast[:: 4096] = b"\1" * len(ballast[:: 4096])  # touch every page: 1.5 GiB resident
    parent = peak_rss_mib()
    child = run_child_json([sys.executable, "-c", CHILD])["peak_rss_mib"]
    del ballast
    print(f"\npeak RSS: parent {parent:.0f} MiB, fresh child {child:.0f} MiB")
    assert parent > 1536
    assert 10 < child < parent - 1000

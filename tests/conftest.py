"""Shared test set-up: real weights and data from ../shared, never the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VSTYLE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"

os.environ.setdefault("VSTYLE_WEIGHTS", str(SHARED / "weights"))
os.environ["VSTYLE_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA} (set VSTYLE_SHARED)")
    return DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a whole module, restored afterwards (use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``). On the shared 2-core machine two threads
    per process oversubscribe it: RL-NST training steps ran ~10x slower (0.31 s vs 3.4 s per style-learning
    step at 64 px), RAFT stalled under contention, and the tiny diffusion models ran several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

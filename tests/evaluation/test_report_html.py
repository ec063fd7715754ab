"""The comparison report opens in headless Chromium and shows its plots and its H.264 videos.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (CI: ``apt-get install -y chromium chromium-driver``);
skipped with that reason where the ``chromium`` command is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI: apt-get install -y chromium chromium-driver)"),
    pytest.mark.usefixtures("one_torch_thread"),
]
MAGENTA = (255, 0, 255)
MATPLOTLIB_C0 = (31, 119, 180)  # the first bar colour of the metric plots


@pytest.fixture(scope="module")
def report(tmp_path_factory, data_dir) -> Path:
    from scripts.compare import main

    root = tmp_path_factory.mktemp("html")
    main(["--out", str(root / "report"), "--clips", str(data_dir / "videos" / "test" / "wolf.mp4"), "--width", "64",
          "--max-frames", "3", "--cache-dir", str(root / "cache"), "--no-clip", "--quiet"])
    return root / "report"


def screenshot(page: Path, out: Path, profile: Path, height: int = 900) -> np.ndarray:
    """A 1200 x ``height`` screenshot (H,W,3) uint8 of ``page`` taken by headless Chromium."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", f"--screenshot={out}",
               f"--window-size=1200,{height}", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> np.ndarray:
    return (np.abs(pixels - np.array(colour)) <= tolerance).all(axis=-1)


def longest_dark_run(pixels: np.ndarray) -> int:
    """The longest horizontal run of near-black pixels in any row of ``pixels`` (H,W,3)."""
    dark = near(pixels, (0, 0, 0), tolerance=40)
    longest = 0
    for row in dark:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        if edges.size:
            longest = max(longest, int((edges[1::2] - edges[::2]).max()))
    return longest


def test_index_page_shows_the_plots(report, tmp_path):
    """The frontier plot first (above the fold), then the bar plots further down."""
    pixels = screenshot(report / "index.html", tmp_path / "index.png", tmp_path / "profile", height=3000)
    assert pixels.shape == (3000, 1200, 3)
    assert pixels.std() > 10, "blank screenshot"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 300
    top = pixels[:900]
    # matplotlib's axes frames: rows of several hundred black pixels, which no text or table border draws
    assert longest_dark_run(top) > 300, "the frontier plot is not displayed first"
    assert near(pixels, MATPLOTLIB_C0).sum() > 1000, "the bar plot image is not displayed"


def test_side_by_side_video_decodes_in_chromium(report, tmp_path):
    """The report's H.264 mp4, alone on a magenta page without a poster: only a decoded frame covers the magenta."""
    probe = report.parent / "video_probe.html"
    probe.write_text("<!doctype html><html><body style='margin:0;background:#ff00ff'>"
                     "<video src='report/videos/wolf__starry_night.mp4' muted autoplay width=600></video></body></html>")
    pixels = screenshot(probe, tmp_path / "video.png", tmp_path / "profile")
    height = 600 * (64 + 20) // (3 * 64)  # content | baseline | flow-blend, 64 px each, under the 20 px label strip
    region = pixels[: height - 4, :596]
    assert near(region, MAGENTA).mean() < 0.02, "the video did not render (H.264 not decoded?)"
    assert region.std() > 20
    assert near(pixels[height + 10 :], MAGENTA).mean() > 0.95  # and nothing else is on the page

"""The fixed flow-blend frontier (pipeline.evaluation.frontier) and its report table and plot, on hand-made points
whose answers are known."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from pipeline.evaluation.frontier import (
    ABOVE_RANGE,
    BELOW_RANGE,
    NO_FRONTIER,
    distance_to_frontier,
    frontier_at,
    frontier_report,
    lower_frontier,
    style_means,
)
from pipeline.evaluation.report import frontier_table, plot_frontier

pytestmark = pytest.mark.fast

# (x = warping error, y = loss) of the references: a convex, falling chain, a dominated point (2.5, 7) (beaten by
# (2, 6) on both axes) and a non-dominated point (3.5, 4.9) above the chord (3, 5) - (4, 4.5) (4.75 at x 3.5)
CHAIN = [(1.0, 10.0), (2.0, 6.0), (3.0, 5.0), (4.0, 4.5)]
DOMINATED, ABOVE_CHORD = (2.5, 7.0), (3.5, 4.9)


def test_frontier_keeps_the_lower_left_convex_chain():
    points = [CHAIN[2], DOMINATED, CHAIN[0], ABOVE_CHORD, CHAIN[3], CHAIN[1], (5.0, 4.5), (1.0, 11.0), (math.nan, 1.0)]
    frontier = lower_frontier(points)
    assert frontier == CHAIN
    assert DOMINATED not in frontier and ABOVE_CHORD not in frontier
    assert (5.0, 4.5) not in frontier  # more warping error for the same loss: dominated
    assert lower_frontier([(1.0, 2.0), (2.0, 1.0), (3.0, 0.0)]) == [(1.0, 2.0), (3.0, 0.0)]  # collinear middle: same line
    assert lower_frontier([(2.0, 3.0)]) == [(2.0, 3.0)] and lower_frontier([]) == []


def test_frontier_value_interpolates_and_never_extrapolates():
    assert frontier_at(CHAIN, 1.5) == pytest.approx(8.0)
    assert frontier_at(CHAIN, 2.5) == pytest.approx(5.5)
    assert frontier_at(CHAIN, 1.0) == pytest.approx(10.0) and frontier_at(CHAIN, 4.0) == pytest.approx(4.5)
    for x in (0.99, 4.01, math.nan):
        assert math.isnan(frontier_at(CHAIN, x))
    assert frontier_at([(2.0, 3.0)], 2.0) == 3.0 and math.isnan(frontier_at([(2.0, 3.0)], 2.1))
    assert math.isnan(frontier_at([], 1.0))


def test_distance_below_above_on_and_outside_the_frontier():
    below = distance_to_frontier(CHAIN, 2.5, 5.0)
    assert (below.frontier, below.delta, below.relative, below.outside) == pytest.approx((5.5, -0.5, -0.5 / 5.5, None))
    above = distance_to_frontier(CHAIN, 1.5, 9.0)
    assert (above.delta, above.relative) == pytest.approx((1.0, 0.125)) and above.outside is None
    assert distance_to_frontier(CHAIN, *DOMINATED).delta == pytest.approx(1.5)
    assert distance_to_frontier(CHAIN, *CHAIN[1]).delta == pytest.approx(0.0, abs=1e-12)
    for x, side in ((0.5, BELOW_RANGE), (5.0, ABOVE_RANGE)):
        outside = distance_to_frontier(CHAIN, x, 1.0)
        assert outside.outside == side and math.isnan(outside.delta) and math.isnan(outside.relative)
        assert outside.as_dict() == {"x": x, "y": 1.0, "frontier": None, "delta": None, "relative": None, "outside": side,
                                     "dominated": False}
    # worse on both axes than a frontier vertex, inside the range or beyond it; a vertex itself is not dominated
    assert distance_to_frontier(CHAIN, 5.0, 4.6).dominated and distance_to_frontier(CHAIN, *DOMINATED).dominated
    assert not below.dominated and not distance_to_frontier(CHAIN, *CHAIN[1]).dominated
    assert distance_to_frontier([], 1.0, 1.0).outside == NO_FRONTIER


def item(method: str, clip: str, x: float, gram: float, lpips: float, style: str = "starry", seed: int = 0) -> dict:
    metrics = {"warping_error_classical": {"mean": x}, "style_gram": {"mean": gram}, "lpips_content": {"mean": lpips}}
    return {"clip": clip, "style": style, "method": method, "seed_index": seed, "metrics": metrics}


REFERENCES = {"baseline": "0 (baseline)", "fb-0.3": "0.3:latent", "fb-0.5": "0.5:latent", "fb-0.7": "0.7:pixel",
              "fb-0.9": "0.9:pixel", "fb-dominated": "0.5:pixel"}


@pytest.fixture
def items() -> list[dict]:
    """References on the CHAIN (LPIPS = Gram / 10) on two clips; 'rl' (two seeds on clip a) averages to (2.5, 5.0)
    only when seeds are averaged per clip first; 'nst' flickers more than every reference (a lower Gram, a higher
    LPIPS than the last vertex); a second style where the references lie at x + 10 (one frontier per style)."""
    rows = []
    for style, offset in (("starry", 0.0), ("udnie", 10.0)):
        for label, (x, y) in zip(REFERENCES, [*reversed(CHAIN), CHAIN[0], DOMINATED]):
            rows += [item(label, clip, x + offset, y, y / 10, style) for clip in ("a", "b")]
    rows += [item("rl", "a", 2.0, 4.0, 0.65, seed=0), item("rl", "a", 2.4, 5.0, 0.65, seed=1),
             item("rl", "b", 2.8, 5.5, 0.65), item("nst", "a", 6.0, 1.0, 0.5), item("nst", "b", 6.0, 1.0, 0.5)]
    rows += [item("rl", "a", 2.5, 5.0, 0.65, "udnie")]
    return rows


def test_report_of_hand_made_items(items, tmp_path):
    means = style_means(items, "starry", ("warping_error_classical", "style_gram"))
    assert means["rl"] == pytest.approx({"warping_error_classical": 2.5, "style_gram": 5.0})  # seeds, then clips
    report = frontier_report(items, REFERENCES)
    assert report["axis"] == "warping_error_classical" and report["targets"] == ["style_gram", "lpips_content"]
    starry = report["styles"]["starry"]
    assert starry["frontiers"]["style_gram"] == [list(p) for p in CHAIN]
    lpips = starry["frontiers"]["lpips_content"]
    assert [x for x, _ in lpips] == [x for x, _ in CHAIN] and [y for _, y in lpips] == pytest.approx([y / 10 for _, y in CHAIN])
    rl, nst = starry["points"]["rl"], starry["points"]["nst"]
    assert rl["reference"] is None and rl["x"] == pytest.approx(2.5)
    assert rl["style_gram"]["delta"] == pytest.approx(-0.5) and rl["style_gram"]["relative"] == pytest.approx(-0.5 / 5.5)
    assert rl["lpips_content"]["delta"] == pytest.approx(0.1) and rl["lpips_content"]["relative"] == pytest.approx(0.1 / 0.55)
    assert nst["style_gram"]["outside"] == ABOVE_RANGE and nst["style_gram"]["delta"] is None
    assert starry["points"]["fb-dominated"]["style_gram"]["delta"] == pytest.approx(1.5)
    assert starry["points"]["baseline"]["reference"] == "0 (baseline)"
    udnie = report["styles"]["udnie"]  # its own frontier: rl at x 2.5 has a lower warping error than all of it
    assert udnie["frontiers"]["style_gram"][0] == [11.0, 10.0]
    assert udnie["points"]["rl"]["style_gram"]["outside"] == BELOW_RANGE and "nst" not in udnie["points"]

    table = frontier_table({"frontier": report})
    rows = {(row[0], row[1]): row for row in table["rows"]}
    assert table["header"][4:7] == ["Gram style loss", "Δ Gram style loss vs frontier", "Δ %"]
    assert rows[("starry", "rl")][2:7] == ["—", "2.5", "5", "-0.5", "-9.1%"]
    assert rows[("starry", "nst")][5].startswith("outside") and rows[("starry", "nst")][6] == "—"
    assert rows[("udnie", "rl")][5] == "outside (warping error below the range)"
    assert rows[("starry", "nst")][5] == "outside (warping error above the range)"  # a lower Gram: not dominated
    assert rows[("starry", "nst")][8] == "outside (warping error above the range), dominated"  # LPIPS 0.5 > the last vertex's 0.45
    assert [row[1] for row in table["rows"]][: len(REFERENCES)] == list(REFERENCES)  # references first
    assert frontier_table({"frontier": None}) is None

    plot_frontier(report, tmp_path / "frontier.png")
    with Image.open(tmp_path / "frontier.png") as image:
        width, height = image.size
    assert width > 2 * 300 and height > 2 * 250  # two panels per style, two styles

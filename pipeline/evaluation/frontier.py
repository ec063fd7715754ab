"""The fixed flow-blend frontier: did learning beat the non-learned references?

The references are the frame-by-frame baseline (blend factor 0) and the fixed flow-blend family
(``pipeline.methods``' ``flow-blend``, ``FACTOR[:WARP]``). Per style, every method is a point: x = its warping
error under the independent judge flow (``FRONTIER_AXIS``, the OpenCV one), y = a loss (``FRONTIER_TARGETS``:
Gram style loss, LPIPS to the content), each the mean over clips. Lower is better on both axes.

The frontier of the references is the lower-left convex hull of their non-dominated points: a piecewise-linear
curve through some of the references, y falling as x grows; a dominated reference is never on it. A method's
distance is its y minus the frontier's y at the method's x (linear interpolation between the frontier's
vertices): negative = below the frontier, a better trade-off than any fixed blend at that warping error. Outside
the frontier's x range there is no frontier value: the distance is NaN and ``outside`` says on which side,
never extrapolated. Pure functions on the comparison's items (``pipeline.evaluation.comparison``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

FRONTIER_AXIS = "warping_error_classical"  # x: the warping error under the flow no method uses
FRONTIER_TARGETS = ("style_gram", "lpips_content")  # y: one frontier panel each
# every warp of the flow-blend family: the detail warp keeps the style at low factors, the bilinear pixel warp
# reaches the lowest warping errors (measured, README), and factor 1.0 of the detail warp is pure propagation
DEFAULT_FRONTIER = (*(f"{factor}:{warp}" for warp in ("latent", "pixel", "detail")
                      for factor in ("0.3", "0.5", "0.7", "0.9")), "1.0:detail")
BELOW_RANGE = "below"  # ``outside``: a lower warping error than every frontier vertex
ABOVE_RANGE = "above"  # a higher one
NO_FRONTIER = "none"  # no reference to draw a frontier from

Point = tuple[float, float]  # (x, y)


def lower_frontier(points: Iterable[Point]) -> list[Point]:
    """The vertices, by increasing x, of the lower-left convex frontier of ``points`` (x, y; lower is better on both).

    Non-finite points are ignored. A point is kept when no other is at least as good on both axes (Pareto), and
    then only where it lies on the lower convex hull of those (a point above the segment joining two others is
    beaten by mixing them). Along the result y strictly decreases and the slopes increase.
    """
    pareto: list[Point] = []
    for x, y in sorted({(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)}):
        if not pareto or y < pareto[-1][1]:  # sorted by x, then y: dominated unless below every point to its left
            pareto.append((x, y))
    hull: list[Point] = []
    for point in pareto:  # Andrew's monotone chain, lower hull
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) <= 0:
            hull.pop()
        hull.append(point)
    return hull


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): > 0 when o -> a -> b turns counter-clockwise."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def frontier_at(frontier: Sequence[Point], x: float) -> float:
    """The frontier's y at ``x`` by linear interpolation between its vertices; NaN outside [first x, last x]."""
    if not frontier or not math.isfinite(x) or not frontier[0][0] <= x <= frontier[-1][0]:
        return math.nan
    for (x0, y0), (x1, y1) in pairwise(frontier):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return frontier[0][1]  # a single vertex, at x


@dataclass(frozen=True)
class FrontierDistance:
    """A point (``x``, ``y``) against a frontier: ``frontier`` = its y at ``x``, ``delta`` = y - frontier
    (< 0: below the frontier, better), ``relative`` = delta / frontier (a fraction). All three NaN when ``outside``
    is ``BELOW_RANGE`` or ``ABOVE_RANGE`` (x beyond the frontier's range) or ``NO_FRONTIER`` (None inside it). ``dominated``: a
    frontier vertex is at least as good on both axes (and is not the point itself), inside the range or not."""

    x: float
    y: float
    frontier: float
    delta: float
    relative: float
    outside: str | None
    dominated: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN as None."""
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {"x": self.x, "y": self.y, "frontier": finite(self.frontier), "delta": finite(self.delta),
                "relative": finite(self.relative), "outside": self.outside, "dominated": self.dominated}


def distance_to_frontier(frontier: Sequence[Point], x: float, y: float) -> FrontierDistance:
    """How far (``x``, ``y``) lies above (> 0) or below (< 0) ``frontier`` (``lower_frontier``'s vertices) at ``x``."""
    value = frontier_at(frontier, x)
    outside = None
    if not frontier:
        outside = NO_FRONTIER
    elif math.isnan(value):
        outside = BELOW_RANGE if x < frontier[0][0] else ABOVE_RANGE
    delta = y - value
    relative = delta / value if value else math.nan
    dominated = any(vx <= x and vy <= y and (vx, vy) != (x, y) for vx, vy in frontier)
    return FrontierDistance(x, y, value, delta, relative, outside, dominated)


def style_means(items: Sequence[Mapping[str, Any]], style: str, keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per method, the mean over clips of each metric of ``keys`` on ``style`` (a method's seeds averaged per clip
    first), over the clips where the method has all ``keys``. ``items``: the comparison's evaluations."""
    per_clip: dict[str, dict[str, list[dict[str, float]]]] = {}
    for item in items:
        if item["style"] == style and all(key in item["metrics"] for key in keys):
            values = {key: item["metrics"][key]["mean"] for key in keys}
            per_clip.setdefault(item["method"], {}).setdefault(item["clip"], []).append(values)
    means = {}
    for method, clips in per_clip.items():
        clip_means = [{key: sum(seed[key] for seed in seeds) / len(seeds) for key in keys} for seeds in clips.values()]
        means[method] = {key: sum(c[key] for c in clip_means) / len(clip_means) for key in keys}
    return means


def frontier_report(items: Sequence[Mapping[str, Any]], references: Mapping[str, str], axis: str = FRONTIER_AXIS,
                    targets: Sequence[str] = FRONTIER_TARGETS) -> dict[str, Any]:
    """The frontier of each style and every method's distance to it, JSON-ready.

    ``references``: the label of each reference method in ``items`` (the baseline, the flow-blends) -> its name
    on the plot (e.g. ``0.5:latent``). Per style (in order of first appearance): ``frontiers`` (per target,
    the vertices [x, y]) and ``points`` (per method: ``reference`` (its name, None for the other methods),
    ``x``, and per target ``FrontierDistance.as_dict``).
    """
    keys = (axis, *targets)
    styles: dict[str, Any] = {}
    for style in dict.fromkeys(item["style"] for item in items):
        means = style_means(items, style, keys)
        frontiers = {t: lower_frontier((means[r][axis], means[r][t]) for r in references if r in means) for t in targets}
        points = {
            method: {"reference": references.get(method), "x": values[axis],
                     **{t: distance_to_frontier(frontiers[t], values[axis], values[t]).as_dict() for t in targets}}
            for method, values in means.items()
        }
        styles[style] = {"frontiers": {t: [list(v) for v in f] for t, f in frontiers.items()}, "points": points}
    return {"axis": axis, "targets": list(targets), "styles": styles}

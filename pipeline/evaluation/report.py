"""The comparison report folder: results.json, results.md, plots, side-by-side videos, index.html.

Layout (all paths in the HTML are relative, so the folder can be moved or served):

    results.json            everything: config, per (clip, style, method, seed) metrics with per-frame values, summary,
                            the frontier (pipeline.evaluation.frontier.frontier_report)
    results.md              first the frontier plot and the distance table, then a table per metric: mean, 95% CI over
                            clips, paired difference to the baseline, seeds
    plots/frontier.png      per style, Gram style loss and LPIPS against the warping error (OpenCV Farneback flow): the fixed
                            flow-blend references' frontier, the references labelled FACTOR:WARP, a marker per method
    plots/metrics.png       bar chart per metric (error bars: 95% CI over clips; dots: each clip; dashed: the content's own value)
    plots/per_frame_<clip>__<style>.png   warping error per frame pair, RAFT and OpenCV flows
    videos/<clip>__<style>.mp4 / .png     side by side, labelled: content | baseline | each method (H.264), and its poster
    index.html              all of the above on one page

Files are written atomically; plots use matplotlib's Agg canvas (no display).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from pipeline.evaluation.frontier import ABOVE_RANGE, BELOW_RANGE, NO_FRONTIER
from pipeline.evaluation.metrics import metric_info
from pipeline.io.files import atomic_output, write_json
from pipeline.io.images import save_image
from pipeline.io.video import write_video

LABEL_STRIP = 20  # px above each panel of the side-by-side video (even: H.264 yuv420p)
REPORT_FILES = ("results.json", "results.md", "index.html")
FRONTIER_PLOT = "plots/frontier.png"
FRONTIER_TITLE = "Did learning help? The fixed flow-blend frontier"
OUTSIDE = {BELOW_RANGE: "outside (warping error below the range)", ABOVE_RANGE: "outside (warping error above the range)",
           NO_FRONTIER: "no frontier (no reference)"}
MARKERS = "os^Dv<>Pp*Xh"


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path, path.suffix) as tmp:
        tmp.write_text(text)


def check_folder(out: str | os.PathLike, overwrite: bool) -> Path:
    """The report folder ``out``, refused (FileExistsError) if it is a file, or not empty unless ``overwrite``."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"report folder {folder} is not empty; pass --overwrite to write into it")
    return folder


def prepare_folder(out: str | os.PathLike, overwrite: bool) -> Path:
    """Create the report folder and its plots/ and videos/ after ``check_folder``."""
    folder = check_folder(out, overwrite)
    for sub in ("", "plots", "videos"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=LABEL_STRIP - 6)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def side_by_side(panels: list[Tensor], labels: list[str]) -> Tensor:
    """Frames (T,3,H,W) of each panel placed left to right under a white strip with its label: (T,3,H+20,sum W)."""
    if not panels or len(panels) != len(labels):
        raise ValueError(f"side_by_side needs one label per panel, got {len(panels)} panels and {len(labels)} labels")
    shape = panels[0].shape
    if any(p.shape[0] != shape[0] or p.shape[-2] != shape[-2] for p in panels):
        raise ValueError(f"panels differ in length or height: {[tuple(p.shape) for p in panels]}")
    widths = [p.shape[-1] for p in panels]
    strip = Image.new("RGB", (sum(widths), LABEL_STRIP), "white")
    draw, font = ImageDraw.Draw(strip), _label_font()
    for index, label in enumerate(labels):
        draw.text((sum(widths[:index]) + 3, 2), label, fill="black", font=font)
    strip_tensor = torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255.0).permute(2, 0, 1)
    body = torch.cat([p.detach().float().cpu().clamp(0, 1) for p in panels], dim=3)
    return torch.cat([strip_tensor.expand(shape[0], -1, -1, -1), body], dim=2)


def write_clip_media(
    folder: Path, clip: str, style: str, content: Tensor, outputs: dict[str, Tensor], fps: float
) -> dict[str, Any]:
    """Write the labelled side-by-side video (content | each output, in order) and its poster frame."""
    labels = ["content", *outputs]
    frames = side_by_side([content, *outputs.values()], labels)
    stem = f"{slug(clip)}__{slug(style)}"
    video, poster = Path("videos") / f"{stem}.mp4", Path("videos") / f"{stem}.png"
    write_video(folder / video, frames, fps, overwrite=True)
    save_image(folder / poster, frames[0])
    return {"clip": clip, "style": style, "video": video.as_posix(), "poster": poster.as_posix(), "labels": labels,
            "width": frames.shape[-1], "height": frames.shape[-2]}


def _save_figure(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    with atomic_output(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def plot_metric_bars(summary: dict[str, Any], items: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """One bar chart per metric: mean over clips per method, 95% CI error bars, the value of each
    clip x style (seeds averaged) as dots, and the content's own value dashed."""
    keys = list(summary)
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    colours = [f"C{i % 10}" for i in range(len(methods))]
    for index, key in enumerate(keys):
        entry = summary[key]
        axes = figure.add_subplot(rows, columns, index + 1)
        names = [m for m in methods if m in entry["methods"]]
        means = [entry["methods"][m]["clips"]["mean"] for m in names]
        errors = np.zeros((2, len(names)))
        for i, m in enumerate(names):
            ci = entry["methods"][m]["clips"]["ci95"]
            if ci is not None:
                errors[:, i] = [means[i] - ci[0], ci[1] - means[i]]
        axes.bar(range(len(names)), means, yerr=errors, capsize=3, color=[colours[methods.index(m)] for m in names])
        for i, method in enumerate(names):
            per_pair: dict[tuple[str, str], list[float]] = {}
            for item in items:
                if item["method"] == method and key in item["metrics"]:
                    per_pair.setdefault((item["clip"], item["style"]), []).append(item["metrics"][key]["mean"])
            values = [float(np.mean(v)) for v in per_pair.values()]
            axes.scatter([i] * len(values), values, s=10, color="black", zorder=3)
        if entry["content_reference"] is not None:
            axes.axhline(entry["content_reference"]["mean"], color="black", linestyle="--", linewidth=1, label="content's own")
            axes.legend(fontsize=7, loc="best")
        axes.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        axes.set_title(f"{entry['label']}\n({entry['better']} is better)", fontsize=9)
        axes.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    _save_figure(figure, path)


def plot_per_frame(items: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Warping error per frame pair of one (clip, style): a panel per flow estimator, a line per method
    (mean over seeds), the content's own dashed."""
    estimators = [k for k in ("warping_error_raft", "warping_error_classical") if any(k in i["metrics"] for i in items)]
    figure = Figure(figsize=(6.5, 2.6 * len(estimators)))
    for row, key in enumerate(estimators):
        axes = figure.add_subplot(len(estimators), 1, row + 1)
        for colour, method in enumerate(methods):
            series = [i["metrics"][key]["per_frame"] for i in items if i["method"] == method]
            if series:
                values = np.mean(np.asarray(series), axis=0)
                axes.plot(range(1, len(values) + 1), values, marker=".", color=f"C{colour % 10}", label=method)
        own = items[0]["reference"][f"content_{key}"]["per_frame"]
        axes.plot(range(1, len(own) + 1), own, color="black", linestyle="--", label="content's own")
        axes.set_title(metric_info(key).label, fontsize=9)
        axes.set_xlabel("frame t (pair t-1, t)", fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=7, ncol=4, loc="best")
    figure.tight_layout()
    _save_figure(figure, path)


def plot_frontier(frontier: dict[str, Any], path: Path) -> None:
    """Per style a row of panels, one per target (Gram style loss, LPIPS) against the warping error axis: the
    references' frontier (black line), the references (grey dots labelled FACTOR:WARP), each other method a
    coloured marker. ``frontier``: ``pipeline.evaluation.frontier.frontier_report``'s result."""
    styles, targets = frontier["styles"], frontier["targets"]
    figure = Figure(figsize=(5.4 * len(targets), 3.9 * len(styles)))
    for row, (style, entry) in enumerate(styles.items()):
        references = [p for p in entry["points"].values() if p["reference"] is not None]
        methods = [(m, p) for m, p in entry["points"].items() if p["reference"] is None]
        for column, target in enumerate(targets):
            axes = figure.add_subplot(len(styles), len(targets), row * len(targets) + column + 1)
            vertices = entry["frontiers"][target]
            if vertices:
                axes.plot(*zip(*vertices), color="black", linewidth=1.2, marker="o", markersize=8, markerfacecolor="none",
                          label="frontier of the fixed references", zorder=1)
            axes.scatter([p["x"] for p in references], [p[target]["y"] for p in references], color="grey", s=16, zorder=2,
                         label="fixed references (FACTOR:WARP)")
            for point in references:
                axes.annotate(point["reference"], (point["x"], point[target]["y"]), textcoords="offset points",
                              xytext=(3, 3), fontsize=6, color="dimgrey")
            for index, (method, point) in enumerate(methods):
                axes.scatter(point["x"], point[target]["y"], marker=MARKERS[index % len(MARKERS)], s=42,
                             color=f"C{index % 10}", label=method, zorder=3)
            axes.set_xlabel(f"{metric_info(frontier['axis']).label} (lower is better)", fontsize=8)
            axes.set_ylabel(metric_info(target).label, fontsize=8)
            axes.set_title(f"{style}: {metric_info(target).label} vs warping error", fontsize=9)
            axes.tick_params(labelsize=7)
            axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    _save_figure(figure, path)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _distance(distance: dict[str, Any]) -> list[str]:
    """The cells (Δ, Δ %) of a ``FrontierDistance.as_dict``."""
    if distance["outside"] is not None:
        return [OUTSIDE[distance["outside"]] + (", dominated" if distance["dominated"] else ""), "—"]
    relative = distance["relative"]
    return [f"{distance['delta']:+.4g}", "—" if relative is None else f"{100 * relative:+.1f}%"]


def frontier_table(results: dict[str, Any]) -> dict[str, Any] | None:
    """Per style and method: its warping error and, per target, its value and distance to the references'
    frontier (absolute and relative); None without a frontier."""
    frontier = results.get("frontier")
    if not frontier:
        return None
    targets = frontier["targets"]
    rows = []
    for style, entry in frontier["styles"].items():
        points = sorted(entry["points"].items(), key=lambda item: item[1]["reference"] is None)  # references first
        for method, point in points:
            cells = [style, method, point["reference"] or "—", _fmt(point["x"])]
            for target in targets:
                cells += [_fmt(point[target]["y"]), *_distance(point[target])]
            rows.append(cells)
    header = ["style", "method", "reference", metric_info(frontier["axis"]).label]
    for target in targets:
        label = metric_info(target).label
        header += [label, f"Δ {label} vs frontier", "Δ %"]
    note = ("Means over clips, per style. The frontier is the lower-left convex frontier of the fixed references "
            "(the baseline = factor 0 and the flow-blends, labelled FACTOR:WARP) in (warping error, loss), both lower "
            "is better. Δ = the method's loss minus the frontier's at the method's warping error (linear "
            "interpolation; % of the frontier's value): negative = below the frontier, a better trade-off than any "
            "fixed blend; 0 = a reference on the frontier. Outside the frontier's warping-error range there is no "
            "frontier value (never extrapolated); dominated = a frontier reference is at least as good on both axes.")
    return {"key": "frontier", "title": "Distance to the frontier", "note": note, "header": header, "rows": rows}


def _ci(stat: dict[str, Any] | None) -> str:
    if stat is None or stat["ci95"] is None:
        return "—"
    return f"[{_fmt(stat['ci95'][0])}, {_fmt(stat['ci95'][1])}]"


def metric_tables(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One table per metric (title, note, header, rows of strings), rendered by both results.md and index.html."""
    methods = [m["name"] for m in results["methods"]]
    tables = []
    for key, entry in results["summary"].items():
        rows = []
        for method in methods:
            row = entry["methods"].get(method)
            if row is None:
                continue
            delta = row.get("delta_vs_baseline")
            seeds = row.get("seeds")
            rows.append([
                method,
                _fmt(row["clips"]["mean"]),
                _ci(row["clips"]),
                "—" if delta is None else f"{_fmt(delta['mean'])} {_ci(delta)}",
                str(row["n_seeds"]) if seeds is None else f"{row['n_seeds']}: {_fmt(seeds['mean'])} {_ci(seeds)}",
                str(row["clips"]["n"]),
            ])
        reference = entry["content_reference"]
        note = f"{entry['better']} is better" + ("" if reference is None else f"; the content's own: {_fmt(reference['mean'])}")
        tables.append({
            "key": key,
            "title": entry["label"],
            "note": note,
            "header": ["method", "mean", "95% CI (clips)", "Δ vs baseline [95% CI]", "seeds: mean [95% CI]", "n clips"],
            "rows": rows,
        })
    return tables


def per_clip_table(results: dict[str, Any]) -> dict[str, Any]:
    """Mean of each metric per (clip, style, method), seeds averaged."""
    keys = list(results["summary"])
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in results["items"]:
        groups.setdefault((item["clip"], item["style"], item["method"]), []).append(item)
    rows = []
    for (clip, style, method), group in groups.items():
        cells = [_fmt(float(np.mean([i["metrics"][k]["mean"] for i in group]))) if k in group[0]["metrics"] else "—" for k in keys]
        rows.append([clip, style, method, *cells])
    header = ["clip", "style", "method", *(metric_info(k).label for k in keys)]
    return {"title": "Per clip", "note": "means over frames (and over seeds)", "header": header, "rows": rows}


def _notes(results: dict[str, Any]) -> list[str]:
    config = results["config"]
    clip = results["clip_status"]
    clip_note = (f"CLIP: {clip['model']} / {clip['pretrained']}" if clip["status"] == "computed"
                 else f"CLIP skipped: {clip['reason']}")
    clips = ", ".join(f"{name} ({c['frames']} frames, {c['width']}x{c['height']})" for name, c in results["clips"].items())
    limit = "all frames" if config["max_frames"] is None else f"at most {config['max_frames']} frames"
    notes = [
        f"Device: {results['device']}. Clips: {clips}; {limit}; styles: {', '.join(results['styles'])}; "
        f"codec {config['codec']}, stylizer {config['stylizer']}.",
        "Mean over clips (each clip x style pair counts once; a method's seeds are averaged first). "
        "95% CI: Student t over the clips. Δ vs baseline: mean paired difference to the frame-by-frame baseline "
        "with its 95% CI (an interval that excludes 0 is a difference the clips support). "
        "Seeds: number of training seeds, and for several the mean and 95% CI over seeds.",
        f"Flow estimators: {results['flow_estimators']['raft']}; {results['flow_estimators']['classical']}. {clip_note}.",
    ]
    for skip in results["skipped"]:
        notes.append(f"Not run: {skip['method']} ({skip['source']}) on {skip['clip']} / {skip['style']}: {skip['reason']}.")
    long_term = results.get("long_term") or {"gaps": [], "skipped": {}}
    if long_term["gaps"]:
        notes.append("Long-term warping error between frames K apart, K = " + ", ".join(map(str, long_term["gaps"]))
                     + ": the flow estimated directly between frames t-K and t, occlusion-masked, Lai et al.'s error.")
    for clip, gaps in long_term["skipped"].items():
        notes += [f"Not computed on {clip}: long-term warping error k={g['gap']} ({g['reason']})." for g in gaps]
    sweep = [m["name"] for m in results["methods"] if m.get("sweep")]
    if sweep:
        notes.append(f"Frontier sweep: {len(sweep)} fixed flow-blend references only in the frontier plot and the tables "
                     "(not in the videos, bar charts and per-frame plots).")
    return notes


def _shown_methods(results: dict[str, Any]) -> list[str]:
    """The methods of the videos, bar charts and per-frame plots: all but the frontier sweep's own references."""
    return [m["name"] for m in results["methods"] if not m.get("sweep")]


def markdown_report(results: dict[str, Any]) -> str:
    """results.md: the frontier plot and its distance table first, then notes, a table per metric, the per-clip table."""
    def table(t: dict[str, Any], level: str = "##") -> list[str]:
        lines = [f"{level} {t['title']}", "", f"_{t['note']}_", "", "| " + " | ".join(t["header"]) + " |",
                 "|" + "|".join("---" for _ in t["header"]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
        return [*lines, ""]

    methods = ", ".join(m["name"] for m in results["methods"])
    lines = [f"# Comparison: {methods}", ""]
    frontier = frontier_table(results)
    if frontier is not None:
        lines += [f"## {FRONTIER_TITLE}", "", f"![frontier]({FRONTIER_PLOT})", "", *table(frontier, "###")]
    lines += [f"{n}\n" for n in _notes(results)]
    for t in metric_tables(results):
        lines += table(t)
    lines += table(per_clip_table(results))
    return "\n".join(lines)


def _html_table(t: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t["header"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t["rows"])
    return (f"<h3>{html.escape(t['title'])}</h3><p class=note>{html.escape(t['note'])}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def html_report(results: dict[str, Any]) -> str:
    """index.html: the frontier plot and table, notes, the bar plots, the tables, and per clip its side-by-side
    video and per-frame plot."""
    methods = ", ".join(m["name"] for m in results["methods"])
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Comparison: {html.escape(methods)}</title>",
        "<style>body{font-family:sans-serif;margin:16px;max-width:1400px}table{border-collapse:collapse;margin-bottom:8px}"
        "td,th{border:1px solid #bbb;padding:2px 8px;font-size:13px}th{background:#eee}.note{color:#555;font-size:13px}"
        "img,video{max-width:100%;display:block;margin:6px 0}</style></head><body>",
        f"<h1>Comparison: {html.escape(methods)}</h1>",
    ]
    frontier = frontier_table(results)
    if frontier is not None:
        parts += [f"<h2>{html.escape(FRONTIER_TITLE)}</h2>",
                  f"<img src='{FRONTIER_PLOT}' alt='frontier of the fixed flow-blend references'>", _html_table(frontier)]
    parts += [
        *(f"<p class=note>{html.escape(n)}</p>" for n in _notes(results)),
        "<h2>Metrics</h2><img src='plots/metrics.png' alt='bar plots of every metric'>",
        *(_html_table(t) for t in metric_tables(results)),
        "<h2>Clips</h2>",
    ]
    for media in results["media"]:
        title = f"{media['clip']} / {media['style']}"
        parts.append(
            f"<h3>{html.escape(title)}</h3><p class=note>{html.escape(' | '.join(media['labels']))}</p>"
            f"<video src='{html.escape(media['video'])}' poster='{html.escape(media['poster'])}' width={media['width']} "
            "controls loop muted autoplay playsinline></video>"
            f"<img src='{html.escape(media['per_frame_plot'])}' alt='per-frame warping error of {html.escape(title)}'>"
        )
    parts += [_html_table(per_clip_table(results)),
              "<p><a href='results.md'>results.md</a> · <a href='results.json'>results.json</a></p></body></html>"]
    return "\n".join(parts)


def write_report(folder: Path, results: dict[str, Any]) -> None:
    """Write the plots, results.json, results.md and index.html of ``results`` into ``folder``."""
    methods = _shown_methods(results)
    if results.get("frontier"):
        plot_frontier(results["frontier"], folder / FRONTIER_PLOT)
    plot_metric_bars(results["summary"], results["items"], methods, folder / "plots" / "metrics.png")
    for media in results["media"]:
        items = [i for i in results["items"] if i["clip"] == media["clip"] and i["style"] == media["style"]]
        plot = Path("plots") / f"per_frame_{slug(media['clip'])}__{slug(media['style'])}.png"
        plot_per_frame(items, methods, folder / plot)
        media["per_frame_plot"] = plot.as_posix()
    write_json(folder / "results.json", results, overwrite=True)
    _write_text(folder / "results.md", markdown_report(results))
    _write_text(folder / "index.html", html_report(results))

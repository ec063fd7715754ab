"""scripts/compare.py and pipeline.evaluation.comparison / pipeline.evaluation.report on a tiny real configuration:
two test clips, 3 frames at 80 px, baseline + flow-blend + a one-reference frontier sweep + a policy saved with two
seeds + an RL-NST video model + an RLMiniStyler model (any style), the long-term warping error 2 frames apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from baselines.rlministyler.models import RLMiniStyler
from baselines.rlnst.models import RLNST, RLNSTConfig
from pipeline.evaluation.comparison import (
    build_methods,
    frontier_references,
    parse_named_sources,
)
from pipeline.evaluation.frontier import DEFAULT_FRONTIER
from pipeline.evaluation.report import LABEL_STRIP
from pipeline.io.images import resize_to_width
from pipeline.io.video import read_video, video_info
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers import build_stylizer
from pipeline.methods import Components, load_method
from policies.base import make_algorithm
from rewards.classical_flow import ClassicalFlow
from rewards.flow import MemoFlow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH, FRAMES = 80, 3
METHODS = ("content", "baseline", "flow-blend-latent-0.5", "rl", "nst", "mini")  # the panels of the videos
SWEEP = "flow-blend-pixel-0.9"  # the frontier sweep's own reference: scored, not in the videos


@pytest.fixture(scope="module")
def policy_runs(tmp_path_factory) -> list[Path]:
    """Two untrained REINFORCE flow policies (two 'seeds'), gate opened so they differ from the baseline."""
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(f"run{seed}")
        make_algorithm("reinforce", "flow", 32, init_gate=0.1).policy.save_pretrained(folder / "model")
        runs.append(folder)
    return runs


def save_rlnst(path: Path, style: str) -> Path:
    """An untrained RL-NST video model folder as baselines.rlnst.train saves it (2 steps per frame)."""
    torch.manual_seed(0)
    model = RLNST(RLNSTConfig(video=True, channels=(8, 8, 8)))
    return model.save_pretrained(path, training=dict(mode="video", style=style, size=WIDTH, episode_steps=2, updates=0))


def save_rlministyler(path: Path, style: str) -> Path:
    """An untrained RLMiniStyler model folder as baselines.rlministyler.train saves it (2 steps per frame)."""
    torch.manual_seed(0)
    return RLMiniStyler().save_pretrained(path, training=dict(styles=[style], held_out_styles=[], size=WIDTH,
                                                              episode_steps=2, updates=0))


@pytest.fixture(scope="module")
def report(tmp_path_factory, data_dir, policy_runs) -> tuple[Path, dict, Path]:
    from scripts.compare import main

    root = tmp_path_factory.mktemp("compare")
    clips = [data_dir / "videos" / "test" / "wolf.mp4", data_dir / "videos" / "test" / "sintel_alley"]
    args = ["--out", str(root / "report"), "--clips", *map(str, clips), "--width", str(WIDTH), "--max-frames", str(FRAMES),
            "--policy", f"rl={policy_runs[0]},{policy_runs[1]}", "--cache-dir", str(root / "cache"), "--quiet",
            "--rlnst", f"nst={save_rlnst(root / 'rlnst', str(data_dir / 'styles' / 'starry_night.jpg'))}",
            "--rlministyler", f"mini={save_rlministyler(root / 'mini', str(data_dir / 'styles' / 'udnie.jpg'))}",
            "--frontier", "0.5", "0.9:pixel", "--long-term", "2", "5"]
    return root / "report", main(args), root / "cache"


def test_report_folder_holds_every_file(report):
    folder, results, cache = report
    expected = ["results.json", "results.md", "index.html", "plots/metrics.png", "plots/frontier.png",
                "plots/per_frame_wolf__starry_night.png", "plots/per_frame_sintel_alley__starry_night.png",
                "videos/wolf__starry_night.mp4", "videos/wolf__starry_night.png",
                "videos/sintel_alley__starry_night.mp4", "videos/sintel_alley__starry_night.png"]
    for name in expected:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert not list(folder.rglob("*.tmp*")), "temporary files left behind"
    assert json.loads((folder / "results.json").read_text()) == json.loads(json.dumps(results))
    assert len(list(cache.glob("*.safetensors"))) == 2  # baseline latents of each (clip, style), shared by the methods


def test_results_have_seed_and_clip_statistics(report):
    _, results, _ = report
    assert len(results["items"]) == 2 * (1 + 2 + 2 + 1 + 1)  # clips x (baseline, 2 flow-blends, 2 policy seeds, RL-NST, mini)
    assert results["clip_status"]["status"] == "skipped" and results["clip_status"]["reason"]
    summary = results["summary"]["warping_error_raft"]["methods"]
    assert set(summary) == {*METHODS[1:], SWEEP}
    assert results["methods"][-2]["runs"][0]["trained_style"] == "starry_night"
    # RLMiniStyler runs on starry_night although it was "trained" on udnie only
    assert results["methods"][-1]["runs"][0]["trained_styles"] == ["udnie"]
    assert summary["rl"]["n_seeds"] == 2 and summary["rl"]["seeds"]["n"] == 2
    assert summary["rl"]["clips"]["n"] == 2 and len(summary["rl"]["clips"]["ci95"]) == 2
    assert "delta_vs_baseline" not in summary["baseline"] and "seeds" not in summary["baseline"]
    # the flow-blend reference pulls each latent toward the warped previous output: less flicker on both clips
    for estimator in ("warping_error_raft", "warping_error_classical"):
        per_clip = {i["clip"]: i["metrics"][estimator]["mean"] for i in results["items"] if i["method"] == METHODS[2]}
        baseline = {i["clip"]: i["metrics"][estimator]["mean"] for i in results["items"] if i["method"] == "baseline"}
        assert all(per_clip[c] < baseline[c] for c in baseline), estimator
    # the combined reward is relative to the baseline's terms on each clip: the baseline scores -(10 + 1 + 10)
    rewards = {(i["clip"], i["method"]): i["metrics"]["reward"]["mean"] for i in results["items"] if i["seed_index"] == 0}
    assert all(rewards[(c, "baseline")] == pytest.approx(-21.0) for c, _ in rewards)
    assert all(value != pytest.approx(-21.0) for (c, m), value in rewards.items() if m != "baseline")
    own = results["summary"]["warping_error_raft"]["content_reference"]["mean"]
    assert 0 < own < results["summary"]["warping_error_raft"]["methods"]["baseline"]["clips"]["mean"]
    # the long-term warping error 2 frames apart, with the content's own; 5 apart skipped on the 3-frame clips
    long_term = results["summary"]["warping_error_k2_classical"]
    assert long_term["content_reference"]["n"] == 2 and set(long_term["methods"]) == {*METHODS[1:], SWEEP}
    assert "warping_error_k5_classical" not in results["summary"]
    assert results["long_term"]["gaps"] == [2, 5] and set(results["long_term"]["skipped"]) == {"wolf", "sintel_alley"}


def test_frontier_places_every_method(report):
    _, results, _ = report
    frontier = results["frontier"]["styles"]["starry_night"]
    references = {m: p["reference"] for m, p in frontier["points"].items() if p["reference"] is not None}
    assert references == {"baseline": "0 (baseline)", METHODS[2]: "0.5:latent", SWEEP: "0.9:pixel"}
    vertices = frontier["frontiers"]["style_gram"]
    assert vertices and all(a[0] < b[0] and a[1] > b[1] for a, b in zip(vertices, vertices[1:]))
    for method in ("rl", "nst", "mini"):
        for target in ("style_gram", "lpips_content"):
            distance = frontier["points"][method][target]
            if distance["outside"] is None:  # inside the references' range: its loss minus the frontier's there
                assert distance["delta"] == pytest.approx(distance["y"] - distance["frontier"])
                assert distance["relative"] == pytest.approx(distance["delta"] / distance["frontier"])
            else:
                assert distance["delta"] is None and distance["outside"] in ("below", "above")


def test_markdown_has_a_table_per_metric(report):
    folder, results, _ = report
    text = (folder / "results.md").read_text()
    # the frontier first: its plot and the distance table, before the notes and the metric tables
    first = text.index("## Did learning help?")
    assert first < text.index("![frontier](plots/frontier.png)") < text.index("Device:") < text.index("## Warping error")
    assert "| style | method | reference | Warping error, OpenCV flow | Gram style loss | Δ Gram style loss vs frontier | Δ % |" in text
    assert re.search(r"\| starry_night \| rl \| — \| [0-9.e-]+ \| [0-9.e-]+ \| ([-+][0-9.e-]+ \| [-+][0-9.]+%|outside .+ \| —) \|", text)
    assert "## Warping error 2 frames apart, OpenCV flow" in text
    assert "Not computed on wolf: long-term warping error k=5 (the clip has 3 frames" in text
    for entry in results["summary"].values():
        assert f"## {entry['label']}" in text
    assert text.count("| method | mean | 95% CI (clips) |") == len(results["summary"])
    assert re.search(r"\| rl \| [-0-9.e]+ \| \[.+\] \| [-0-9.e]+ \[.+\] \| 2: ", text)
    assert "CLIP skipped:" in text


def test_side_by_side_video_is_labelled_and_shows_the_content(report, data_dir):
    folder, _, _ = report
    info = video_info(folder / "videos" / "wolf__starry_night.mp4")
    assert (info.num_frames, info.width, info.height) == (FRAMES, len(METHODS) * WIDTH, WIDTH + LABEL_STRIP)
    frames, _ = read_video(folder / "videos" / "wolf__starry_night.mp4")
    content = resize_to_width(read_video(data_dir / "videos" / "test" / "wolf.mp4", max_frames=FRAMES)[0], WIDTH)
    assert (frames[:, :, LABEL_STRIP:, :WIDTH] - content).abs().mean() < 0.03  # first panel = the content (H.264 loss)
    strip = frames[:, :, 2 : LABEL_STRIP - 2]
    assert strip.mean() > 0.8 and strip.min() < 0.3  # white label strip with dark text


def test_html_uses_relative_paths_to_existing_files(report):
    folder, _, _ = report
    text = (folder / "index.html").read_text()
    links = re.findall(r"(?:src|href|poster)='([^']+)'", text)
    assert len(links) == 2 + 2 * 3 + 2  # frontier and bar plots; per clip: video, poster, per-frame plot; results.md/.json
    assert text.index("plots/frontier.png") < text.index("plots/metrics.png")
    for link in links:
        assert not link.startswith(("/", "file:", "http")), link
        assert (folder / link).is_file(), link
    assert text.count("<video") == 2 and text.count("<table>") >= 7


def test_existing_report_is_refused_without_overwrite(report, data_dir):
    from scripts.compare import main

    folder, _, _ = report
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["--out", str(folder), "--clips", str(data_dir / "videos" / "test" / "wolf.mp4"), "--quiet"])


@pytest.mark.fast
def test_method_arguments_are_checked(tmp_path):
    assert parse_named_sources("rl=a,b", "--policy") == ("rl", ("a", "b"))
    for bad in ("rl", "=a", "rl=", "rl=,"):
        with pytest.raises(ValueError, match="NAME=PATH"):
            parse_named_sources(bad, "--policy")
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="reserved"):
        build_methods({"policy": [f"baseline={tmp_path / 'run'}"]})
    with pytest.raises(ValueError, match="given twice"):
        build_methods({"policy": [f"a={tmp_path / 'run'}", f"a={tmp_path / 'run'}"]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_methods({"policy": [f"a={tmp_path / 'missing'}"]})
    with pytest.raises(ValueError, match="not a registered method"):
        build_methods({"teleport": [f"a={tmp_path / 'run'}"]})
    blends = build_methods(flow_blends=["0.5", "0.7:pixel"])
    assert [(m.label, m.method, m.sources) for m in blends] == [
        ("baseline", "baseline", (None,)), ("flow-blend-latent-0.5", "flow-blend", ("0.5",)),
        ("flow-blend-pixel-0.7", "flow-blend", ("0.7:pixel",))]
    # the frontier sweep adds the flow-blends not asked for already (0.5:latent is 0.5), marked as the sweep's own
    swept = build_methods(flow_blends=["0.5"], frontier=DEFAULT_FRONTIER)
    assert [(m.label, m.sweep) for m in swept][:3] == [("baseline", False), ("flow-blend-latent-0.5", False),
                                                      ("flow-blend-latent-0.3", True)]
    assert len(swept) == 1 + 13 and sum(m.sweep for m in swept) == 12
    assert frontier_references(swept)["flow-blend-pixel-0.9"] == "0.9:pixel"
    assert frontier_references(swept)["flow-blend-detail-1"] == "1:detail"
    assert frontier_references(swept)["baseline"] == "0 (baseline)"
    assert [m.label for m in build_methods(flow_blends=[], frontier=["0.7"])] == ["baseline", "flow-blend"]
    for bad in ("1.5", "0.5:optical", "half"):
        with pytest.raises(ValueError, match="FACTOR\\[:WARP\\]"):
            build_methods(flow_blends=[bad])


def test_rlnst_runs_only_on_its_style(tmp_path, data_dir):
    codec = load_codec("taef2")
    components = Components(build_stylizer("latent-wct", codec=codec), None, torch.device("cpu"))
    method = load_method("rlnst", components, str(save_rlnst(tmp_path / "rlnst", "styles/udnie.jpg")))
    frames = resize_to_width(read_video(data_dir / "videos" / "test" / "wolf.mp4", max_frames=2)[0], 40)
    assert method.info == {"kind": "rlnst-video", "trained_style": "udnie", "steps": 2}
    assert not method.applies_to("starry_night") and method.applies_to("udnie")
    assert method.stylize_clip(frames, torch.rand(1, 3, 32, 32)).shape == frames.shape


def test_memo_flow_runs_each_pair_once(data_dir):
    frames = resize_to_width(read_video(data_dir / "videos" / "test" / "sintel_alley", max_frames=3)[0], 64)

    class Counting(ClassicalFlow):
        calls = 0

        def forward(self, img1, img2):
            Counting.calls += img1.shape[0]
            return super().forward(img1, img2)

    memo = MemoFlow(Counting())
    first = memo(frames[:2], frames[1:])
    again = memo(frames[1:2], frames[2:])  # a pair already seen, in another batch
    assert Counting.calls == 2 and torch.equal(again[0], first[1])
    memo.clear()
    memo(frames[:1], frames[1:2])
    assert Counting.calls == 3


def test_a_failing_comparison_leaves_no_report_folder(tmp_path):
    from scripts.compare import main

    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        main(["--out", str(tmp_path / "report"), "--clips", str(tmp_path / "missing.mp4"), "--quiet"])
    assert not (tmp_path / "report").exists()

"""scripts/compare.py and pipeline.evaluation.comparison / pipeline.evaluation.report on a tiny real configuration:
two test clips, 3 frames at 80 px, baseline + flow-blend + a policy saved with two seeds + an RL-NST video model
+ an RLMiniStyler model (any style)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from baselines.rlministyler.models import RLMiniStyler
from baselines.rlnst.models import RLNST, RLNSTConfig
from pipeline.evaluation.comparison import build_methods, parse_named_sources
from pipeline.io.images import resize_to_width
from pipeline.evaluation.report import LABEL_STRIP
from pipeline.io.video import read_video, video_info
from policies.base import make_algorithm
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers import build_stylizer
from pipeline.methods import Components, load_method
from rewards.classical_flow import ClassicalFlow
from rewards.flow import MemoFlow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH, FRAMES = 80, 3
METHODS = ("content", "baseline", "flow-blend", "rl", "nst", "mini")


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
            "--rlministyler", f"mini={save_rlministyler(root / 'mini', str(data_dir / 'styles' / 'udnie.jpg'))}"]
    return root / "report", main(args), root / "cache"


def test_report_folder_holds_every_file(report):
    folder, results, cache = report
    expected = ["results.json", "results.md", "index.html", "plots/metrics.png",
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
    assert len(results["items"]) == 2 * (1 + 1 + 2 + 1 + 1)  # clips x (baseline, flow-blend, 2 policy seeds, RL-NST, mini)
    assert results["clip_status"]["status"] == "skipped" and results["clip_status"]["reason"]
    summary = results["summary"]["warping_error_raft"]["methods"]
    assert set(summary) == set(METHODS[1:])
    assert results["methods"][-2]["runs"][0]["trained_style"] == "starry_night"
    # RLMiniStyler runs on starry_night although it was "trained" on udnie only
    assert results["methods"][-1]["runs"][0]["trained_styles"] == ["udnie"]
    assert summary["rl"]["n_seeds"] == 2 and summary["rl"]["seeds"]["n"] == 2
    assert summary["rl"]["clips"]["n"] == 2 and len(summary["rl"]["clips"]["ci95"]) == 2
    assert "delta_vs_baseline" not in summary["baseline"] and "seeds" not in summary["baseline"]
    # the flow-blend reference pulls each latent toward the warped previous output: less flicker on both clips
    for estimator in ("warping_error_raft", "warping_error_classical"):
        per_clip = {i["clip"]: i["metrics"][estimator]["mean"] for i in results["items"] if i["method"] == "flow-blend"}
        baseline = {i["clip"]: i["metrics"][estimator]["mean"] for i in results["items"] if i["method"] == "baseline"}
        assert all(per_clip[c] < baseline[c] for c in baseline), estimator
    # the combined reward is relative to the baseline's terms on each clip: the baseline scores -(10 + 1 + 10)
    rewards = {(i["clip"], i["method"]): i["metrics"]["reward"]["mean"] for i in results["items"] if i["seed_index"] == 0}
    assert all(rewards[(c, "baseline")] == pytest.approx(-21.0) for c, _ in rewards)
    assert all(value != pytest.approx(-21.0) for (c, m), value in rewards.items() if m != "baseline")
    own = results["summary"]["warping_error_raft"]["content_reference"]["mean"]
    assert 0 < own < results["summary"]["warping_error_raft"]["methods"]["baseline"]["clips"]["mean"]


def test_markdown_has_a_table_per_metric(report):
    folder, results, _ = report
    text = (folder / "results.md").read_text()
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
    assert len(links) == 1 + 2 * 3 + 2  # bar plots; per clip: video, poster, per-frame plot; results.md/.json
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

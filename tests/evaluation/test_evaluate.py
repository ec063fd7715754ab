"""Evaluation metrics (pipeline.evaluation.metrics, scripts/evaluate.py) and their scoring functions
(rewards.classical_flow, rewards.ssim, rewards.clip_score) on real frames and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluation.metrics import (
    JUDGE_FLOW,
    Evaluator,
    evaluate_video,
    load_inputs,
    long_term_gaps,
    metric_infos,
    reference_key,
    summary_rows,
)
from pipeline.evaluation.stats import mean_ci, t_quantile_975
from pipeline.io.images import load_image, resize_to_width, save_image
from pipeline.io.video import VideoReadError, read_video, write_video
from rewards.classical_flow import ClassicalFlow
from rewards.clip_score import CLIPScorer, CLIPUnavailable, load_clip
from rewards.ssim import ssim
from rewards.temporal import warping_error
from rewards.warp import backward_warp

REPO = Path(__file__).resolve().parents[2]
# a tiny open_clip CLIP: same classes and API as ViT-B-32, randomly initialised, no download
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread for this module: on 2 cores shared with other jobs, RAFT with 2 OpenMP
    threads stalls (measured 3-30x slower than with 1); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wolf(data_dir) -> torch.Tensor:
    """4 real frames (4,3,64,64) of the wolf test clip."""
    frames, _ = read_video(data_dir / "videos" / "test" / "wolf.mp4", max_frames=4)
    return resize_to_width(frames, 64)


@pytest.fixture(scope="module")
def style(data_dir) -> torch.Tensor:
    return load_image(data_dir / "styles" / "starry_night.jpg")


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    """One set of scoring models; the content flows of the wolf frames are computed once and shared."""
    return Evaluator(cache_flows=True)


@pytest.fixture(scope="module")
def self_result(evaluator, wolf, style) -> dict:
    return evaluator.evaluate(wolf, wolf, style)


def shift(frames: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``frames`` translated by (dx, dy) px (right, down), borders replicated: out(p) = in(p - d)."""
    padded = F.pad(frames, (dx, 0, dy, 0), mode="replicate")
    return padded[..., : frames.shape[-2], : frames.shape[-1]]


def flicker(frames: torch.Tensor, seed: int = 0, amplitude: float = 0.2) -> torch.Tensor:
    """Random per-frame brightness jitter: each frame times a gain in [1 - amplitude, 1 + amplitude]."""
    gains = 1 + amplitude * (2 * torch.rand(frames.shape[0], 1, 1, 1, generator=torch.Generator().manual_seed(seed)) - 1)
    return (frames * gains).clamp(0, 1)


def warping(result: dict, estimator: str) -> tuple[float, float]:
    """(stylized, content's own) mean warping error under ``estimator`` (raft or classical)."""
    return (result["metrics"][f"warping_error_{estimator}"]["mean"],
            result["reference"][f"content_warping_error_{estimator}"]["mean"])


def test_content_against_itself_scores_as_the_content(self_result):
    for estimator in ("raft", "classical"):
        stylized, own = warping(self_result, estimator)
        assert stylized == own > 0  # flows are imperfect: the content's own error is small but not 0
    assert self_result["metrics"]["temporal_l1"] == self_result["reference"]["content_temporal_l1"]
    assert self_result["metrics"]["lpips_content"]["per_frame"] == [0.0] * 4
    assert self_result["metrics"]["ssim_content"]["per_frame"] == pytest.approx([1.0] * 4, abs=1e-5)
    assert len(self_result["metrics"]["warping_error_raft"]["per_frame"]) == 3  # one per consecutive pair
    assert self_result["clip"] == {"status": "skipped", "reason": "no CLIP model was requested"}
    assert not any(key.startswith("clip_") for key in self_result["metrics"])
    assert self_result["flow_estimators"]["classical"] == "opencv-farneback"  # JUDGE_FLOW


def test_flicker_raises_warping_error_and_a_shift_does_not(evaluator, wolf, style, self_result):
    flickering = evaluator.evaluate(wolf, flicker(wolf), style)
    shifted = evaluator.evaluate(wolf, shift(wolf, 3, 2), style)
    for estimator in ("raft", "classical"):
        flicker_error, own = warping(flickering, estimator)
        shifted_error, _ = warping(shifted, estimator)
        assert flicker_error > 3 * own, estimator
        # a constant few-pixel offset (camera motion) stays temporally consistent: close to the content's own
        assert shifted_error < 1.6 * own, estimator
        assert shifted_error < flicker_error / 2, estimator
    assert flickering["metrics"]["temporal_l1"]["mean"] > 2 * self_result["metrics"]["temporal_l1"]["mean"]
    # the shifted copy does differ from the content frame by frame: only the temporal metrics ignore it
    assert shifted["metrics"]["lpips_content"]["mean"] > 0.03


def drifting(frames: torch.Tensor, step: float = 0.01) -> torch.Tensor:
    """A slowly drifting copy: a colour offset growing by ``step`` per frame (+R, +G/2, -B)."""
    tint = torch.tensor([1.0, 0.5, -1.0]).view(1, 3, 1, 1)
    return (frames + step * torch.arange(frames.shape[0], dtype=frames.dtype).view(-1, 1, 1, 1) * tint).clamp(0, 1)


@pytest.fixture(scope="module")
def wolf_long(data_dir) -> torch.Tensor:
    """12 real frames (12,3,64,64) of the wolf test clip: pairs 5 and 10 frames apart."""
    frames, _ = read_video(data_dir / "videos" / "test" / "wolf.mp4", max_frames=12)
    return resize_to_width(frames, 64)


def test_long_term_warping_error_is_the_contents_own_for_the_content_and_rises_with_a_drift(wolf_long, style):
    evaluator = Evaluator(cache_flows=True)  # RAFT and OpenCV judges, gaps 5 and 10 by default
    own = evaluator.evaluate(wolf_long, wolf_long, style)
    drift = evaluator.evaluate(wolf_long, drifting(wolf_long), style)
    assert own["long_term"] == {"gaps": [5, 10], "skipped": []}
    for estimator in ("raft", "classical"):
        keys = {1: f"warping_error_{estimator}"}
        for gap in (5, 10):
            keys[gap] = key = f"warping_error_k{gap}_{estimator}"
            assert reference_key(key) == f"content_{key}"
            assert own["metrics"][key] == own["reference"][f"content_{key}"]  # the content itself: exactly the reference
            assert len(own["metrics"][key]["per_frame"]) == 12 - gap  # one per pair (i, i+k)
            assert drift["reference"][f"content_{key}"] == own["reference"][f"content_{key}"]
        errors = {gap: (own["metrics"][key]["mean"], drift["metrics"][key]["mean"]) for gap, key in keys.items()}
        print(f"\nwolf 64 px (content, drifting copy), {estimator}: {errors}")
        assert errors[1][1] < 1.3 * errors[1][0], estimator  # the consecutive test is passed
        assert errors[10][1] > 1.5 * errors[10][0], estimator  # frames 10 apart show the drift
        excess = {gap: drifted - content for gap, (content, drifted) in errors.items()}
        assert excess[10] > 30 * excess[1] > 0 and excess[10] > excess[5] > excess[1], estimator  # ~ k^2
    rows = {row["metric"]: row for row in summary_rows(own)}
    row = rows["Warping error 10 frames apart, OpenCV flow"]
    assert row["mean"] == row["content's own"] == own["metrics"]["warping_error_k10_classical"]["mean"]
    # a clip too short for a gap: that metric is left out, with the reason
    short = evaluator.evaluate(wolf_long[:8], wolf_long[:8], style)
    assert "warping_error_k5_raft" in short["metrics"] and "warping_error_k10_raft" not in short["metrics"]
    assert short["long_term"]["skipped"] == [{"gap": 10, "reason": "the clip has 8 frames; frames 10 apart need at least 11"}]
    assert not any("_k" in key for key in Evaluator(long_term=()).evaluate(wolf_long[:6], wolf_long[:6], style)["metrics"])


@pytest.mark.fast
def test_long_term_gaps_and_metric_order():
    assert long_term_gaps([10, 5, 0, 5]) == (5, 10) and long_term_gaps([0]) == ()
    with pytest.raises(ValueError, match=">= 2 frames"):
        long_term_gaps([1])
    keys = ["style_gram", "warping_error_k10_raft", "warping_error_classical", "warping_error_k5_classical",
            "warping_error_raft", "warping_error_k5_raft", "not_a_metric", "temporal_l1"]
    assert [info.key for info in metric_infos(keys)] == [
        "warping_error_raft", "warping_error_classical", "warping_error_k5_raft", "warping_error_k5_classical",
        "warping_error_k10_raft", "temporal_l1", "style_gram"]
    assert reference_key("style_gram") is None and reference_key("warping_error_k7_raft") == "content_warping_error_k7_raft"


def test_chunked_metrics_match_whole_clip_computation(wolf, style):
    stylized = flicker(wolf, seed=3)
    results = [Evaluator(flow_model=ClassicalFlow("farneback"), chunk_size=size).evaluate(wolf, stylized, style)
               for size in (1, 8)]
    for key in ("warping_error_raft", "warping_error_classical", "temporal_l1", "style_gram", "lpips_content"):
        assert results[0]["metrics"][key]["per_frame"] == pytest.approx(results[1]["metrics"][key]["per_frame"], rel=1e-5)
    whole = warping_error(stylized, wolf, flow_model=ClassicalFlow(JUDGE_FLOW))
    assert results[1]["metrics"]["warping_error_classical"]["per_frame"] == pytest.approx(whole.per_frame.tolist(), rel=1e-6)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_classical_flow_recovers_a_known_shift(data_dir, method):
    photo = resize_to_width(load_image(data_dir / "photos" / "astronaut.png"), 128)
    dx, dy = 3, 2
    first = photo[..., 8:-8, 8:-8]
    second = photo[..., 8 - dy : photo.shape[-2] - 8 - dy, 8 - dx : photo.shape[-1] - 8 - dx]  # content moved by (dx, dy)
    model = ClassicalFlow(method)
    flow = model(first, second)
    assert flow.shape == (1, 2, *first.shape[-2:])
    inner = flow[..., 16:-16, 16:-16]
    assert inner[:, 0].median().item() == pytest.approx(dx, abs=0.3)
    assert inner[:, 1].median().item() == pytest.approx(dy, abs=0.3)
    aligned = backward_warp(second, flow)  # the project's warp convention: second aligned to first
    before = (second - first)[..., 16:-16, 16:-16].abs().mean()
    after = (aligned - first)[..., 16:-16, 16:-16].abs().mean()
    assert after < before / 3


def test_ssim_matches_scikit_image(wolf):
    metrics = pytest.importorskip("skimage.metrics")  # dev-only cross-check
    a, b = wolf[:1], flicker(shift(wolf, 2, 1))[1:2]
    expected = metrics.structural_similarity(
        a[0].permute(1, 2, 0).double().numpy(), b[0].permute(1, 2, 0).double().numpy(), channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(a[..., :8, :8], b[..., :8, :8])


@pytest.mark.fast
def test_t_quantiles_and_intervals():
    stats = pytest.importorskip("scipy.stats")  # dev-only cross-check
    for df in (1, 2, 5, 29, 30, 31, 45, 200):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4)
    interval = mean_ci([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.low == pytest.approx(2 - 4.3027 / 3**0.5, abs=1e-4)
    assert mean_ci([5.0]).as_dict() == {"mean": 5.0, "ci95": None, "n": 1}


def test_malformed_inputs_give_clear_errors(evaluator, wolf, tmp_path):
    with pytest.raises(ValueError, match="has 3 frames but the content .* has 4"):
        load_inputs(wolf, wolf[:3])
    with pytest.raises(ValueError, match="is 32x32 px but the content .* is 64x64.*--resize"):
        load_inputs(wolf, resize_to_width(wolf, 32))
    content, stylized, notes = load_inputs(wolf, resize_to_width(wolf, 32), resize=True)
    assert stylized.shape == content.shape and notes["resized"]["from"] == [32, 32]
    style = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="at least 2"):
        evaluator.evaluate(wolf[:1], wolf[:1], style)
    broken = wolf.clone()
    broken[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluator.evaluate(wolf, broken, style)
    with pytest.raises(ValueError, match=r"must be in \[0,1\]"):
        evaluator.evaluate(wolf, wolf * 255, style)
    with pytest.raises(ValueError, match="at least 32 px"):
        evaluator.evaluate(wolf[..., :16, :16], wolf[..., :16, :16], style)
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(VideoReadError):
        load_inputs(not_a_video, wolf)
    with pytest.raises(FileNotFoundError):
        load_inputs(tmp_path / "missing.mp4", wolf)
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_clip("ViT-X-999")
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        load_clip("ViT-B-32", "no-such-tag")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("ViT-B-32", str(tmp_path / "missing.pt"))


def test_cli_rejects_a_length_mismatch_with_one_line(wolf, data_dir, tmp_path):
    write_video(tmp_path / "content.mp4", wolf, fps=10)
    write_video(tmp_path / "short.mp4", wolf[:3], fps=10)
    command = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--content", str(tmp_path / "content.mp4"),
               "--stylized", str(tmp_path / "short.mp4"), "--style", str(data_dir / "styles" / "starry_night.jpg"),
               "--out", str(tmp_path / "m.json"), "--no-clip"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "VSTYLE_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: the stylized video") and "has 3 frames" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.json").exists()


@pytest.fixture
def tiny_clip_folder(tmp_path) -> Path:
    """An open_clip ``local-dir:`` model folder: config + checkpoint of a tiny randomly initialised CLIP."""
    folder = tmp_path / "tiny_clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.save(open_clip.CLIP(**TINY_CLIP).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def test_cli_with_tiny_clip_and_with_unavailable_clip_weights(wolf, data_dir, tiny_clip_folder, tmp_path):
    from scripts.evaluate import main

    content, stylized_dir = tmp_path / "content.mp4", tmp_path / "stylized"
    stylized_dir.mkdir()
    write_video(content, wolf[:3], fps=10)
    for index, frame in enumerate(flicker(wolf[:3])):  # the stylized video as a folder of numbered frames
        save_image(stylized_dir / f"frame_{index:03d}.png", frame)
    style = data_dir / "styles" / "starry_night.jpg"
    out = tmp_path / "metrics.json"
    args = ["--content", str(content), "--stylized", str(stylized_dir), "--style", str(style), "--out", str(out)]

    result = main([*args, "--clip-model", f"local-dir:{tiny_clip_folder}"])
    written = json.loads(out.read_text())
    assert written["clip"]["status"] == "computed" and written["clip"]["model"] == f"local-dir:{tiny_clip_folder}"
    for key, length in (("clip_content", 3), ("clip_style", 3), ("clip_consecutive", 2)):
        values = written["metrics"][key]["per_frame"]
        assert len(values) == length and all(-1.0 <= v <= 1.0 for v in values)
    assert written["reference"]["content_clip_consecutive"]["per_frame"]
    assert written["metrics"]["warping_error_raft"]["mean"] == pytest.approx(result["metrics"]["warping_error_raft"]["mean"])
    assert written["inputs"]["resized"] is None and written["frames"] == 3
    # 3 frames: the default long-term gaps 5 and 10 are skipped with their reason, --long-term 2 fits
    assert [s["gap"] for s in written["long_term"]["skipped"]] == [5, 10]
    assert not any("_k" in key for key in written["metrics"])
    main([*args, "--no-clip", "--overwrite", "--long-term", "2"])
    written = json.loads(out.read_text())
    assert written["long_term"] == {"gaps": [2], "skipped": []}
    assert len(written["metrics"]["warping_error_k2_classical"]["per_frame"]) == 1

    with pytest.raises(FileExistsError, match="--overwrite"):
        main([*args, "--no-clip"])
    main([*args, "--overwrite"])  # default ViT-B-32 / openai: not cached here, downloads disabled in tests
    written = json.loads(out.read_text())
    assert written["clip"]["status"] == "skipped"
    assert "ViT-B-32/openai" in written["clip"]["reason"] and "downloads are disabled" in written["clip"]["reason"]
    assert not any(key.startswith("clip_") for key in written["metrics"])  # skipped, never zeros
    assert "content_clip_consecutive" not in written["reference"]


def test_clip_scorer_embeds_like_open_clip(tiny_clip_folder, wolf):
    scorer = load_clip(f"local-dir:{tiny_clip_folder}")
    assert isinstance(scorer, CLIPScorer)
    reference = open_clip.create_model(f"local-dir:{tiny_clip_folder}").eval()
    # open_clip's own preprocessing of a square frame: resize to 32 px (bicubic), normalise
    expected = reference.encode_image((F.interpolate(wolf, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
                                       - scorer.mean) / scorer.std)
    assert torch.allclose(scorer.embed(wolf), F.normalize(expected, dim=-1), atol=1e-5)
    skipped = load_clip("ViT-B-32", None)
    assert isinstance(skipped, CLIPUnavailable) and "no pretrained weights" in skipped.reason


def test_evaluate_video_states_a_resize(wolf, style):
    result = evaluate_video(wolf[:2], resize_to_width(wolf[:2], 48), style, resize=True)
    assert result["inputs"]["resized"]["from"] == [48, 48] and result["inputs"]["resized"]["to"] == [64, 64]
    assert result["frames"] == 2 and result["clip"]["status"] == "skipped"

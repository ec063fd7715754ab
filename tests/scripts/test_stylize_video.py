"""End-to-end stylization: the script on real clips, streaming, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.latents.codecs import load_codec
from pipeline.io.images import load_image, resize_to_width
from pipeline.stylize import StylizationPipeline
from pipeline.latents.stylizers.latent_wct import LatentWCT
from pipeline.io.video import read_video, video_info
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features
from scripts import stylize_video


@pytest.fixture(scope="module")
def paths(data_dir):
    return {
        "wolf": data_dir / "videos" / "test" / "wolf.mp4",
        "alley": data_dir / "videos" / "test" / "sintel_alley",
        "starry": data_dir / "styles" / "starry_night.jpg",
    }


def run(argv, tmp_path):
    return stylize_video.main([*map(str, argv), "--cache-dir", str(tmp_path / "cache")])


def test_wolf_keeps_frame_count_fps_and_aspect_and_carries_the_style(tmp_path, paths):
    out = tmp_path / "wolf.mp4"
    run(["--video", paths["wolf"], "--style", paths["starry"], "--out", out, "--size", "128", "--max-frames", "6"], tmp_path)
    info = video_info(out)
    assert (info.num_frames, info.fps, info.width, info.height) == (6, 20.0, 128, 128)
    stylized, _ = read_video(out)
    content, _ = read_video(paths["wolf"], max_frames=6)
    style_loss = GramStyleLoss(VGG16Features(), load_image(paths["starry"]))
    with torch.no_grad():
        assert style_loss(stylized).mean() < 0.5 * style_loss(resize_to_width(content, 128)).mean()


def test_frame_folder_odd_width_and_side_by_side(tmp_path, paths):
    out = tmp_path / "alley.mp4"
    run(["--video", paths["alley"], "--style", paths["starry"], "--out", out, "--size", "100", "--max-frames", "3",
         "--side-by-side"], tmp_path)
    info = video_info(out)
    assert info.num_frames == 3 and info.fps == 24.0
    assert info.width == 300 and abs(info.height - round(218 * 100 / 512)) <= 1


def test_streaming_in_chunks_equals_one_pass(paths):
    frames, _ = read_video(paths["alley"], max_frames=5)
    frames = resize_to_width(frames, 64)
    style = load_image(paths["starry"])
    stylizer = LatentWCT(load_codec("taef2"))
    whole = StylizationPipeline(stylizer, chunk_size=16).stylize_clip(frames, style)
    chunked = StylizationPipeline(stylizer, chunk_size=2).stylize_clip(frames, style)
    assert torch.allclose(whole.result, chunked.result, atol=1e-4)


def test_grayscale_style_is_accepted(tmp_path, paths):
    gray = tmp_path / "gray.png"
    Image.open(paths["starry"]).convert("L").resize((128, 100)).save(gray)
    out = tmp_path / "gray.mp4"
    run(["--video", paths["wolf"], "--style", gray, "--out", out, "--size", "64", "--max-frames", "2"], tmp_path)
    assert video_info(out).num_frames == 2


def test_refuses_to_overwrite_without_flag(tmp_path, paths):
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(["--video", paths["wolf"], "--style", paths["starry"], "--out", out, "--size", "64", "--max-frames", "2"], tmp_path)
    assert out.read_bytes() == b"precious"
    run(["--video", paths["wolf"], "--style", paths["starry"], "--out", out, "--size", "64", "--max-frames", "2",
         "--overwrite"], tmp_path)
    assert video_info(out).num_frames == 2


@pytest.mark.parametrize("problem", ["missing style", "style not an image", "missing video"])
def test_bad_inputs_fail_clearly_from_the_command_line(tmp_path, paths, problem):
    import subprocess
    import sys

    style, video = paths["starry"], paths["wolf"]
    if problem == "missing style":
        style = tmp_path / "nope.jpg"
    elif problem == "style not an image":
        style = tmp_path / "notes.jpg"
        style.write_text("not an image")
    else:
        video = tmp_path / "missing.mp4"
    result = subprocess.run(
        [sys.executable, "scripts/stylize_video.py", "--video", str(video), "--style", str(style),
         "--out", str(tmp_path / "o.mp4"), "--size", "64", "--max-frames", "2", "--no-cache"],
        capture_output=True, text=True, cwd=stylize_video.Path(stylize_video.__file__).parents[1],
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert (str(style) if "style" in problem else str(video)) in result.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_pixel_space_methods_stream_a_video_from_the_registry(tmp_path, paths):
    from baselines.rlministyler.models import RLMiniStyler, RLMiniStylerConfig
    from baselines.rlnst.models import RLNST, RLNSTConfig

    trained = dict(style=str(paths["starry"]), styles=[str(paths["starry"])], size=64, episode_steps=2, updates=0)
    image_model = RLNST(RLNSTConfig(video=False, channels=(8, 8, 8))).save_pretrained(tmp_path / "rlnst", training=trained)
    video_model = RLNST(RLNSTConfig(video=True, channels=(8, 8, 8))).save_pretrained(tmp_path / "rlnst_video",
                                                                                      training=trained)
    ministyler = RLMiniStyler(RLMiniStylerConfig()).save_pretrained(tmp_path / "ministyler", training=trained)
    common = ["--video", paths["alley"], "--style", paths["starry"], "--size", "64", "--max-frames", "3", "--rl-steps", "2"]
    for method, checkpoint in [("rlnst", image_model), ("rlnst", video_model), ("rlministyler", ministyler)]:
        out = tmp_path / f"{Path(checkpoint).stem}.mp4"
        run([*common, "--method", method, "--source", checkpoint, "--out", out], tmp_path)
        info = video_info(out)
        assert info.num_frames == 3 and info.width == 64
    with pytest.raises(ValueError, match="needs a source"):
        run([*common, "--method", "rlnst", "--out", tmp_path / "y.mp4"], tmp_path)
    with pytest.raises(ValueError, match="--policy RUN is --method policy"):
        run([*common, "--method", "rlnst", "--policy", video_model, "--out", tmp_path / "z.mp4"], tmp_path)

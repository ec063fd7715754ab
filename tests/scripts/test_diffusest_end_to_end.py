"""Kuang & Chen on Stable Diffusion latents, end to end through the command-line entry points, with tiny random
diffusers components of the real classes (an AutoencoderKL decodes): extract the DiffuseST latents, train one
short epoch of REINFORCE and of SAC on them, stylize a clip with a trained policy, write a comparison report;
a policy trained on DiffuseST latents is refused on another latent space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video
from pipeline.latents.stylizers.diffusest import DiffuseSTConfig
from policies.base import load_policy
from scripts import compare, extract_latents, stylize_video, train_policy
from tests.helpers import TINY_SD_LAYERS, save_sd_folder, tiny_sd_parts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, FRAMES = "80", "4"  # Sintel at 80 px: 80x32 frames, 10x4 latents


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory) -> dict:
    """A tiny SD model folder, a training folder with 4 Sintel frames, a cache, the style, the stylizer flags."""
    root = tmp_path_factory.mktemp("kuang-chen")
    photos = [load_image(data_dir / "photos" / name) for name in ("astronaut.png", "chelsea.png")]
    model = save_sd_folder(tiny_sd_parts(resize_to_width(photos[0], 64)), root / "sd")
    clip = root / "videos" / "ambush"
    clip.mkdir(parents=True)
    for frame in sorted((data_dir / "videos/train/sintel_ambush_3").glob("*.png"))[:4]:
        (clip / frame.name).symlink_to(frame)
    flags = ["--stylizer", "diffusest", "--model", str(model), "--steps", "4", "--diffusest-inversion-steps", "8",
             "--diffusest-feature-layers", *TINY_SD_LAYERS["feature_layers"],
             "--diffusest-attention-layers", *TINY_SD_LAYERS["attention_layers"]]
    return {"root": root, "videos": root / "videos", "clip": clip, "cache": root / "cache", "model": model,
            "style": str(data_dir / "styles/starry_night.jpg"), "flags": flags}


@pytest.fixture(scope="module")
def runs(setup) -> dict[str, Path]:
    """Extract the latents, then one epoch of REINFORCE and of SAC (4-frame episodes) on them."""
    assert extract_latents.main(["--videos", str(setup["videos"]), "--style", setup["style"], "--size", SIZE,
                                 "--chunk", FRAMES, "--cache-dir", str(setup["cache"]), "--device", "cpu",
                                 *setup["flags"]]) == 1
    entries = sorted(setup["cache"].glob("*.safetensors"))
    assert len(entries) == 1
    runs = {}
    for algo, options in (("reinforce", []), ("sac", ["--sac-warmup", "2", "--sac-batch-size", "2"])):
        runs[algo] = setup["root"] / f"run-{algo}"
        train_policy.main(["--style", setup["style"], "--out", str(runs[algo]), "--videos", str(setup["videos"]),
                           "--size", SIZE, "--max-frames", FRAMES, "--epochs", "1", "--eval-every", "0", "--threads",
                           "1", "--cache-dir", str(setup["cache"]), "--device", "cpu", "--algo", algo, *options,
                           *setup["flags"]])
    assert sorted(setup["cache"].glob("*.safetensors")) == entries  # training read the extracted latents
    return runs


def test_runs_record_the_latent_space(runs, setup):
    for algo, run in runs.items():
        config = json.loads((run / "config.json").read_text())
        assert (config["stylizer"], config["codec"], config["algo"]) == ("diffusest", "sd-vae", algo)
        assert DiffuseSTConfig(**config["stylizer_options"]) == DiffuseSTConfig(
            model=str(setup["model"]), num_inference_steps=4, inversion_steps=8, **TINY_SD_LAYERS)
        assert load_policy(run).latent_channels == 4  # SD's latent space


def test_trained_policy_stylizes_a_clip(runs, setup):
    out = setup["root"] / "ambush.mp4"
    summary = stylize_video.main(["--video", str(setup["clip"]), "--style", setup["style"], "--out", str(out),
                                  "--policy", str(runs["reinforce"]), "--size", SIZE, "--cache-dir",
                                  str(setup["cache"]), "--device", "cpu", *setup["flags"]])
    frames, _ = read_video(out)
    assert summary["frames"] == 4 and frames.shape[0] == 4 and frames.std() > 0.01


def test_policy_of_another_latent_space_is_refused(runs, setup):
    with pytest.raises(ValueError, match=r"trained on another latent space \(stylizer diffusest, codec sd-vae\).*"
                                         r"--stylizer diffusest --codec sd-vae"):
        stylize_video.main(["--video", str(setup["clip"]), "--style", setup["style"], "--out",
                            str(setup["root"] / "refused.mp4"), "--policy", str(runs["sac"]), "--no-cache",
                            "--device", "cpu"])


def test_comparison_report(runs, setup):
    report = setup["root"] / "report"
    results = compare.main(["--out", str(report), "--clips", str(setup["clip"]), "--styles", setup["style"],
                            "--width", SIZE, "--max-frames", FRAMES, "--policy", f"reinforce={runs['reinforce']}",
                            "--policy", f"sac={runs['sac']}", "--no-clip", "--cache-dir", str(setup["cache"]),
                            "--device", "cpu", "--quiet", "--no-frontier", *setup["flags"]])
    assert (results["config"]["stylizer"], results["config"]["codec"]) == ("diffusest", "sd-vae")
    assert {item["method"] for item in results["items"]} == {"baseline", "flow-blend", "reinforce", "sac"}
    assert (report / "index.html").is_file() and (report / "results.md").is_file()

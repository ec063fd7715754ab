"""scripts/distill_encoder.py end to end at a tiny size: it writes a model folder that load_warp_codec reads, and
refuses bad input in one line without writing anything."""

from __future__ import annotations

import json

import pytest

from pipeline.latents.codecs import load_codec, load_warp_codec
from pipeline.latents.taef2 import TAEF2_LITE
from scripts import distill_encoder


@pytest.fixture
def two_clips(tmp_path, data_dir):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("bedroom.mp4", "juggle.mp4"):
        (folder / name).symlink_to(data_dir / "videos" / "train" / name)
    return folder


def test_a_tiny_distillation_writes_a_warp_encoder(tmp_path, two_clips, data_dir, capsys):
    out = tmp_path / "lite"
    distill_encoder.main(["--out", str(out), "--videos", str(two_clips), "--style",
                          str(data_dir / "styles" / "udnie.jpg"), "--size", "64", "--max-frames", "2",
                          "--validation-clips", "1", "--steps", "4", "--eval-every", "2", "--threads", "1"])
    assert "validation error" in capsys.readouterr().out
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["validation_clips"] == ["juggle.mp4"] and [row["step"] for row in training["rows"]] == [0, 2, 4]
    lite = load_warp_codec(load_codec("taef2"), "taef2-lite", folder=out)
    assert lite.encoder.config == TAEF2_LITE
    with pytest.raises(FileExistsError, match="--overwrite"):
        distill_encoder.main(["--out", str(out), "--videos", str(two_clips)])


def test_bad_input_is_refused_before_any_work(tmp_path, two_clips, data_dir):
    out = tmp_path / "lite"
    with pytest.raises(ValueError, match="needs at least one clip to train on"):
        distill_encoder.main(["--out", str(out), "--videos", str(two_clips), "--validation-clips", "2"])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        distill_encoder.main(["--out", str(out), "--videos", str(two_clips), "--validation-clips", "1",
                              "--style", str(tmp_path / "missing.jpg")])
    assert not out.exists()

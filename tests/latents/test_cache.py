"""Latent cache: reuse, key sensitivity, and corrupt or mismatched entries recomputed."""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.latents.cache import LatentCache
from pipeline.latents.codecs import load_codec
from pipeline.io.images import resize_to_width
from pipeline.latents.stylizers.latent_wct import LatentWCT, LatentWCTConfig
from pipeline.io.video import read_video
from pipeline.io.images import load_image


class CountingWCT(LatentWCT):
    """The real latent WCT, counting how many frames it stylizes."""

    calls = 0

    def stylize_prepared(self, frames, style_state):
        self.calls += frames.shape[0]
        return super().stylize_prepared(frames, style_state)


@pytest.fixture(scope="module")
def clip(data_dir):
    frames, _ = read_video(data_dir / "videos" / "train" / "dog.mp4", max_frames=3)
    style = load_image(data_dir / "styles" / "udnie.jpg")
    return resize_to_width(frames, 96), style


@pytest.fixture(scope="module")
def codec():
    return load_codec("taef2")


def test_second_request_is_served_from_the_cache(tmp_path, clip, codec):
    frames, style = clip
    stylizer = CountingWCT(codec)
    cache = LatentCache(tmp_path)
    first = cache.latents(stylizer, frames, style)
    second = cache.latents(stylizer, frames, style)
    assert stylizer.calls == 3
    assert torch.equal(first, second)
    assert first.shape == (3, 32, frames.shape[2] // 8, frames.shape[3] // 8)


def test_key_changes_with_frames_style_and_config(clip, codec):
    frames, style = clip
    base = LatentCache.key(LatentWCT(codec), frames, style)
    assert LatentCache.key(LatentWCT(codec, LatentWCTConfig(alpha=0.5)), frames, style) != base
    assert LatentCache.key(LatentWCT(codec), frames.flip(0), style) != base
    assert LatentCache.key(LatentWCT(codec), frames, style.flip(-1)) != base


def test_corrupt_entry_is_recomputed(tmp_path, clip, codec, caplog):
    frames, style = clip
    stylizer = CountingWCT(codec)
    cache = LatentCache(tmp_path)
    good = cache.latents(stylizer, frames, style)
    path = cache.path_for(cache.key(stylizer, frames, style))
    path.write_bytes(path.read_bytes()[:100])
    again = cache.latents(stylizer, frames, style)
    assert stylizer.calls == 6
    assert "unreadable" in caplog.text
    assert torch.allclose(good, again)


def test_entry_of_another_key_is_not_used(tmp_path, clip, codec, caplog):
    frames, style = clip
    cache = LatentCache(tmp_path)
    strong, weak = CountingWCT(codec), CountingWCT(codec, LatentWCTConfig(alpha=0.3))
    cache.latents(strong, frames, style)
    shutil.copy(cache.path_for(cache.key(strong, frames, style)), cache.path_for(cache.key(weak, frames, style)))
    cache.latents(weak, frames, style)
    assert weak.calls == 3
    assert "another key" in caplog.text


def test_extract_latents_fills_the_cache_that_the_pipeline_then_reads(tmp_path, data_dir):
    from scripts import extract_latents

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "alley").symlink_to(data_dir / "videos" / "test" / "sintel_alley")
    style = data_dir / "styles" / "udnie.jpg"
    argv = ["--videos", str(clips), "--style", str(style), "--size", "64", "--chunk", "4", "--cache-dir", str(tmp_path / "c")]
    assert extract_latents.main(argv) == 3  # 10 frames in chunks of 4
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 3
    frames = resize_to_width(read_video(clips / "alley", max_frames=4)[0], 64)
    stylizer = CountingWCT(load_codec("taef2"))
    LatentCache(tmp_path / "c").latents(stylizer, frames, load_image(style))
    assert stylizer.calls == 0
    with pytest.raises(ValueError, match="no videos"):
        extract_latents.main([*argv[:1], str(tmp_path / "c"), *argv[2:]])

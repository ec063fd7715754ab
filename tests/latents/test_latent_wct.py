"""Latent WCT: statistics transfer, strength, independence, and a visible style gain."""

from __future__ import annotations

import pytest
import torch

from pipeline.latents.codecs import load_codec
from pipeline.io.images import load_image, resize_to_width
from pipeline.latents.stylizers.latent_wct import LatentWCT, LatentWCTConfig, _covariance, jitter_offset
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features


@pytest.fixture(scope="module")
def codec():
    return load_codec("taef2")


@pytest.fixture(scope="module")
def vgg():
    return VGG16Features()


@pytest.fixture(scope="module")
def images(data_dir):
    content = resize_to_width(load_image(data_dir / "photos" / "chelsea.png"), 128)
    style = load_image(data_dir / "styles" / "starry_night.jpg")
    return content, style


def test_full_strength_matches_style_latent_statistics(codec, vgg, images):
    content, style = images
    wct = LatentWCT(codec, LatentWCTConfig(alpha=1.0), vgg=vgg)
    stats = wct.prepare_style(style)
    out = wct.stylize(content, style)
    mean, cov = _covariance(out.double(), 0.0)
    style_cov = (stats.colour.double() @ stats.colour.double())
    assert torch.allclose(mean[0], stats.mean.double(), atol=1e-3)
    assert torch.allclose(cov[0], style_cov, atol=5e-3 * style_cov.abs().max().item())


def test_alpha_zero_is_the_content_latent(codec, vgg, images):
    content, style = images
    wct = LatentWCT(codec, LatentWCTConfig(alpha=0.0), vgg=vgg)
    with torch.no_grad():
        assert torch.allclose(wct.stylize(content, style), codec.encode(content), atol=1e-5)


def test_frames_are_stylized_independently(codec, vgg, images, data_dir):
    content, style = images
    other = resize_to_width(load_image(data_dir / "photos" / "coffee.png"), 128)[..., : content.shape[2], :]
    batch = torch.cat([content, other])
    wct = LatentWCT(codec, vgg=vgg)
    together = wct.stylize(batch, style)
    alone = torch.cat([wct.stylize(batch[:1], style), wct.stylize(batch[1:], style)])
    assert torch.allclose(together, alone, atol=1e-4)


def test_wct_lowers_style_loss_and_refinement_lowers_it_further(codec, vgg, images):
    content, style = images
    content = resize_to_width(content, 64)
    style_loss = GramStyleLoss(vgg, style)
    plain = LatentWCT(codec, vgg=vgg)
    refined = LatentWCT(codec, LatentWCTConfig(refine_steps=5), vgg=vgg)
    with torch.no_grad():
        loss_content = style_loss(content).item()
        loss_wct = style_loss(codec.decode(plain.stylize(content, style))).item()
        loss_refined = style_loss(codec.decode(refined.stylize(content, style))).item()
    assert loss_wct < 0.7 * loss_content
    assert loss_refined < loss_wct


def test_jittered_refinement_keeps_its_style_gain_when_the_frame_moves(codec, vgg, images):
    """Without jitter the refinement's optimum sits on VGG's pixel grid: the Gram loss of its frame rises when
    the frame moves by one pixel. With it the loss holds under the move (what keyframe propagation does)."""
    content, style = images
    style_loss = GramStyleLoss(vgg, style)

    def rise_under_one_pixel_move(jitter: int) -> float:
        stylizer = LatentWCT(codec, LatentWCTConfig(refine_steps=10, refine_jitter=jitter), vgg=vgg)
        with torch.no_grad():
            frame = codec.decode(stylizer.stylize(content, style)).clamp(0, 1)
            return (style_loss(frame[..., 1:, 1:]) / style_loss(frame[..., :-1, :-1])).item() - 1

    on_grid, jittered = rise_under_one_pixel_move(0), rise_under_one_pixel_move(8)
    assert jittered < on_grid / 2
    assert abs(jittered) < 0.05


def test_jitter_offsets_are_distinct_and_in_range():
    offsets = [jitter_offset(step, 8) for step in range(8)]
    assert len(set(offsets)) == 8 and all(0 <= v < 8 for offset in offsets for v in offset)
    assert {jitter_offset(step, 0) for step in range(5)} == {(0, 0)}


def test_bad_settings_and_shapes_are_rejected(codec, vgg, images):
    content, style = images
    with pytest.raises(ValueError, match="alpha"):
        LatentWCTConfig(alpha=1.5)
    with pytest.raises(ValueError, match="refine_jitter"):
        LatentWCTConfig(refine_jitter=-1)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        LatentWCT(codec, vgg=vgg).stylize(content[0], style)

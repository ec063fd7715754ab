"""Latent WCT: statistics transfer, strength, independence, and a visible style gain."""

from __future__ import annotations

import pytest
import torch

from pipeline.latents.codecs import load_codec
from pipeline.io.images import load_image, resize_to_width
from pipeline.latents.stylizers.latent_wct import LatentWCT, LatentWCTConfig, _covariance
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


def test_bad_settings_and_shapes_are_rejected(codec, vgg, images):
    content, style = images
    with pytest.raises(ValueError, match="alpha"):
        LatentWCTConfig(alpha=1.5)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        LatentWCT(codec, vgg=vgg).stylize(content[0], style)

"""VGG16 features, Gram style loss, perceptual loss and LPIPS on real weights and images."""

from __future__ import annotations

from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision.models import alexnet

from pipeline.io.weights import WeightsNotFoundError, load_state_dict, weight_path
from rewards.content import LPIPSDistance
from rewards.style import (
    GramStyleLoss,
    gram_matrix,
    perceptual_loss,
    perceptual_loss_from_features,
)
from rewards.vgg import VGG16_RELU_INDICES, VGG16Features


def load_rgb(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(1,3,H,W) in [0,1]; ``size`` = (W,H) centre-cropped to that aspect ratio."""
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = ImageOps.fit(image, size, Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def vgg() -> VGG16Features:
    return VGG16Features()


@pytest.fixture(scope="module")
def lpips_alex() -> LPIPSDistance:
    return LPIPSDistance()


@pytest.fixture(scope="module")
def photos(data_dir) -> torch.Tensor:
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
    return torch.cat([load_rgb(data_dir / "photos" / name, (96, 64)) for name in names])


@pytest.fixture(scope="module")
def starry(data_dir) -> torch.Tensor:
    return load_rgb(data_dir / "styles" / "starry_night.jpg")


# ---------------------------------------------------------------- VGG16Features


def test_vgg_returns_every_relu_with_torchvision_shapes(photos):
    model = VGG16Features(layers=tuple(VGG16_RELU_INDICES))
    with torch.no_grad():
        feats = model(photos[:2])
    channels = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
    assert list(feats) == list(VGG16_RELU_INDICES)
    for name, value in feats.items():
        block = int(name[4])
        assert value.shape == (2, channels[name[4]], 64 >> (block - 1), 96 >> (block - 1)), name
        assert value.min() >= 0
    # The full network: 31 modules, the last being the 5th max-pool, is cut after relu5_3.
    assert len(model.features) == 30


def test_vgg_is_truncated_frozen_pretrained_and_differentiable(vgg, photos):
    assert vgg.layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    assert len(vgg.features) == VGG16_RELU_INDICES["relu4_3"] + 1
    assert all(not p.requires_grad for p in vgg.parameters())
    torch.testing.assert_close(vgg.features[0].weight, load_state_dict("vgg16_features")["0.weight"])
    vgg.train()
    assert not vgg.training
    x = photos[:1].clone().requires_grad_(True)
    vgg(x)["relu3_3"].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_vgg_normalises_inside_and_rejects_bad_input(vgg, photos):
    relu1_1 = VGG16Features(layers=["relu1_1"])
    assert len(relu1_1.features) == 2
    weights = load_state_dict("vgg16_features")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = F.relu(F.conv2d((photos - mean) / std, weights["0.weight"], weights["0.bias"], padding=1))
    with torch.no_grad():
        torch.testing.assert_close(relu1_1(photos)["relu1_1"], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="relu6_1"):
        VGG16Features(layers=["relu6_1"])
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        vgg(photos[:, :1])


def test_vgg_explicit_weights_path(tmp_path):
    model = VGG16Features(layers=["relu1_1"], weights_path=weight_path("vgg16_features"))
    assert model.layers == ("relu1_1",)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        VGG16Features(weights_path=tmp_path / "missing.pth")


# ---------------------------------------------------------------- Gram style loss


@pytest.mark.fast
def test_gram_matrix_by_hand():
    feats = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[1 + 4, 3 + 0], [3 + 0, 9 + 0]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(feats), expected[None])
    with pytest.raises(ValueError):
        gram_matrix(torch.zeros(2, 3, 4))


@pytest.mark.fast
def test_gram_matrix_gradient_in_both_memory_layouts():
    """The hand-written backward (one product) is the exact gradient, for contiguous and channels-last features,
    and returns the gradient in the features' own layout."""
    feats = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = feats.clone(memory_format=layout).requires_grad_(True)
        assert torch.autograd.gradcheck(gram_matrix, (x,))
        weights = torch.randn(2, 3, 3, dtype=torch.float64)
        (gram_matrix(x) * weights).sum().backward()
        reference = x.detach().clone().requires_grad_(True)
        flat = reference.reshape(2, 3, 20)
        (flat @ flat.transpose(1, 2) / 60 * weights).sum().backward()
        torch.testing.assert_close(x.grad, reference.grad)
        assert x.grad.is_contiguous(memory_format=layout)


def test_bf16_vgg_matches_fp32_on_real_images(vgg, starry, data_dir):
    """precision='bf16' (a bf16 channels-last copy of the layers) keeps the Gram style loss within 1% of fp32 and
    its input gradient pointing the same way, on real photos at 128 px (measured: losses -0.3% / -0.2%, gradient
    cosine 0.979, the same figures as bf16 autocast over the fp32 layers gave)."""
    photos = torch.cat([load_rgb(data_dir / "photos" / name, (128, 128)) for name in ("astronaut.png", "coffee.png")])
    fast = VGG16Features(precision="bf16")
    assert fast.precision == "bf16"
    scores, grads = [], []
    for extractor in (vgg, fast):
        x = photos.clone().requires_grad_(True)
        loss = GramStyleLoss(extractor, starry, style_size=128)(x)
        loss.sum().backward()
        scores.append(loss.detach())
        grads.append(x.grad.flatten())
    torch.testing.assert_close(scores[1], scores[0], rtol=0.01, atol=0.0)
    assert not torch.equal(scores[1], scores[0]), "bf16 must actually change the computation"
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.97
    features = fast(photos)
    assert all(f.dtype == torch.float32 for f in features.values())


def test_style_loss_of_the_style_image_is_zero(vgg, starry):
    loss = GramStyleLoss(vgg, starry)
    assert max(loss.style_image.shape[-2:]) == 256  # style_size default: longer side 256 px
    with torch.no_grad():
        assert loss(loss.style_image).item() < 1e-10
    native = GramStyleLoss(vgg, F.interpolate(starry, size=(80, 100), mode="area"), style_size=None)
    assert native.style_image.shape[-2:] == (80, 100)
    with torch.no_grad():
        assert native(native.style_image).item() < 1e-10


def test_stylized_looking_images_have_lower_style_loss(vgg, data_dir, photos):
    for name in ["starry_night.jpg", "udnie.jpg", "composition_vii.jpg"]:
        style = load_rgb(data_dir / "styles" / name)
        loss = GramStyleLoss(vgg, style, style_size=128)
        style_at_photo_size = F.interpolate(style, size=photos.shape[-2:], mode="bilinear", antialias=True)
        blended = 0.5 * photos + 0.5 * style_at_photo_size
        with torch.no_grad():
            raw, stylized = loss(photos), loss(blended)
        assert raw.shape == (4,)
        assert (stylized < 0.8 * raw).all(), (name, raw, stylized)


def test_style_loss_is_batched_and_differentiable(vgg, starry, photos):
    loss = GramStyleLoss(vgg, starry)
    with torch.no_grad():
        batched = loss(photos)
        single = torch.cat([loss(photos[i : i + 1]) for i in range(len(photos))])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    x = photos[:1].clone().requires_grad_(True)
    loss(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_set_style_replaces_the_targets(vgg, starry, data_dir, photos):
    loss = GramStyleLoss(vgg, starry, style_size=96)
    with torch.no_grad():
        before = loss(photos[:1])
        loss.set_style(photos[:1])
        after = loss(photos[:1])
        assert loss.style_image.shape == photos[:1].shape  # already 96 px on its longer side
        torch.testing.assert_close(loss.target_relu2_2, gram_matrix(vgg(photos[:1])["relu2_2"]))
    assert before.item() > 1.0 and after.item() < 1e-10
    with pytest.raises(ValueError, match=r"\(1,3,H,W\)"):
        loss.set_style(photos)
    with pytest.raises(ValueError, match="relu4_3"):
        GramStyleLoss(VGG16Features(layers=["relu1_2"]), starry)


# ---------------------------------------------------------------- perceptual loss


def test_perceptual_loss_shares_the_vgg_forward(vgg, starry, photos):
    noisy = (photos + 0.1 * torch.randn_like(photos)).clamp(0, 1)
    noisier = (photos + 0.3 * torch.randn_like(photos)).clamp(0, 1)
    style = GramStyleLoss(vgg, starry, style_size=128)
    with torch.no_grad():
        direct = perceptual_loss(vgg, noisy, photos)
        feats, target_feats = vgg(noisy), vgg(photos)
        shared = perceptual_loss_from_features(feats, target_feats)
        torch.testing.assert_close(style.from_features(feats), style(noisy))
        assert perceptual_loss(vgg, photos, photos).abs().max() == 0
        assert (perceptual_loss(vgg, noisier, photos) > direct).all()
    torch.testing.assert_close(direct, shared)
    assert direct.shape == (4,)
    expected = (feats["relu2_2"] - target_feats["relu2_2"]).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(direct, expected)
    with pytest.raises(ValueError, match="relu5_1"):
        perceptual_loss(vgg, noisy, photos, layer="relu5_1")


# ---------------------------------------------------------------- LPIPS


def reference_lpips(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS-alex v0.1 written out from the paper: unit-normalised channels, squared
    difference, linear heads, spatial mean, summed over the 5 ReLU layers."""
    trunk = alexnet().features
    trunk.load_state_dict(load_state_dict("alexnet_features"), strict=True)
    heads = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    xa, xb = (2 * a - 1 - shift) / scale, (2 * b - 1 - shift) / scale
    total = torch.zeros(a.shape[0])
    layer = 0
    for module in trunk:
        xa, xb = module(xa), module(xb)
        if isinstance(module, torch.nn.ReLU):
            na = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            weighted = F.conv2d((na - nb).pow(2), heads[f"lin{layer}.model.1.weight"])
            total += weighted.mean(dim=(1, 2, 3))
            layer += 1
    assert layer == 5
    return total


def test_lpips_matches_the_published_definition(lpips_alex, photos):
    other = photos.roll(1, dims=0)
    with torch.no_grad():
        ours = lpips_alex(photos, other)
        expected = reference_lpips(photos, other)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours, lpips_alex(other, photos), rtol=1e-5, atol=1e-6)


def test_lpips_identity_is_zero_and_distances_are_sane(lpips_alex, photos):
    with torch.no_grad():
        assert lpips_alex(photos, photos).abs().max().item() < 1e-7
        different = lpips_alex(photos, photos.roll(1, dims=0))
        slight = lpips_alex(photos, (photos + 0.02 * torch.randn_like(photos)).clamp(0, 1))
    assert different.shape == (4,)
    assert ((different > 0.3) & (different < 1.0)).all(), different
    assert (slight < 0.05).all(), slight


def test_lpips_grows_with_noise_and_blur(lpips_alex, photos):
    x = photos[:2]
    noise = torch.randn_like(x)
    blurs = [0.5, 1.0, 2.0, 4.0]
    with torch.no_grad():
        by_noise = torch.stack([lpips_alex(x, (x + s * noise).clamp(0, 1)) for s in [0.02, 0.05, 0.1, 0.2, 0.4]])
        by_blur = torch.stack([lpips_alex(x, gaussian_blur(x, s)) for s in blurs])
    assert (by_noise.diff(dim=0) > 0).all(), by_noise
    assert (by_blur.diff(dim=0) > 0).all(), by_blur


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).to(x)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


def test_lpips_is_frozen_but_passes_gradients(lpips_alex, photos):
    assert all(not p.requires_grad for p in lpips_alex.parameters())
    lpips_alex.train()
    assert not lpips_alex.training and not lpips_alex.model.lin0.model[0].training  # dropout stays off
    a = photos[:2].clone().requires_grad_(True)
    first = lpips_alex(a, photos[2:])
    first.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    torch.testing.assert_close(lpips_alex(a.detach(), photos[2:]), first.detach())  # deterministic
    assert all(p.grad is None for p in lpips_alex.parameters())


def test_lpips_rejects_bad_input(lpips_alex, photos):
    with pytest.raises(ValueError, match="one shape"):
        lpips_alex(photos, photos[:2])
    with pytest.raises(ValueError, match="at least 32"):
        lpips_alex(photos[..., :16, :16], photos[..., :16, :16])

"""Latent codecs: real TAEF2 weights on real photos; taesd / sd-vae with tiny random diffusers models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from PIL import Image

from pipeline.latents.codecs import DiffusersCodec, LatentCodec, load_codec
from pipeline.io.precision import native_bf16, resolve_precision
from pipeline.io.weights import WeightsNotFoundError

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def load_photo(path: Path, size: int = 256) -> torch.Tensor:
    """(1,3,size,size) in [0,1], bicubic resize with PIL."""
    image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


@pytest.fixture(scope="module")
def taef2() -> LatentCodec:
    return load_codec("taef2")


@pytest.fixture(scope="module")
def small_frames(data_dir: Path) -> torch.Tensor:
    """5 real 64x64 frames (crops of two photos)."""
    astronaut, coffee = load_photo(data_dir / "photos" / PHOTOS[0], 128), load_photo(data_dir / "photos" / PHOTOS[2], 128)
    crops = [astronaut[..., :64, :64], astronaut[..., 64:, 64:], coffee[..., :64, 64:], coffee[..., 64:, :64], astronaut[..., 32:96, 32:96]]
    return torch.cat(crops)


def tiny_taesd() -> AutoencoderTiny:
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )


def tiny_kl(**config) -> AutoencoderKL:
    """Four levels of block_out_channels: three downsamplings, a factor 8 like SD's VAE."""
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
        **config,
    )


def test_taef2_reconstructs_photos(taef2: LatentCodec, data_dir: Path) -> None:
    images = torch.cat([load_photo(data_dir / "photos" / name) for name in PHOTOS])
    with torch.no_grad():
        latents = taef2.encode(images)
        decoded = taef2.decode(latents)
    assert latents.shape == (4, 32, 32, 32)
    assert 0.5 < latents.std() < 1.2, "TAEF2 latents have std ~0.85"
    scores = {name: psnr(image, out) for name, image, out in zip(PHOTOS, images, decoded)}
    print("TAEF2 256x256 round-trip PSNR (dB):", {k: round(v, 2) for k, v in scores.items()})
    assert all(score >= 28 for score in scores.values()), scores


def test_taef2_shapes_range_and_config(taef2: LatentCodec, small_frames: torch.Tensor) -> None:
    frames = torch.nn.functional.interpolate(small_frames[:2], size=(64, 96), mode="bilinear")
    with torch.no_grad():
        latents = taef2.encode(frames)
        decoded = taef2.decode(latents)
    assert (taef2.name, taef2.latent_channels, taef2.downscale) == ("taef2", 32, 8)
    assert latents.shape == (2, 32, 8, 12) and latents.dtype == torch.float32
    assert decoded.shape == (2, 3, 64, 96)
    assert decoded.min() >= 0 and decoded.max() <= 1
    assert not taef2.training and not any(p.requires_grad for p in taef2.parameters())
    assert taef2.config() == {"name": "taef2", "model": "madebyollin/taesd:taef2", "dtype": "float32",
                              "precision": resolve_precision("auto", "cpu")}


def test_bf16_autocast_matches_fp32_round_trip(data_dir: Path) -> None:
    images = torch.cat([load_photo(data_dir / "photos" / name, 128) for name in PHOTOS[:2]])
    fp32, bf16 = load_codec("taef2", precision="fp32"), load_codec("taef2", precision="bf16")
    with torch.no_grad():
        exact, fast = fp32.decode(fp32.encode(images)), bf16.decode(bf16.encode(images))
    assert fast.dtype == torch.float32 and bf16.config()["precision"] == "bf16"
    assert abs(psnr(images, fast) - psnr(images, exact)) < 0.3, "bf16 must not cost reconstruction quality"
    assert psnr(exact, fast) > 40
    assert psnr(exact, fast) < 100, "bf16 autocast must actually change the computation"


def test_precision_choices() -> None:
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        load_codec("taef2", precision="half")
    with pytest.raises(ValueError, match="fp32 weights"):
        load_codec("taef2", dtype=torch.float16, precision="bf16")
    assert load_codec("taef2", dtype=torch.bfloat16).precision == "fp32"


def test_chunked_equals_whole_batch(small_frames: torch.Tensor) -> None:
    whole, chunked = load_codec("taef2", batch_size=8, precision="fp32"), load_codec("taef2", batch_size=2, precision="fp32")
    with torch.no_grad():
        latents = whole.encode(small_frames)
        torch.testing.assert_close(chunked.encode(small_frames), latents, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(chunked.decode(latents), whole.decode(latents), atol=1e-5, rtol=1e-5)


def test_gradients_flow_to_latents_and_images(taef2: LatentCodec, small_frames: torch.Tensor) -> None:
    images = small_frames[:3].clone().requires_grad_(True)
    latents = taef2.encode(images)
    latents.square().mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0

    latents = latents.detach().requires_grad_(True)
    taef2.decode(latents).mean().backward()
    assert latents.grad is not None and torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
    assert all(p.grad is None for p in taef2.parameters())


def test_bad_inputs_raise(taef2: LatentCodec) -> None:
    with pytest.raises(ValueError, match=r"60x64.*fit_to_multiple"):
        taef2.encode(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        taef2.encode(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="4-D"):
        taef2.encode(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="32 channels"):
        taef2.decode(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        taef2.encode(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="taef2, taesd, sd-vae"):
        load_codec("vqgan")


def test_taesd_from_saved_folder(tmp_path: Path, small_frames: torch.Tensor) -> None:
    vae = tiny_taesd().eval()
    vae.save_pretrained(tmp_path / "taesd")
    codec = load_codec("taesd", model=tmp_path / "taesd", batch_size=3, precision="fp32")
    assert isinstance(codec, DiffusersCodec)
    assert (codec.name, codec.latent_channels) == ("taesd", 4)
    assert not any(p.requires_grad for p in codec.parameters())
    frames = small_frames[:4]
    with torch.no_grad():
        latents = codec.encode(frames)
        decoded = codec.decode(latents)
        expected_latents = vae.encode(frames * 2 - 1).latents  # AutoencoderTiny takes [-1,1], latents pre-scaled
        expected_images = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)
    assert latents.shape == (4, 4, 8, 8) and decoded.shape == (4, 3, 64, 64)
    torch.testing.assert_close(latents, expected_latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoded, expected_images, atol=1e-5, rtol=1e-5)
    assert codec.config()["model"] == str((tmp_path / "taesd").resolve())


@pytest.mark.parametrize("layout", ["sd_folder", "vae_folder"])
def test_sd_vae_from_saved_folder(tmp_path: Path, small_frames: torch.Tensor, layout: str) -> None:
    vae = tiny_kl().eval()
    vae.save_pretrained(tmp_path / "sd" / "vae")
    folder = tmp_path / "sd" if layout == "sd_folder" else tmp_path / "sd" / "vae"
    codec = load_codec("sd-vae", model=folder, precision="fp32")
    assert (codec.name, codec.latent_channels) == ("sd-vae", 4)
    frames = small_frames[:2]
    with torch.no_grad():
        latents = codec.encode(frames)
        decoded = codec.decode(latents)
        expected = vae.encode(frames * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        expected_images = ((vae.decode(latents / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
        again = codec.encode(frames)
    assert latents.shape == (2, 4, 8, 8) and decoded.shape == (2, 3, 64, 64)
    assert decoded.min() >= 0 and decoded.max() <= 1
    torch.testing.assert_close(latents, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoded, expected_images, atol=1e-5, rtol=1e-5)
    assert torch.equal(latents, again), "encoding uses the posterior mode: deterministic"


def test_sd_vae_shift_factor_and_constructed_model(small_frames: torch.Tensor) -> None:
    vae = tiny_kl(scaling_factor=0.5, shift_factor=0.1).eval()
    codec = DiffusersCodec(vae, name="sd-vae")
    frames = small_frames[:2]
    with torch.no_grad():
        latents = codec.encode(frames)
        expected = (vae.encode(frames * 2 - 1).latent_dist.mode() - 0.1) * 0.5
        torch.testing.assert_close(latents, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            codec.decode(latents), ((vae.decode(latents / 0.5 + 0.1).sample + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5
        )
    with pytest.raises(ValueError, match="AutoencoderTiny"):
        load_codec("taesd", model=vae)


@pytest.mark.fast
def test_missing_models_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"vstyle-missing/no-such-vae.*model="):
        load_codec("sd-vae", model="vstyle-missing/no-such-vae")
    with pytest.raises(WeightsNotFoundError, match="there is no folder .*missing"):
        load_codec("taesd", model=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="holds no AutoencoderKL config.json"):
        load_codec("sd-vae", model=tmp_path / "empty")


@pytest.mark.fast
def test_default_hub_model_offline_error() -> None:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("madebyollin/taesd", "config.json"), str):
        pytest.skip("madebyollin/taesd is in the local Hugging Face cache")
    with pytest.raises(WeightsNotFoundError, match=r"madebyollin/taesd.*HF_HUB_OFFLINE.*load_codec\('taesd', model="):
        load_codec("taesd")

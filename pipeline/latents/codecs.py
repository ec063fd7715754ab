"""Latent codecs: images in [0,1] <-> latents of a diffusion model's autoencoder.

Every codec maps images (N,3,H,W), RGB in [0,1], H and W multiples of 8, to
latents (N,C,H/8,W/8) in the codec's "unit" space (Stable Diffusion VAE
latents already multiplied by its scaling factor), and back. Stylizers and
policies use ``latent_channels`` and never hard-code scales or channel counts.

Codecs (``load_codec`` names):

- ``taef2``: the FLUX.2 tiny autoencoder (madebyollin/taesd, MIT), shared
  weights found by ``pipeline.io.weights``; 32 channels; works offline.
- ``taesd``: TAESD for SD1.x latents, diffusers ``AutoencoderTiny``; 4 channels.
- ``sd-vae``: a Stable Diffusion VAE, diffusers ``AutoencoderKL``; 4 channels.

The two diffusers codecs load from a local folder or the Hugging Face hub
(cache); ``WeightsNotFoundError`` says how to supply a folder when neither works.

``load_warp_codec``: the codec that re-encodes the warped frames of a policy's pixel-warp observation
(``WARP_ENCODERS``): the codec itself, or TAEF2 with the light encoder distilled from its own
(``taef2-lite``, shipped in ``pipeline/latents/pretrained/``; ``pipeline.latents.distill``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.io.precision import Precision, autocast, resolve_precision
from pipeline.io.weights import WeightsNotFoundError
from pipeline.latents.taef2 import TAEF2Decoder, TAEF2Encoder, load_taef2

CODEC_NAMES = ("taef2", "taesd", "sd-vae")
DIFFUSERS_CLASSES = {"taesd": "AutoencoderTiny", "sd-vae": "AutoencoderKL"}
DEFAULT_HUB_MODELS = {"taesd": "madebyollin/taesd", "sd-vae": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
TAEF2_MODEL_ID = "madebyollin/taesd:taef2"
WARP_ENCODERS = ("auto", "codec", "taef2-lite")  # what re-encodes the pixel-warp observation (load_warp_codec)
LITE_ENCODER_DIR = Path(__file__).parent / "pretrained" / "taef2-lite"  # the shipped distilled encoder


class LatentCodec(nn.Module, ABC):
    """Encode images to latents and decode them back, in chunks of ``batch_size`` frames.

    Subclasses implement ``_encode_chunk`` (images in [0,1] on the codec's
    device and dtype -> unit-space latents) and ``_decode_chunk`` (latents ->
    images, roughly [0,1]; clamping is done here). Both directions are
    differentiable; callers wrap them in ``torch.no_grad()`` when they want.
    Results are on the codec's device, in the input's floating dtype.
    ``precision`` ("fp32" or "bf16", see ``pipeline.io.precision``) is the compute
    precision: bf16 runs the network under autocast with fp32 weights.
    """

    downscale: int = 8

    def __init__(self, name: str, latent_channels: int, model_id: str, batch_size: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.name = name
        self.latent_channels = latent_channels
        self.model_id = model_id
        self.batch_size = batch_size
        self.precision: Precision = "fp32"

    @abstractmethod
    def _encode_chunk(self, images: Tensor) -> Tensor:
        """Images (n,3,H,W) in [0,1] -> latents (n,C,H/8,W/8)."""

    @abstractmethod
    def _decode_chunk(self, latents: Tensor) -> Tensor:
        """Latents (n,C,h,w) -> images (n,3,8h,8w), approximately in [0,1]."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def config(self) -> dict[str, Any]:
        """What identifies this codec's latent space (part of latent cache keys)."""
        return {"name": self.name, "model": self.model_id, "dtype": str(self.dtype).removeprefix("torch."),
                "precision": self.precision}

    def encode(self, images: Tensor) -> Tensor:
        """Latents (N,C,H/8,W/8) of ``images`` (N,3,H,W) in [0,1]; H, W multiples of 8."""
        _check_batch(images, "images")
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.downscale or width % self.downscale or height == 0 or width == 0:
            raise ValueError(
                f"image size {height}x{width} (HxW) is not a positive multiple of {self.downscale}; "
                f"resize or pad the frames first, e.g. with pipeline.io.images.fit_to_multiple(images, {self.downscale})"
            )
        return self._chunked(self._encode_chunk, images)

    def decode(self, latents: Tensor) -> Tensor:
        """Images (N,3,8h,8w) in [0,1] (clamped) of ``latents`` (N,C,h,w)."""
        _check_batch(latents, "latents")
        if latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"{self.name} latents must have {self.latent_channels} channels, got shape {tuple(latents.shape)}"
            )
        return self._chunked(self._decode_chunk, latents).clamp(0, 1)

    def _chunked(self, fn: Callable[[Tensor], Tensor], batch: Tensor) -> Tensor:
        device, dtype = self.device, self.dtype
        with autocast(self.precision, device):
            outputs = [fn(chunk.to(device, dtype)) for chunk in batch.split(self.batch_size)]
        return torch.cat(outputs).to(batch.dtype)


def _check_batch(batch: Tensor, what: str) -> None:
    if not isinstance(batch, Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"{what} must be a 4-D tensor (N,C,H,W), got {shape}")
    if not batch.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got {batch.dtype}")
    if batch.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch")


class TAEF2Codec(LatentCodec):
    """TAEF2 (tiny FLUX.2 autoencoder, madebyollin/taesd, MIT): 32 latent channels.

    The network takes images in [0,1] directly (checked: reconstruction PSNR
    29-33 dB on photos with [0,1], about 10 dB with [-1,1]); its raw latents
    (std ~0.85) are the unit space.
    """

    def __init__(self, encoder: TAEF2Encoder, decoder: TAEF2Decoder, model_id: str = TAEF2_MODEL_ID,
                 batch_size: int = 2) -> None:
        super().__init__("taef2", encoder[-1].out_channels, model_id, batch_size)
        # channels-last convolutions: ~20% faster on the CPU (256 px: 255 -> 200 ms encode per frame)
        self.encoder = encoder.to(memory_format=torch.channels_last)
        self.decoder = decoder.to(memory_format=torch.channels_last)

    def _encode_chunk(self, images: Tensor) -> Tensor:
        return self.encoder(images.contiguous(memory_format=torch.channels_last)).contiguous()

    def _decode_chunk(self, latents: Tensor) -> Tensor:
        return self.decoder(latents.contiguous(memory_format=torch.channels_last)).contiguous()


def _diffusers_class(name: str) -> type:
    """The diffusers autoencoder class of codec ``name`` (diffusers is imported here: it is slow to import)."""
    import diffusers

    return getattr(diffusers, DIFFUSERS_CLASSES[name])


class DiffusersCodec(LatentCodec):
    """A diffusers ``AutoencoderTiny`` (``taesd``) or ``AutoencoderKL`` (``sd-vae``).

    Images go in as [-1,1] (the diffusers convention for both classes).
    Latents are ``(raw - shift_factor) * scaling_factor`` with the model
    config's values (AutoencoderTiny: 1 and 0, its latents are already scaled;
    SD1.x VAE: 0.18215 and none), as diffusers pipelines do. AutoencoderKL
    encodes deterministically with the posterior's mode.
    """

    def __init__(self, vae: nn.Module, name: str | None = None, model_id: str | None = None, batch_size: int = 8) -> None:
        kinds = [kind for kind in DIFFUSERS_CLASSES if isinstance(vae, _diffusers_class(kind))]
        if not kinds:
            raise TypeError(f"DiffusersCodec needs a diffusers AutoencoderTiny or AutoencoderKL, got {type(vae).__name__}")
        kind = kinds[0]
        config = vae.config
        super().__init__(
            name or kind,
            int(config.latent_channels),
            model_id or config.get("_name_or_path") or type(vae).__name__,
            batch_size,
        )
        self.kind = kind
        self.vae = vae
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.get("shift_factor") or 0.0)

    def _encode_chunk(self, images: Tensor) -> Tensor:
        encoded = self.vae.encode(images * 2 - 1)
        raw = encoded.latent_dist.mode() if self.kind == "sd-vae" else encoded.latents
        return (raw - self.shift_factor) * self.scaling_factor

    def _decode_chunk(self, latents: Tensor) -> Tensor:
        images = self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample
        return (images + 1) / 2


def load_diffusers_vae(name: str, model: str | os.PathLike | None = None) -> tuple[nn.Module, str]:
    """The diffusers autoencoder of codec ``name`` ("taesd" or "sd-vae") and its model id.

    ``model``: a local folder (holding ``config.json``, or a Stable Diffusion
    folder with a ``vae/`` subfolder) or a hub id (default
    ``DEFAULT_HUB_MODELS[name]``; the ``vae`` subfolder is tried first for
    ``sd-vae``). Raises ``WeightsNotFoundError`` when nothing can be loaded.
    """
    if name not in DIFFUSERS_CLASSES:
        raise ValueError(f"unknown diffusers codec {name!r}; known: {', '.join(DIFFUSERS_CLASSES)}")
    cls = _diffusers_class(name)
    source = str(model if model is not None else DEFAULT_HUB_MODELS[name])
    path = Path(source).expanduser()
    if path.is_dir():
        for folder in (path, path / "vae"):
            if (folder / "config.json").is_file():
                return cls.from_pretrained(folder), str(folder.resolve())
        raise WeightsNotFoundError(
            f"{name}: the folder {path} holds no {cls.__name__} config.json, neither itself nor in a vae/ subfolder"
        )
    if path.exists():
        raise WeightsNotFoundError(f"{name}: {path} is a file; pass the folder written by {cls.__name__}.save_pretrained")
    if path.is_absolute() or source.startswith((".", "~")):  # a path, never a hub id
        raise WeightsNotFoundError(f"{name}: there is no folder {path}; pass an existing {cls.__name__} folder or a hub id")
    subfolders = ("vae", None) if name == "sd-vae" else (None,)
    errors = []
    for subfolder in subfolders:
        try:
            return cls.from_pretrained(source, subfolder=subfolder), source
        except (OSError, ValueError) as error:  # hub offline / not cached / not a valid repo id
            errors.append(str(error).splitlines()[0].rstrip("."))
    offline = os.environ.get("HF_HUB_OFFLINE")
    raise WeightsNotFoundError(
        f"cannot load the {name} autoencoder ({cls.__name__}) '{source}': no local folder of that name, and the "
        f"Hugging Face hub gave no copy ({'HF_HUB_OFFLINE=' + offline + '; ' if offline else ''}{'; '.join(dict.fromkeys(errors))}). "
        f"On a machine with internet, download it (e.g. `huggingface-cli download {source} --local-dir DIR`) and "
        f"pass the folder: load_codec({name!r}, model='DIR') (a folder with config.json, or a Stable Diffusion "
        f"folder with a vae/ subfolder)."
    )


def load_codec(
    name: str = "taef2",
    model: str | os.PathLike | nn.Module | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 2,
    precision: str = "auto",
) -> LatentCodec:
    """A frozen codec in eval mode on ``device``/``dtype``.

    ``precision``: "auto" (bf16 autocast where ``device`` runs it natively,
    else fp32), "fp32" or "bf16"; only fp32 weights take bf16 autocast.

    ``model``: for ``taef2`` a folder holding ``taef2_encoder.pth`` and
    ``taef2_decoder.pth`` (default: ``pipeline.io.weights`` lookup); for
    ``taesd``/``sd-vae`` a local folder, a hub id, or a constructed diffusers
    model (which is then moved, put in eval mode and frozen in place).
    """
    if name not in CODEC_NAMES:
        raise ValueError(f"unknown codec {name!r}; known codecs: {', '.join(CODEC_NAMES)}")
    if name == "taef2":
        if isinstance(model, nn.Module):
            raise ValueError("taef2 takes a weights folder as model, not a module")
        codec: LatentCodec = TAEF2Codec(*load_taef2(model), batch_size=batch_size)
    elif isinstance(model, nn.Module):
        codec = DiffusersCodec(model, name=name, batch_size=batch_size)
        if codec.kind != name:
            raise ValueError(f"codec {name!r} needs a {DIFFUSERS_CLASSES[name]}, got {type(model).__name__}")
    else:
        vae, model_id = load_diffusers_vae(name, model)
        codec = DiffusersCodec(vae, name=name, model_id=model_id, batch_size=batch_size)
    resolved = resolve_precision(precision, device)
    if precision == "bf16" and dtype != torch.float32:
        raise ValueError(f"precision 'bf16' runs fp32 weights under autocast; got dtype {dtype}, use precision='fp32'")
    codec = codec.to(device=device, dtype=dtype).eval().requires_grad_(False)
    codec.precision = resolved if dtype == torch.float32 else "fp32"
    return codec


def check_warp_encoder(name: str) -> str:
    if name not in WARP_ENCODERS:
        raise ValueError(f"unknown warp encoder {name!r}; choose one of {', '.join(WARP_ENCODERS)}")
    return name


def load_warp_codec(codec: LatentCodec, warp_encoder: str = "codec",
                    folder: str | os.PathLike = LITE_ENCODER_DIR) -> LatentCodec:
    """The codec whose ``encode`` re-encodes the warped frames of the pixel-warp observation.

    ``"codec"``: ``codec`` itself. ``"auto"``: ``"taef2-lite"`` for a TAEF2 codec, else ``codec``.
    ``"taef2-lite"`` (TAEF2 codecs only): a TAEF2 codec with the light encoder saved in ``folder``
    (``pipeline.latents.taef2.TAEF2_LITE``, distilled from TAEF2's) and ``codec``'s own decoder, on its device and
    precision. The observation re-encodes a warped previous output and that output and keeps their difference,
    so about half of the light encoder's own error cancels (see ``LITE_ENCODER_DIR``'s MODEL_CARD.md for what it
    changes in a policy's results).
    """
    if check_warp_encoder(warp_encoder) == "auto":
        warp_encoder = "taef2-lite" if isinstance(codec, TAEF2Codec) else "codec"
    if warp_encoder == "codec":
        return codec
    if not isinstance(codec, TAEF2Codec):
        raise ValueError(f"the {warp_encoder} warp encoder is distilled from TAEF2's; codec {codec.name} has its own "
                         "latent space (use warp encoder 'codec')")
    encoder = TAEF2Encoder.from_pretrained(folder)
    lite = TAEF2Codec(encoder, codec.decoder, f"{TAEF2_MODEL_ID}+{warp_encoder}", codec.batch_size)
    lite = lite.to(device=codec.device, dtype=codec.dtype).eval().requires_grad_(False)
    lite.precision = codec.precision
    return lite

"""Helpers shared by several test modules (plain functions; shared fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rewards.flo import read_flo

# REINFORCE options whose untrained policy (gate 0) is exactly the frame-by-frame baseline (the default agent
# starts at a pixel-warp flow-blend instead)
FROM_BASELINE = {"head": "residual", "flow_warp": "latent"}


def load_rgb(path: Path) -> torch.Tensor:
    """(1,3,H,W) float in [0,1]."""
    array = np.array(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def load_binary(path: Path) -> torch.Tensor:
    """(1,1,H,W) bool: True where the PNG is white."""
    return torch.from_numpy(np.array(Image.open(path).convert("L")) > 127)[None, None]


def load_sintel_pair(data_dir: Path, scene: str) -> dict[str, torch.Tensor]:
    """A ground-truth sample of ``../shared/data/flow_gt``: frames 2 and 3 (1,3,H,W), the flow 2 -> 3 (1,2,H,W),
    and (1,1,H,W) bool maps of the pixels occluded in frame 3 and of those without valid ground truth."""
    root = data_dir / "flow_gt" / scene
    return {
        "frame2": load_rgb(root / "frame_0002.png"),
        "frame3": load_rgb(root / "frame_0003.png"),
        "flow": read_flo(root / "flow" / "frame_0002.flo").unsqueeze(0),
        "occluded": load_binary(root / "occlusions" / "frame_0002.png"),
        "invalid": load_binary(root / "invalid" / "frame_0002.png"),
    }


def shifted_crops(image: torch.Tensor, top: int, left: int, size: tuple[int, int], shifts: list[tuple[int, int]]):
    """Crops of ``image`` such that crop k equals crop 0 moved by shifts[k] = (dx, dy): flow 0->k = +shift."""
    height, width = size
    crops = [image[..., top - dy : top - dy + height, left - dx : left - dx + width] for dx, dy in shifts]
    return torch.cat(crops)


# Tiny random Stable Diffusion 1.5 class components (the real diffusers/transformers classes, sizes as in
# diffusers' own pipeline tests): SD and BLIP-Diffusion weights cannot be had offline.
TINY_SD_LAYERS = {  # the tiny UNet's decoder: up_blocks.0 = CrossAttnUpBlock2D, up_blocks.1 = UpBlock2D
    "feature_layers": ("up_blocks.0.resnets.1", "up_blocks.1.resnets.1"),
    "attention_layers": ("up_blocks.0.attentions.1", "up_blocks.0.attentions.2"),
}


def tiny_tokenizer():
    """A CLIPTokenizer over the byte-level alphabet (no merges), built in memory."""
    import transformers
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_text_config(tokenizer):
    """A 2-layer, 32-wide CLIPTextConfig for ``tokenizer``."""
    import transformers

    return transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_sd_parts(calibration: torch.Tensor) -> dict:
    """unet, scheduler (SD's DDIM settings), codec (a ``DiffusersCodec`` of an AutoencoderKL), text_encoder and
    tokenizer, randomly initialised from seed 0; the VAE's scaling factor gives unit-std latents on the
    ``calibration`` images (N,3,H,W) in [0,1], as SD's does on photos."""
    import diffusers
    import transformers

    from pipeline.latents.codecs import DiffusersCodec

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text_encoder = transformers.CLIPTextModel(tiny_text_config(tokenizer)).eval()
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    ).eval()
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64, scaling_factor=1.0,
    ).eval()
    with torch.no_grad():
        raw_std = DiffusersCodec(vae).encode(calibration).std().item()
    vae.register_to_config(scaling_factor=1.0 / raw_std)
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet, "scheduler": scheduler, "codec": DiffusersCodec(vae).eval(), "text_encoder": text_encoder,
            "tokenizer": tokenizer}


def save_sd_folder(parts: dict, folder: Path) -> Path:
    """Write ``tiny_sd_parts`` as a diffusers model folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/)."""
    for name in ("unet", "scheduler", "text_encoder", "tokenizer"):
        parts[name].save_pretrained(folder / name)
    parts["codec"].vae.save_pretrained(folder / "vae")
    return folder

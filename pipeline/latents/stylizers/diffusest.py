"""DiffuseST: training-free style transfer with a Stable Diffusion 1.5 class model.

Port of DiffuseST (Hu, Zhuang and Gao, "DiffuseST: Unleashing the Capability
of the Diffusion Model for Style Transfer", ACM MM Asia 2024, arXiv:2410.15007;
code github.com/I2-Multimedia-Lab/DiffuseST), built on Plug-and-Play Diffusion
Features (Tumanyan et al., CVPR 2023), with diffusers components:

1. DDIM-invert the content frame and the style image (``ddim_inversion``),
   keeping the latent of every sampling timestep.
2. Denoise from the content's inverted noise. Each UNet call batches up to
   three branches: the content branch (the stored inverted content latent of
   that timestep), the style branch (likewise for the style) and the output
   branch (twice with classifier-free guidance). ``pnp_injection`` copies the
   content branch's decoder ResBlock features and self-attention queries/keys
   into the output branch during the content step range, and the style
   branch's self-attention keys/values during the style step range.
3. The output branch is conditioned on the style image's BLIP-Diffusion
   embedding (its Q-Former's query tokens spliced into the context-aware CLIP
   text encoder, as DiffuseST does) when a ``style_encoder`` is given, else on
   the text ``prompt``.

DiffuseST's key idea is to *separate* the two injections in time: content
first, style in the last part of the schedule. Its released code (README:
"alpha default to 0.1", "--alpha 0.2: perform style injection for more
steps"; run.py keeps the style's inverted latents only for the last alpha of
the timesteps) injects the style keys/values over the final 10% of the
schedule and the content ResBlock features and attention queries/keys over
the steps before, into the ResBlocks of up_blocks 1-2 and the self-attention
of up_blocks.1 (layers 1, 2) to up_blocks.3 (PnP's "decoder layers 4-11").
Those are the defaults below (read from the code as mirrored in public forks;
the paper's text was not at hand). PnP's own defaults, for reference:
features on up_blocks.1.resnets.1 over the first 80% of the steps,
queries/keys over the first 50%.

Where this port differs from the release (run.py / pnp_style.py, as mirrored in public forks), and why:

- Sampling: the release samples with the BLIP-Diffusion checkpoint's PNDM scheduler (50 steps) from latents
  inverted over ``ddpm_steps`` = 999 steps. Here sampling is DDIM (``ddim_from_config`` of the model's
  scheduler config): the source branches replay the stored inverted latent of each sampling timestep, which
  is exact only for the deterministic first-order DDIM update that the inversion reverses; PNDM's
  multistep update does not retrace that trajectory. The inversion length is configurable
  (``inversion_steps``, up to the release's 999; its timesteps must include the sampling ones).
- Step ranges: in the mirror read here (omkarh20/DiffuseST) the source row is the content's at the steps
  of ``content_step = timesteps[:int(ddpm_steps * alpha)]`` and the style's at the others; with
  ddpm_steps 999 and alpha 0.1 that is the first 99 entries of the 50-step schedule, i.e. every step, so
  the style latents would never enter. The defaults here follow the method as its README describes
  (alpha = the fraction with style injection): content first, style over the last 10%, each range
  configurable.
- Guidance: as the release, 7.5 with the unconditional row without the style tokens; its negative
  prompt is ``RELEASE_NEGATIVE_PROMPT`` (``negative_prompt="release"``); the default here is the empty
  prompt of plain classifier-free guidance.

Each frame is encoded and stylized on its own, so its latent depends only on
that frame, the style image and the settings, not on the batch it came in
(deterministic DDIM, eta = 0 by default; with eta > 0 the noise generator is
re-seeded with ``seed`` for every frame).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pipeline.io.images import restore_size, to_uint8
from pipeline.io.weights import WeightsNotFoundError
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers.base import Stylizer
from pipeline.latents.stylizers.blip_qformer import qformer_class
from pipeline.latents.stylizers.ddim_inversion import ddim_from_config, ddim_invert
from pipeline.latents.stylizers.pnp_injection import (
    InjectionRecord,
    PnPInjector,
    StepPlan,
)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD15_FEATURE_LAYERS = tuple(f"up_blocks.{block}.resnets.{layer}" for block in (1, 2) for layer in range(3))
SD15_ATTENTION_LAYERS = ("up_blocks.1.attentions.1", "up_blocks.1.attentions.2") + tuple(
    f"up_blocks.{block}.attentions.{layer}" for block in (2, 3) for layer in range(3)
)
StepRange = tuple[float, float]
RELEASE = "release"
# the negative prompt of DiffuseST's released pnp_style.py (PnP's was "ugly, blurry, black, low res, unrealistic")
RELEASE_NEGATIVE_PROMPT = ("over-exposure, under-exposure, saturated, duplicate, out of frame, lowres, cropped, worst "
                           "quality, low quality, jpeg artifacts, morbid, mutilated, out of frame, ugly, bad anatomy, "
                           "bad proportions, deformed, blurry, duplicate")


@dataclass(frozen=True)
class DiffuseSTConfig:
    """Settings of the DiffuseST stylizer (each field's help says what it does).

    Step ranges are (start, end) fractions of the sampling schedule: step i (0 = noisiest) is in a range
    when start <= i / num_inference_steps < end ((0, 0) = never). ``model`` and ``blip_diffusion`` say where
    ``from_pretrained`` loads the components from; the cache key (``config()``) records the loaded ones instead.
    """

    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "Stable Diffusion 1.5 class model: hub id or local diffusers folder"})
    blip_diffusion: str | None = field(default=None, metadata={
        "help": "BLIP-Diffusion checkpoint whose Q-Former embeds the style image (none: condition on the prompt)"})
    num_inference_steps: int = field(default=50, metadata={"help": "DDIM sampling steps"})
    inversion_steps: int | None = field(default=None, metadata={
        "help": "DDIM inversion steps; their timesteps must include the sampling ones (none: num_inference_steps; "
                "the release: 999)"})
    content_feature_range: StepRange = field(default=(0.0, 0.9), metadata={
        "help": "step range (start end) injecting the content branch's decoder ResBlock features"})
    content_attention_range: StepRange = field(default=(0.0, 0.9), metadata={
        "help": "step range (start end) injecting the content branch's self-attention queries and keys"})
    style_attention_range: StepRange = field(default=(0.9, 1.0), metadata={
        "help": "step range (start end) injecting the style branch's self-attention keys and values"})
    feature_layers: tuple[str, ...] = field(default=SD15_FEATURE_LAYERS, metadata={
        "help": "UNet ResnetBlock2D names whose residual branch is injected"})
    attention_layers: tuple[str, ...] = field(default=SD15_ATTENTION_LAYERS, metadata={
        "help": "UNet modules whose self-attention (attn1) layers are injected"})
    guidance_scale: float = field(default=7.5, metadata={
        "help": "classifier-free guidance of the output branch (<= 1: none)"})
    prompt: str = field(default="a painting", metadata={
        "help": "output-branch text when no style encoder is given (describe the style)"})
    negative_prompt: str = field(default="", metadata={
        "help": f"the unconditional text of guidance ('{RELEASE}': the DiffuseST release's)"})
    inversion_prompt: str = field(default="", metadata={
        "help": "conditioning of the inversions and of the source branches"})
    eta: float = field(default=0.0, metadata={"help": "DDIM stochasticity of the output branch (0 = deterministic)"})
    seed: int = field(default=0, metadata={"help": "seeds the eta > 0 noise, identically for every frame"})

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")
        if self.inversion_steps is not None and self.inversion_steps < self.num_inference_steps:
            raise ValueError(f"inversion_steps must be at least num_inference_steps ({self.num_inference_steps}), "
                             f"got {self.inversion_steps}")
        if self.negative_prompt == RELEASE:
            object.__setattr__(self, "negative_prompt", RELEASE_NEGATIVE_PROMPT)
        for name in ("content_feature_range", "content_attention_range", "style_attention_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0.0 <= value[0] <= value[1] <= 1.0:
                raise ValueError(f"{name} must be (start, end) with 0 <= start <= end <= 1, got {getattr(self, name)}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "feature_layers", tuple(self.feature_layers))
        object.__setattr__(self, "attention_layers", tuple(self.attention_layers))
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def steps(self, step_range: StepRange) -> list[int]:
        """Indices i of the sampling steps (0 = noisiest) with start <= i / num_inference_steps < end."""
        start, end = step_range
        total = self.num_inference_steps
        return [i for i in range(total) if start <= i / total < end]


@dataclass
class DiffuseSTStyle:
    """What ``prepare_style`` keeps: the style image (1,3,H,W) in [0,1] (CPU), the
    output-branch conditioning (1,L,D), and the style's inverted latents per frame size."""

    image: Tensor
    cond: Tensor
    trajectories: dict[tuple[int, int], dict[int, Tensor]] = field(default_factory=dict)


def fit_style(style_image: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre-crop (1,3,H,W) to the aspect ratio of ``size`` = (H', W') and resize to it."""
    height, width = style_image.shape[-2:]
    target_h, target_w = size
    if height * target_w > width * target_h:
        crop = max(1, round(width * target_h / target_w))
        top = (height - crop) // 2
        style_image = style_image[..., top : top + crop, :]
    else:
        crop = max(1, round(height * target_w / target_h))
        left = (width - crop) // 2
        style_image = style_image[..., left : left + crop]
    return restore_size(style_image, (target_h, target_w)).clamp(0, 1)


def _load_component(loader: Callable[..., Any], source: str, subfolder: str | None, what: str) -> Any:
    """``loader(source, subfolder=...)``; WeightsNotFoundError naming ``what`` when it cannot be had."""
    path = Path(source).expanduser()
    where = f" (subfolder {subfolder})" if subfolder else ""
    if path.is_dir():
        if subfolder is not None and not (path / subfolder).is_dir():
            raise WeightsNotFoundError(f"{what}: the folder {path} has no {subfolder}/ subfolder (a diffusers folder "
                                       f"written by save_pretrained or `huggingface-cli download` is expected)")
        try:
            return loader(str(path), subfolder=subfolder)
        except (OSError, ValueError) as error:
            raise WeightsNotFoundError(f"cannot load the {what} from the folder {path}{where}: {error}") from error
    try:
        return loader(source, subfolder=subfolder)
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE")
        raise WeightsNotFoundError(
            f"cannot load the {what} from '{source}'{where}: no local folder of that name, and the Hugging Face hub "
            f"gave no copy ({'HF_HUB_OFFLINE=' + offline + '; ' if offline else ''}{str(error).splitlines()[0]}). "
            f"On a machine with internet, download it (`huggingface-cli download {source} --local-dir DIR`) and "
            f"pass DIR."
        ) from error


class BlipDiffusionStyleEncoder(nn.Module):
    """The style image's BLIP-Diffusion embedding (Li et al., NeurIPS 2023), as DiffuseST conditions on it.

    The Q-Former (diffusers' ``Blip2QFormerModel``) turns the image into query
    tokens; ``text_encoder`` (``ContextCLIPTextModel``) splices them into the
    prompt "a {subject} {prompt}" (repeated ``prompt_reps`` times, as
    ``BlipDiffusionPipeline._build_prompt``) at ``ctx_begin_pos``. DiffuseST
    uses an empty subject and prompt. forward: (1,3,H,W) in [0,1] -> (1,L,D)
    encoder hidden states for the UNet.

    diffusers' BLIP-Diffusion Q-Former (deprecated since diffusers 0.36)
    calls two PreTrainedModel methods that transformers 5 removed (and
    diffusers 0.42 cannot run with transformers 4: huggingface_hub
    conflict), and it calls transformers' Q-Former attention with the
    transformers 4 signature; ``blip_qformer.qformer_class`` adapts both, so
    the checkpoint loads and runs unchanged.
    """

    def __init__(self, qformer: nn.Module, text_encoder: nn.Module, tokenizer, image_processor, ctx_begin_pos: int = 2,
                 mean: list[float] | None = None, std: list[float] | None = None, subject: str = "",
                 prompt: str = "", prompt_reps: int = 20, model_id: str = "blip-diffusion") -> None:
        super().__init__()
        self.qformer = qformer
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.ctx_begin_pos = ctx_begin_pos
        self.mean, self.std = mean, std
        self.subject = subject
        self.text = ", ".join([f"a {subject} {prompt.strip()}"] * prompt_reps)
        self.model_id = model_id

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, **kwargs) -> BlipDiffusionStyleEncoder:
        """The Q-Former, text encoder, tokenizer and image processor of a BLIP-Diffusion checkpoint.

        ``source``: hub id (e.g. "Salesforce/blipdiffusion") or local folder; its
        UNet and VAE are not loaded. The Q-Former also loads the
        "bert-base-uncased" tokenizer (hub or cache) unless its config names one.
        """
        from diffusers.pipelines import BlipDiffusionPipeline
        from transformers import CLIPTokenizer

        blip = importlib.import_module(BlipDiffusionPipeline.__module__)  # the module moved in diffusers 0.36
        source = str(source)
        what = "BLIP-Diffusion style encoder"
        settings = _load_component(lambda path, subfolder: BlipDiffusionPipeline.load_config(path), source, None, what)
        return cls(
            qformer=_load_component(qformer_class(blip).from_pretrained, source, "qformer", what),
            text_encoder=_load_component(blip.ContextCLIPTextModel.from_pretrained, source, "text_encoder", what),
            tokenizer=_load_component(CLIPTokenizer.from_pretrained, source, "tokenizer", what),
            image_processor=_load_component(blip.BlipImageProcessor.from_pretrained, source, "image_processor", what),
            ctx_begin_pos=settings.get("ctx_begin_pos", 2), mean=settings.get("mean"), std=settings.get("std"),
            model_id=source, **kwargs,
        )

    @torch.no_grad()
    def forward(self, style_image: Tensor) -> Tensor:
        from PIL import Image

        device = next(self.qformer.parameters()).device
        pixels = self.image_processor.preprocess(Image.fromarray(to_uint8(style_image)[0]), image_mean=self.mean,
                                                 image_std=self.std, return_tensors="pt")["pixel_values"]
        query = self.qformer(image_input=pixels.to(device, self.qformer.dtype), text_input=[self.subject],
                             return_dict=False)
        max_length = self.text_encoder.config.max_position_embeddings - query.shape[1]
        ids = self.tokenizer([self.text], padding="max_length", truncation=True, max_length=max_length,
                             return_tensors="pt").input_ids.to(device)
        return self.text_encoder(input_ids=ids, ctx_embeddings=query, ctx_begin_pos=[self.ctx_begin_pos])[0]


class DiffuseSTStylizer(Stylizer):
    """DiffuseST per-frame stylizer on diffusers components (see the module docstring).

    unet: UNet2DConditionModel; scheduler: any diffusers scheduler, a
    DDIMScheduler is built from its config (``ddim_from_config``: clip_sample
    and thresholding must be off); codec: a ``pipeline.latents.codecs.LatentCodec`` of
    the UNet's latent space (``DiffusersCodec`` of its VAE, or TAESD); text_encoder,
    tokenizer: the CLIP text model and tokenizer of the UNet; style_encoder: an
    optional module mapping a style image (1,3,H,W) in [0,1] to the output
    branch's encoder hidden states (1,L,D), e.g. ``BlipDiffusionStyleEncoder``.
    """

    name = "diffusest"
    codecs = ("sd-vae",)  # its model's own VAE
    owns_codec = True

    def __init__(self, unet: nn.Module, scheduler, codec, text_encoder: nn.Module, tokenizer,
                 style_encoder: nn.Module | None = None, config: DiffuseSTConfig | None = None) -> None:
        super().__init__(codec)
        self.cfg = config or DiffuseSTConfig()
        if codec.latent_channels != unet.config.in_channels:
            raise ValueError(f"codec {codec.name!r} has {codec.latent_channels} latent channels but the UNet takes "
                             f"{unet.config.in_channels}; use the codec of the UNet's own autoencoder")
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = ddim_from_config(scheduler.config)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.style_encoder = style_encoder.eval().requires_grad_(False) if style_encoder is not None else None
        self._check_inversion_schedule()
        self.injector = PnPInjector(unet, self.cfg.feature_layers, self.cfg.attention_layers)
        self.last_injections: list[InjectionRecord] = []
        self._prompts: dict[str, Tensor] = {}

    @classmethod
    def from_pretrained(cls, config: DiffuseSTConfig | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> DiffuseSTStylizer:
        """Load the components from ``config.model``, a hub id or a local diffusers folder.

        model: a Stable Diffusion 1.5 class model with unet/, vae/, scheduler/,
        text_encoder/, tokenizer/. blip_diffusion: a BLIP-Diffusion checkpoint
        ("Salesforce/blipdiffusion") whose Q-Former embeds the style image; its
        context-aware text encoder and tokenizer then replace the model's
        (DiffuseST uses that checkpoint for the UNet and VAE too: pass it as
        both). dtype: default float16 on CUDA, float32 elsewhere. Raises
        WeightsNotFoundError when a component is neither local nor on the hub.
        """
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer


        config = config or DiffuseSTConfig()
        dtype = dtype or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)
        source = str(config.model)
        unet = _load_component(partial(UNet2DConditionModel.from_pretrained, torch_dtype=dtype), source, "unet",
                               "Stable Diffusion UNet")
        scheduler = ddim_from_config(
            _load_component(DDIMScheduler.load_config, source, "scheduler", "Stable Diffusion scheduler"))
        if config.blip_diffusion is not None:
            style_encoder = BlipDiffusionStyleEncoder.from_pretrained(config.blip_diffusion).to(device, dtype)
            text_encoder, tokenizer = style_encoder.text_encoder, style_encoder.tokenizer
        else:
            style_encoder = None
            text_encoder = _load_component(CLIPTextModel.from_pretrained, source, "text_encoder", "CLIP text encoder")
            tokenizer = _load_component(CLIPTokenizer.from_pretrained, source, "tokenizer", "CLIP tokenizer")
        # the VAE computes in the UNet's dtype (fp16 on GPUs), not under bf16 autocast
        codec = load_codec("sd-vae", model=source, device=device, dtype=dtype, precision="fp32")
        return cls(unet.to(device), scheduler, codec, text_encoder.to(device, dtype), tokenizer, style_encoder, config)

    @classmethod
    def from_config(cls, config: DiffuseSTConfig, codec=None, device: str | torch.device = "cpu") -> DiffuseSTStylizer:
        """``from_pretrained`` for ``build_stylizer``; DiffuseST brings its own codec (its model's VAE)."""
        if codec is not None:
            raise ValueError(f"diffusest encodes with its model's own VAE and takes no codec (got {codec.name!r})")
        return cls.from_pretrained(config, device)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def _timesteps(self, steps: int) -> list[int]:
        """The DDIM timesteps of a ``steps``-step schedule of this model (noisiest first); sets the scheduler."""
        self.scheduler.set_timesteps(steps)
        return self.scheduler.timesteps.tolist()

    def _check_inversion_schedule(self) -> None:
        """The inversion schedule must pass through every sampling timestep and stay within the training ones."""
        inversion = self._timesteps(self.cfg.inversion_steps or self.cfg.num_inference_steps)
        missing = sorted(set(self._timesteps(self.cfg.num_inference_steps)) - set(inversion))
        if missing or max(inversion) >= self.scheduler.config.num_train_timesteps:
            raise ValueError(
                f"inversion_steps {self.cfg.inversion_steps} gives DDIM timesteps {inversion[-1]}..{inversion[0]}, "
                + (f"missing the sampling timesteps {missing[:5]} of num_inference_steps {self.cfg.num_inference_steps}"
                   if missing else f"beyond the model's {self.scheduler.config.num_train_timesteps} training timesteps")
                + "; use a multiple of num_inference_steps that divides the training timesteps, or 999")

    def _invert(self, latent: Tensor, stop_at: int | None = None) -> dict[int, Tensor]:
        """The inverted latents of ``latent`` (1,C,h,w) at the sampling timesteps (``ddim_invert``'s result) over
        ``inversion_steps``; the scheduler is left set to the sampling schedule."""
        sampling = self._timesteps(self.cfg.num_inference_steps)
        trajectory = ddim_invert(self.unet, self.scheduler, latent, self.encode_prompt(self.cfg.inversion_prompt),
                                 self.cfg.inversion_steps or self.cfg.num_inference_steps, stop_at=stop_at,
                                 keep=set(sampling))
        self.scheduler.set_timesteps(self.cfg.num_inference_steps)
        return trajectory

    def config(self) -> dict[str, Any]:
        style = None
        if self.style_encoder is not None:
            style = getattr(self.style_encoder, "model_id", type(self.style_encoder).__name__)
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in ("model", "blip_diffusion")}
        return {"stylizer": self.name, **settings, "unet": self.unet.config.get("_name_or_path", ""),
                "dtype": str(self.unet.dtype).removeprefix("torch."), "style_encoder": style}

    @torch.no_grad()
    def encode_prompt(self, text: str) -> Tensor:
        """Text encoder hidden states (1,L,D) of ``text``, padded to the encoder's length; cached."""
        if text not in self._prompts:
            ids = self.tokenizer([text], padding="max_length", truncation=True, return_tensors="pt",
                                 max_length=self.text_encoder.config.max_position_embeddings).input_ids
            self._prompts[text] = self.text_encoder(input_ids=ids.to(self.device))[0].to(self.unet.dtype)
        return self._prompts[text]

    @torch.no_grad()
    def prepare_style(self, style_image: Tensor) -> DiffuseSTStyle:
        image = style_image.detach().float().cpu().clamp(0, 1)
        if self.style_encoder is None:
            cond = self.encode_prompt(self.cfg.prompt)
        else:
            cond = self.style_encoder(image.to(self.device)).to(self.device, self.unet.dtype)
        reference = self.encode_prompt(self.cfg.inversion_prompt)
        if cond.ndim != 3 or cond.shape[0] != 1 or cond.shape[1:] != reference.shape[1:]:
            raise ValueError(f"the style conditioning has shape {tuple(cond.shape)}; the UNet call batches it with "
                             f"text embeddings of shape {tuple(reference.shape)}, so it must be (1,"
                             f"{reference.shape[1]},{reference.shape[2]})")
        return DiffuseSTStyle(image, cond)

    def stylize_prepared(self, frames: Tensor, style_state: DiffuseSTStyle) -> Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (N,3,H,W), got {tuple(frames.shape)}")
        with torch.no_grad():
            style = self._style_trajectory(style_state, tuple(frames.shape[-2:]))
            outputs = [self._stylize_latent(self.codec.encode(frame).to(self.device), style, style_state.cond)
                       for frame in tqdm(frames.split(1), desc="diffusest", unit="frame", leave=False)]
        return torch.cat(outputs).to(frames.device, frames.dtype)

    def _style_trajectory(self, style: DiffuseSTStyle, size: tuple[int, int]) -> dict[int, Tensor]:
        """The style's inverted latents at the frame size, down to the style range's noisiest step; cached."""
        steps = self.cfg.steps(self.cfg.style_attention_range)
        if not steps:
            return {}
        if size not in style.trajectories:
            latent = self.codec.encode(fit_style(style.image, size)).to(self.device)
            stop_at = self._timesteps(self.cfg.num_inference_steps)[steps[0]]
            style.trajectories[size] = self._invert(latent, stop_at=stop_at)
        return style.trajectories[size]

    def _stylize_latent(self, latent: Tensor, style: dict[int, Tensor], style_cond: Tensor) -> Tensor:
        """The output branch's final latent (1,C,h,w) for one content latent (1,C,h,w)."""
        cfg = self.cfg
        source_cond = self.encode_prompt(cfg.inversion_prompt)
        content = self._invert(latent)
        timesteps = self.scheduler.timesteps.tolist()  # the sampling schedule, as _invert leaves it
        guided = cfg.guidance_scale > 1.0
        output_cond = torch.cat([self.encode_prompt(cfg.negative_prompt), style_cond]) if guided else style_cond
        features, query_key, key_value = (set(cfg.steps(r)) for r in (
            cfg.content_feature_range, cfg.content_attention_range, cfg.style_attention_range))
        generator = torch.Generator(self.device).manual_seed(cfg.seed)
        sample = content[timesteps[0]]
        with self.injector as injector:
            for i, timestep in enumerate(timesteps):
                rows, conds, content_row, style_row = [], [], None, None
                if i in features or i in query_key:
                    content_row = len(rows)
                    rows.append(content[timestep])
                    conds.append(source_cond)
                if i in key_value:
                    style_row = len(rows)
                    rows.append(style[timestep])
                    conds.append(source_cond)
                first_output = len(rows)
                rows.extend([sample] * (2 if guided else 1))
                conds.append(output_cond)
                injector.plan = StepPlan(timestep, content_row, style_row, slice(first_output, None),
                                         features=i in features, query_key=i in query_key, key_value=i in key_value)
                noise = self.unet(torch.cat(rows).to(self.unet.dtype), timestep,
                                  encoder_hidden_states=torch.cat(conds)).sample[first_output:].float()
                if guided:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + cfg.guidance_scale * (cond - uncond)
                sample = self.scheduler.step(noise, timestep, sample, eta=cfg.eta, generator=generator).prev_sample
            self.last_injections = list(injector.records)
        return sample


__all__ = ["BlipDiffusionStyleEncoder", "DEFAULT_MODEL", "DiffuseSTConfig", "DiffuseSTStyle", "DiffuseSTStylizer",
           "fit_style"]

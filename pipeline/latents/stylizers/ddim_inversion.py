"""Deterministic DDIM inversion of latents (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021).

Running the deterministic (eta = 0) DDIM update backwards maps a clean latent
x_0 to a noise latent x_T from which DDIM sampling with the same model and
conditioning returns (approximately) to x_0. Plug-and-Play (Tumanyan et al.,
CVPR 2023) and DiffuseST (Hu et al., 2024) invert the content and style images
this way and feed the stored latent of each timestep to their source branches.

The inversion step to timestep t evaluates the UNet at the latent of the
previous (less noisy) level with timestep t, the usual approximation of the
unknown eps(x_t, t) (as in both papers' released code). The previous level of
t is ``t - num_train_timesteps // num_inference_steps`` (``final_alpha_cumprod``
below zero), the same rule ``DDIMScheduler.step`` uses, so sampling with that
scheduler retraces the inverted trajectory.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from diffusers import DDIMScheduler


def ddim_from_config(config) -> DDIMScheduler:
    """A DDIMScheduler from any diffusers scheduler's config (e.g. SD's PNDM one), checked for inversion.

    A config without ``clip_sample`` (PNDM's) gets clip_sample=False: DDIM's
    default (True) is meant for pixel-space models, never for latents.
    """
    from diffusers import DDIMScheduler  # deferred: diffusers is slow to import

    scheduler = DDIMScheduler.from_config({"clip_sample": False, **dict(config)})
    check_ddim_scheduler(scheduler)
    return scheduler


def check_ddim_scheduler(scheduler) -> None:
    """Raise ValueError unless ``scheduler`` is a diffusers DDIMScheduler usable on latents."""
    from diffusers import DDIMScheduler  # deferred: diffusers is slow to import

    if not isinstance(scheduler, DDIMScheduler):
        raise ValueError(f"DDIM inversion needs a diffusers DDIMScheduler, got {type(scheduler).__name__}; "
                         f"build one with DDIMScheduler.from_config(scheduler.config)")
    config = scheduler.config
    if config.clip_sample or config.thresholding:
        raise ValueError("DDIM inversion of latents needs clip_sample=False and thresholding=False in the scheduler "
                         f"config (got clip_sample={config.clip_sample}, thresholding={config.thresholding})")
    if config.prediction_type != "epsilon":
        raise ValueError(f"DDIM inversion is implemented for noise-predicting (prediction_type='epsilon') models "
                         f"such as Stable Diffusion 1.5, got prediction_type={config.prediction_type!r}")


def _previous_alpha(scheduler, timestep: int) -> Tensor:
    """alpha_cumprod of the level one sampling step below ``timestep`` (DDIMScheduler.step's rule)."""
    previous = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return scheduler.alphas_cumprod[previous] if previous >= 0 else scheduler.final_alpha_cumprod


@torch.no_grad()
def ddim_invert(
    unet,
    scheduler,
    latents: Tensor,
    cond: Tensor,
    num_steps: int,
    stop_at: int | None = None,
    keep: Collection[int] | None = None,
) -> dict[int, Tensor]:
    """Invert clean ``latents`` (N,C,h,w) along the ``num_steps``-step DDIM schedule.

    unet: a diffusers UNet2DConditionModel; scheduler: a DDIMScheduler (its
    timesteps are set to ``num_steps``, the sampling schedule the caller then
    uses); cond: encoder hidden states (1 or N, L, D) used at every step.
    stop_at: when given, stop after the latent of the first timestep >= stop_at
    (callers that need only the less noisy part of the trajectory).
    keep: the timesteps whose latents are returned (None: all of the ``num_steps`` schedule), e.g. a 50-step
    sampling schedule's out of a finer 999-step inversion (Plug-and-Play's and DiffuseST's releases).
    Returns {timestep: latent (N,C,h,w) float32 on the UNet's device at that noise level} for those
    timesteps, in ascending order of timestep; the largest one is the inverted noise x_T that sampling
    starts from.
    """
    check_ddim_scheduler(scheduler)
    if latents.ndim != 4:
        raise ValueError(f"latents must be (N,C,h,w), got {tuple(latents.shape)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    device = unet.device
    scheduler.set_timesteps(num_steps, device=device)
    cond = cond.to(device, unet.dtype).expand(latents.shape[0], -1, -1)
    alphas = scheduler.alphas_cumprod.to(device)
    current = latents.to(device, torch.float32)
    trajectory: dict[int, Tensor] = {}
    for timestep in scheduler.timesteps.flip(0).tolist():
        alpha_prev = _previous_alpha(scheduler, timestep).to(device)
        noise = unet(current.to(unet.dtype), timestep, encoder_hidden_states=cond).sample.float()
        clean = (current - (1 - alpha_prev).sqrt() * noise) / alpha_prev.sqrt()
        alpha = alphas[timestep]
        current = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
        if keep is None or timestep in keep:
            trajectory[timestep] = current
        if stop_at is not None and timestep >= stop_at:
            break
    return trajectory

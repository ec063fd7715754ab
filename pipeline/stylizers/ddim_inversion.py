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

import torch
from torch import Tensor


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
    if config.prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"unsupported prediction_type {config.prediction_type!r}; expected 'epsilon' or 'v_prediction'")


def _previous_alpha(scheduler, timestep: int) -> Tensor:
    """alpha_cumprod of the level one sampling step below ``timestep`` (DDIMScheduler.step's rule)."""
    previous = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return scheduler.alphas_cumprod[previous] if previous >= 0 else scheduler.final_alpha_cumprod


def _clean_and_noise(prediction_type: str, model_output: Tensor, latents: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """(predicted x_0, predicted eps) of ``latents`` at level ``alpha`` from the UNet's output."""
    if prediction_type == "v_prediction":
        clean = alpha.sqrt() * latents - (1 - alpha).sqrt() * model_output
        noise = alpha.sqrt() * model_output + (1 - alpha).sqrt() * latents
        return clean, noise
    return (latents - (1 - alpha).sqrt() * model_output) / alpha.sqrt(), model_output


@torch.no_grad()
def ddim_invert(
    unet,
    scheduler,
    latents: Tensor,
    cond: Tensor,
    num_steps: int,
    stop_at: int | None = None,
) -> dict[int, Tensor]:
    """Invert clean ``latents`` (N,C,h,w) along the ``num_steps``-step DDIM schedule.

    unet: a diffusers UNet2DConditionModel; scheduler: a DDIMScheduler (its
    timesteps are set to ``num_steps``, the sampling schedule the caller then
    uses); cond: encoder hidden states (1 or N, L, D) used at every step.
    stop_at: when given, stop after the latent of the first timestep >= stop_at
    (callers that need only the less noisy part of the trajectory).
    Returns {timestep: latent (N,C,h,w) float32 at that noise level} for the
    sampling timesteps only, in ascending order of timestep; the largest one is
    the inverted noise x_T that sampling starts from.
    """
    check_ddim_scheduler(scheduler)
    if latents.ndim != 4:
        raise ValueError(f"latents must be (N,C,h,w), got {tuple(latents.shape)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    scheduler.set_timesteps(num_steps, device=latents.device)
    cond = cond.to(unet.device, unet.dtype).expand(latents.shape[0], -1, -1)
    alphas = scheduler.alphas_cumprod.to(latents.device)
    current = latents.float()
    trajectory: dict[int, Tensor] = {}
    for timestep in scheduler.timesteps.flip(0).tolist():
        alpha_prev = _previous_alpha(scheduler, timestep).to(latents.device)
        output = unet(current.to(unet.dtype), timestep, encoder_hidden_states=cond).sample.float()
        clean, noise = _clean_and_noise(scheduler.config.prediction_type, output, current, alpha_prev)
        alpha = alphas[timestep]
        current = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
        trajectory[timestep] = current
        if stop_at is not None and timestep >= stop_at:
            break
    return trajectory

"""The combined style / content / temporal reward of the RL stage.

Following Kuang & Chen ("Video Style Transfer with Reinforcement Learning"),
the reward of a stylized frame S_t is

    r_t = -( w_s * L_style / S  +  w_c * L_content / C  +  w_t * L_temp / T )

with
- L_style   = Gram style loss of S_t against the style image (``GramStyleLoss``),
- L_content = LPIPS-alex distance between S_t and the content frame I_t,
- L_temp    = occlusion-masked mean absolute difference between S_t and the
  previous stylized frame warped into frame t (the caller warps it with the
  content flow from t to t-1: ``policies.env.score_frames`` in two bands,
  ``rewards.warp.detail_preserving_warp``); 0 for
  the first frame of a clip,
- (w_s, w_c, w_t) = ``RewardWeights`` (default 10, 1, 10),
- (S, C, T) = ``RewardScales``: reference magnitudes of the raw terms. Use
  ``RewardScales.from_terms`` on the raw terms of the frame-by-frame baseline
  of a clip: each scale is that term's mean, so the baseline scores about 1 per
  term and the weights say how much each term matters relative to it.

``RewardTerms`` holds the total reward and the three RAW (unweighted,
unnormalised) terms, which are also the evaluation metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from rewards.content import LPIPSDistance
from rewards.style import GramStyleLoss
from rewards.vgg import VGG16Features

TERM_NAMES = ("style", "content", "temporal")


def _check_finite_non_negative(owner: str, values: dict[str, float], positive: bool) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "positive" if positive else "non-negative"
            raise ValueError(f"{owner}.{name} must be a finite {kind} number, got {value}")


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the normalised terms (Kuang & Chen's defaults); 0 disables a term's effect."""

    style: float = 10.0
    content: float = 1.0
    temporal: float = 10.0

    def __post_init__(self) -> None:
        _check_finite_non_negative("RewardWeights", {f.name: getattr(self, f.name) for f in fields(self)}, False)


@dataclass
class RewardTerms:
    """Reward of N frames: ``total`` (N,) and the raw terms ``style``, ``content``, ``temporal`` (N,)."""

    total: Tensor
    style: Tensor
    content: Tensor
    temporal: Tensor

    def mean_dict(self) -> dict[str, float]:
        """Batch means as plain floats, for logging: keys ``reward``, ``style``, ``content``, ``temporal``."""
        means = {name: getattr(self, name).detach().float().mean().item() for name in TERM_NAMES}
        return {"reward": self.total.detach().float().mean().item(), **means}


@dataclass(frozen=True)
class RewardScales:
    """Reference magnitude of each raw term; a raw term is divided by its scale before weighting."""

    style: float = 1.0
    content: float = 1.0
    temporal: float = 1.0

    def __post_init__(self) -> None:
        _check_finite_non_negative("RewardScales", {f.name: getattr(self, f.name) for f in fields(self)}, True)

    @classmethod
    def from_terms(cls, terms: RewardTerms | Sequence[RewardTerms], eps: float = 1e-6) -> RewardScales:
        """Scales = mean of each raw term of the frame-by-frame baseline, floored at ``eps``.

        ``terms``: one ``RewardTerms`` or several (concatenated), e.g. the
        baseline's frames of a clip. Pass only frames that have a previous frame
        (t >= 1) so the first frame's zero temporal term does not dilute T.
        """
        batch = [terms] if isinstance(terms, RewardTerms) else list(terms)
        if not batch:
            raise ValueError("RewardScales.from_terms needs at least one RewardTerms")
        means = {}
        for name in TERM_NAMES:
            values = torch.cat([getattr(t, name).detach().float().flatten().cpu() for t in batch])
            if not torch.isfinite(values).all():
                raise FloatingPointError(f"baseline reward term {name!r} has non-finite values")
            means[name] = max(values.mean().item(), eps)
        return cls(**means)


def combined_reward(weights: RewardWeights, scales: RewardScales, style: Tensor, content: Tensor,
                    temporal: Tensor) -> Tensor:
    """r = -(w_s L_style / S + w_c L_content / C + w_t L_temp / T) of raw terms (N,): the one place the formula lives."""
    raw = {"style": style, "content": content, "temporal": temporal}
    return -sum(getattr(weights, name) * raw[name] / getattr(scales, name) for name in TERM_NAMES)


def masked_l1(a: Tensor, b: Tensor, mask: Tensor | None) -> Tensor:
    """Mean |a - b| (N,) over channels and the pixels where ``mask`` (N,1,H,W) is 1; 0 where none is."""
    diff = (a - b).abs()
    if mask is None:
        return diff.mean(dim=(1, 2, 3))
    weighted = (diff * mask).sum(dim=(1, 2, 3))
    count = mask.sum(dim=(1, 2, 3)) * a.shape[1]
    return weighted / count.clamp_min(1e-8)


class StyleContentTemporalReward(nn.Module):
    """Reward of stylized frames: ``forward(stylized, content, prev_stylized_warped, mask) -> RewardTerms``.

    Components are passed in so they can be shared (one VGG, one LPIPS per
    process). Differentiable with respect to ``stylized`` (callers wrap it in
    ``torch.no_grad()`` for REINFORCE). The normalisation ``scales`` belong to
    a clip and are passed with each call; the module itself holds no clip state.
    """

    def __init__(
        self,
        style_loss: GramStyleLoss,
        content_distance: LPIPSDistance,
        weights: RewardWeights = RewardWeights(),
    ) -> None:
        super().__init__()
        self.style_loss = style_loss
        self.content_distance = content_distance
        self.weights = weights

    def forward(
        self,
        stylized: Tensor,
        content: Tensor,
        prev_stylized_warped: Tensor | None = None,
        mask: Tensor | None = None,
        scales: RewardScales = RewardScales(),
    ) -> RewardTerms:
        """Terms and reward for ``stylized`` and ``content`` (N,3,H,W) in [0,1].

        ``prev_stylized_warped`` (N,3,H,W): previous stylized frame backward-
        warped into the current one, or ``None`` for a clip's first frame
        (temporal term 0). ``mask`` (N,1,H,W): 1 where the warp is reliable
        (non-occluded); ``None`` = every pixel. ``scales``: the clip's
        normalisation (default 1 each: raw terms). Raises ``FloatingPointError``
        naming the term when a term is NaN or infinite.
        """
        self._check_inputs(stylized, content, prev_stylized_warped, mask)
        style = self.style_loss(stylized)
        content_term = self.content_distance(stylized, content)
        if prev_stylized_warped is None:
            temporal = torch.zeros_like(style)
        else:
            temporal = masked_l1(stylized, prev_stylized_warped, mask)
        raw = {"style": style, "content": content_term, "temporal": temporal}
        for name, value in raw.items():
            if not torch.isfinite(value).all():
                bad = (~torch.isfinite(value.detach())).sum().item()
                raise FloatingPointError(
                    f"reward term {name!r} is NaN or infinite for {bad} of {value.numel()} frame(s); "
                    "refusing to score this step"
                )
        return RewardTerms(total=combined_reward(self.weights, scales, **raw), **raw)

    def rescored(self, terms: RewardTerms, scales: RewardScales) -> RewardTerms:
        """``terms`` with the total recomputed under ``scales`` (the raw terms unchanged)."""
        return RewardTerms(combined_reward(self.weights, scales, terms.style, terms.content, terms.temporal),
                           terms.style, terms.content, terms.temporal)

    @staticmethod
    def _check_inputs(stylized: Tensor, content: Tensor, prev: Tensor | None, mask: Tensor | None) -> None:
        if stylized.ndim != 4 or stylized.shape[1] != 3:
            raise ValueError(f"stylized must be (N,3,H,W), got {tuple(stylized.shape)}")
        if content.shape != stylized.shape:
            raise ValueError(f"content {tuple(content.shape)} must match stylized {tuple(stylized.shape)}")
        if prev is not None and prev.shape != stylized.shape:
            raise ValueError(f"prev_stylized_warped {tuple(prev.shape)} must match stylized {tuple(stylized.shape)}")
        if mask is not None:
            if prev is None:
                raise ValueError("mask given without prev_stylized_warped")
            n, _, h, w = stylized.shape
            if mask.shape != (n, 1, h, w):
                raise ValueError(f"mask must be (N,1,H,W) = {(n, 1, h, w)}, got {tuple(mask.shape)}")


def build_reward(style_image: Tensor, weights: RewardWeights = RewardWeights(), precision: str = "auto",
                 device: str | torch.device = "cpu") -> StyleContentTemporalReward:
    """The reward of one style from the shared pretrained VGG16 and LPIPS-alex; ``style_image`` (1,3,H,W) in [0,1]."""
    style_loss = GramStyleLoss(VGG16Features(precision=precision).to(device), style_image.to(device))
    return StyleContentTemporalReward(style_loss, LPIPSDistance(), weights).to(device)

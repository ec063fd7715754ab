"""RLMiniStyler's training terms: content, style statistics, style-code contrast, uncertainty weighting.

As the public code (``rl/agent.py``, ``calc_content_loss`` / ``calc_style_loss``
and the "style signal contrastive loss"), with the project's VGG16
(``rewards.vgg``) in place of the AdaIN VGG19 (same layer names; the
features differ by a constant-ish scale, which the uncertainty weights absorb):

- content: MSE of ``relu4_1`` features of the next moving image and of the
  current one (consecutive moving images, so every step is a small move);
- style: sum over ``relu1_1 .. relu4_1`` of the MSE of per-channel means
  plus the MSE of per-channel standard deviations against the style image
  (Huang & Belongie 2017). The reward is minus this term;
- contrastive (hierarchical, on the actor's own style code): for sample i,
  the distance between the code of its result and the code of its own style
  image (positive) over the summed distances to the other styles in the
  batch (negatives), averaged over the samples that have negatives. The
  distance sums, over the shallow and the three deep levels, the MSE of
  feature means and stds and of the filter modulations. The public code
  takes every other batch index as a negative; here samples with the same
  style id are neither positive nor negative;
- uncertainty weights (Kendall, Gal & Cipolla, CVPR 2018): total =
  sum_i 0.5 exp(-s_i) L_i + 0.5 s_i with learned log-variances s_i. The
  public code uses the variant 0.5 / p_i^2 L_i + log(1 + p_i^2) (Liebel &
  Koerner 2018); the brief asked for Kendall's learned log-variances.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from baselines.rlministyler.models import StyleCode, mean_std
from rewards.style import perceptual_loss_from_features
from rewards.vgg import VGG16Features

STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"
LOSS_NAMES: tuple[str, ...] = ("content", "style", "contrastive")


def statistics_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-image (N,) MSE of channel means plus MSE of channel stds of features ``a`` and ``b`` (N or 1,C,H,W)."""
    a_mean, a_std = mean_std(a)
    b_mean, b_std = mean_std(b)
    return (a_mean - b_mean).pow(2).mean(dim=(1, 2, 3)) + (a_std - b_std).pow(2).mean(dim=(1, 2, 3))


class MiniStylerObjective(nn.Module):
    """Content and style terms from one VGG16 forward: ``features(images)``, ``content``, ``style``."""

    def __init__(self, vgg: VGG16Features | None = None) -> None:
        super().__init__()
        self.vgg = vgg or VGG16Features(STYLE_LAYERS)
        missing = [name for name in STYLE_LAYERS if name not in self.vgg.layers]
        if missing:
            raise ValueError(f"the VGG16Features extractor lacks layer(s) {missing}")

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """VGG16 ``relu1_1 .. relu4_1`` features of images (N,3,H,W) in [0,1]."""
        return self.vgg(images)

    def content(self, features: dict[str, Tensor], previous: dict[str, Tensor]) -> Tensor:
        """Content term (N,): relu4_1 MSE between the next and the current moving image's features."""
        return perceptual_loss_from_features(features, previous, CONTENT_LAYER)

    def style(self, features: dict[str, Tensor], style_features: dict[str, Tensor]) -> Tensor:
        """Style term (N,): sum over layers of the mean/std MSE against the style features (batch N or 1)."""
        return sum(statistics_distance(features[name], style_features[name]) for name in STYLE_LAYERS)


def code_distances(a: StyleCode, b: StyleCode) -> Tensor:
    """Distances (N,M) between every code of ``a`` (batch N) and of ``b`` (batch M): summed MSEs over all fields."""
    total = 0.0
    for level_a, level_b in zip(a, b):
        for x, y in zip(level_a, level_b):
            total = total + (x.flatten(1)[:, None] - y.flatten(1)[None]).pow(2).mean(dim=2)
    return total


def contrastive_loss(results: StyleCode, styles: StyleCode, style_ids: Tensor) -> Tensor | None:
    """Style-code contrast (scalar): mean over i of d(result_i, style_i) / sum_{id_j != id_i} d(result_i, style_j).

    ``results``: codes of the produced images, ``styles``: of their style
    images (batch N each), ``style_ids`` (N,) which style each sample has.
    None when no sample has a negative (every sample has the same style).
    """
    distances = code_distances(results, styles)
    negatives = style_ids[:, None] != style_ids[None, :]
    usable = negatives.any(dim=1)
    if not usable.any():
        return None
    positive = distances.diagonal()
    negative = (distances * negatives).sum(dim=1)
    return (positive[usable] / negative[usable]).mean()


class UncertaintyWeights(nn.Module):
    """Learned log-variances s (one per named loss): total = sum 0.5 exp(-s_i) L_i + 0.5 s_i (Kendall et al. 2018)."""

    def __init__(self, names: Sequence[str] = LOSS_NAMES) -> None:
        super().__init__()
        self.names = tuple(names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))

    def weights(self) -> dict[str, float]:
        """Current effective weight 0.5 exp(-s_i) of each loss."""
        return {name: 0.5 * float(torch.exp(-s)) for name, s in zip(self.names, self.log_vars.detach())}

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of scalar ``losses`` (a subset of the names; missing terms take no part)."""
        unknown = set(losses) - set(self.names)
        if unknown:
            raise ValueError(f"unknown loss name(s) {sorted(unknown)}; expected {self.names}")
        total = 0.0
        for index, name in enumerate(self.names):
            if name in losses:
                s = self.log_vars[index]
                total = total + 0.5 * torch.exp(-s) * losses[name] + 0.5 * s
        return total

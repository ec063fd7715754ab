"""RL-NST's style-learning terms (content, Gram style, total variation) in the paper's scale convention.

Built on ``rewards.style`` (one VGG16 forward per batch). The paper's
defaults, content weight 1, style weight lambda = 1e5, TV weight
beta = 1e-7, refer to the public code's terms (``brain.py``), which this
module reproduces:

- content: MSE (mean over elements) of VGG16 ``relu2_2`` features of the
  output and of the anchor image, the current moving image or the content
  image (see ``agent.py``) (= ``rewards.style.perceptual_loss``);
- style: sum over ``relu1_2, relu2_2, relu3_3, relu4_3`` of the *mean*
  squared difference of Gram matrices normalised by C*H*W. The project's
  ``GramStyleLoss`` uses the same Gram normalisation but the *summed* squared
  (Frobenius) difference, i.e. sum_l C_l^2 * MSE_l; the term here takes the
  mean over the C_l x C_l entries against ``GramStyleLoss``'s target Gram
  matrices (its ``target_<layer>`` buffers), i.e. each layer's
  ``GramStyleLoss`` divided by C_l^2, so lambda = 1e5 keeps the paper's
  balance between layers and against the content term;
- total variation: sum of absolute horizontal and vertical differences per
  image. The public code sums over ImageNet-normalised pixels (about 4.4x
  the [0,1] differences used here) and over the batch; here per image on
  [0,1] pixels. With beta = 1e-7 the term is negligible either way.

VGG16 sees the same normalised pixels in both codes (``VGG16Features``
normalises [0,1] images inside), so the features, hence the loss values, match.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from rewards.style import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    GramStyleLoss,
    gram_matrix,
    perceptual_loss_from_features,
)
from rewards.vgg import VGG16Features


class StyleTerms(NamedTuple):
    """Unweighted per-image terms, each (N,)."""

    content: Tensor
    style: Tensor
    tv: Tensor


def total_variation(images: Tensor) -> Tensor:
    """Anisotropic total variation (N,): sum |x[.., i, j+1] - x[.., i, j]| + |x[.., i+1, j] - x[.., i, j]|."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).sum(dim=1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).sum(dim=1)
    return dx + dy


class RLNSTObjective(nn.Module):
    """Content / style / TV terms of images against their content images and one style image.

    ``vgg``: a ``VGG16Features`` returning the style layers (built if None);
    content images only go through a copy cut after ``relu2_2``.
    ``style_image`` (1,3,H,W) in [0,1]; ``style_size``: longer side the style
    image is resized to before its Gram matrices are taken (as
    ``GramStyleLoss``; None keeps its size).
    """

    def __init__(self, style_image: Tensor, vgg: VGG16Features | None = None, style_size: int | None = 256) -> None:
        super().__init__()
        self.vgg = vgg or VGG16Features(STYLE_LAYERS)
        self.content_vgg = VGG16Features((CONTENT_LAYER,))
        self.gram_loss = GramStyleLoss(self.vgg, style_image, layers=STYLE_LAYERS, style_size=style_size)

    def style_from_features(self, features: dict[str, Tensor]) -> Tensor:
        """RL-NST style term (N,): sum over layers of the mean squared Gram difference."""
        total = None
        for name in self.gram_loss.layers:
            target = getattr(self.gram_loss, f"target_{name}")  # the style's Gram matrix (1,C,C)
            term = (gram_matrix(features[name]) - target).pow(2).mean(dim=(1, 2))
            total = term if total is None else total + term
        return total

    def style(self, images: Tensor) -> Tensor:
        """RL-NST style term (N,) of ``images`` (N,3,H,W) in [0,1]."""
        return self.style_from_features(self.vgg(images))

    def forward(self, images: Tensor, contents: Tensor) -> StyleTerms:
        """Terms for ``images`` and their ``contents`` (N,3,H,W) in [0,1]; differentiable in ``images``."""
        if images.shape != contents.shape:
            raise ValueError(f"images {tuple(images.shape)} and contents {tuple(contents.shape)} must match")
        features = self.vgg(images)
        content_features = self.content_vgg(contents.detach())
        return StyleTerms(
            content=perceptual_loss_from_features(features, content_features, CONTENT_LAYER),
            style=self.style_from_features(features),
            tv=total_variation(images),
        )

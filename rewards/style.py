"""Gram-matrix style loss and VGG perceptual (content) loss.

Style loss as in Gatys et al. 2016 / Johnson et al. 2016: for each VGG16 layer
of ``STYLE_LAYERS`` the Gram matrix of its activations, normalised by C*H*W,
compared with the style image's by the squared Frobenius norm, summed over
layers. Perceptual loss: mean squared difference of VGG16 ``relu2_2`` features
(Johnson et al. 2016), the content loss of the pixel-space models.

Sharing one VGG forward: when a caller needs both losses on the same images,
run the extractor once (``feats = vgg(images)``, with ``vgg`` holding the
style layers, which include ``relu2_2``) and use
``GramStyleLoss.from_features(feats)`` and
``perceptual_loss_from_features(feats, target_feats)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewards.vgg import VGG16Features

STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"


class _Gram(torch.autograd.Function):
    """G = scale * F F^T for F (N,C,P), with the gradient (dG + dG^T) F * scale in one product.

    Autograd's own gradient of ``F @ F.transpose(1, 2)`` takes two products and adds a (N,C,P) tensor to a
    transposed one; at relu1_2 of a 256-px frame (P = 65536) that strided add alone costs more than both
    products on the CPU. The gradient comes back in the memory layout of F (channels-last features give a
    channels-last gradient, so the VGG backward needs no layout conversion). The backward is built from
    differentiable operations, so higher-order gradients work.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(flat)
        ctx.scale = scale
        return torch.bmm(flat, flat.transpose(1, 2)) * scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (flat,) = ctx.saved_tensors
        symmetric = (grad + grad.transpose(1, 2)) * ctx.scale
        if flat.stride(1) == 1:  # F is a transposed view of (N,P,C) memory: channels-last features
            return torch.bmm(flat.transpose(1, 2), symmetric).transpose(1, 2), None
        return torch.bmm(symmetric, flat), None


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices (N,C,C) of ``features`` (N,C,H,W), normalised by C*H*W; contiguous or channels-last
    features are read in place."""
    if features.ndim != 4:
        raise ValueError(f"gram_matrix expects features (N,C,H,W), got {tuple(features.shape)}")
    n, c, h, w = features.shape
    if features.is_contiguous():
        flat = features.reshape(n, c, h * w)
    else:  # (N,H,W,C) memory, e.g. channels-last: a view, no copy
        flat = features.permute(0, 2, 3, 1).reshape(n, h * w, c).transpose(1, 2)
    return _Gram.apply(flat, 1.0 / (c * h * w))


def resize_longer_side(image: Tensor, size: int) -> Tensor:
    """``image`` (N,3,H,W) resized (bilinear, antialiased) so that max(H,W) == ``size``."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new_size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new_size == (h, w):
        return image
    return F.interpolate(image, size=new_size, mode="bilinear", align_corners=False, antialias=True)


class GramStyleLoss(nn.Module):
    """Style loss of images against one style image: ``forward(images (N,3,H,W) [0,1]) -> (N,)``.

    The style's Gram matrices are computed once when the style is set
    (non-persistent buffers ``target_<layer>``, and ``style_image``: the style
    image as used, after resizing); they follow ``.to(device)``.
    ``style_size``: the style image is resized so its longer side is this many
    pixels before its Gram matrices are taken (default 256: the scale of the
    frames the project stylizes, so brush strokes have a comparable size in
    VGG's receptive fields); ``None`` keeps the style image's own size. Gram
    matrices are size-independent in shape, so any frame size can be scored.
    """

    def __init__(
        self,
        vgg: VGG16Features,
        style_image: Tensor,
        layers: tuple[str, ...] = STYLE_LAYERS,
        style_size: int | None = 256,
    ) -> None:
        super().__init__()
        missing = [name for name in layers if name not in vgg.layers]
        if missing:
            raise ValueError(f"the VGG16Features extractor does not return style layer(s) {missing}; it has {vgg.layers}")
        if style_size is not None and style_size < 16:
            raise ValueError(f"style_size must be at least 16 pixels or None, got {style_size}")
        self.vgg = vgg
        self.layers = tuple(layers)
        self.style_size = style_size
        self.set_style(style_image)

    def set_style(self, style_image: Tensor) -> None:
        """Replace the style by ``style_image`` (1,3,H,W) in [0,1] and precompute its Gram matrices."""
        if style_image.ndim != 4 or style_image.shape[:2] != (1, 3):
            raise ValueError(f"style_image must be (1,3,H,W), got {tuple(style_image.shape)}")
        device = self.vgg.mean.device
        image = style_image.detach().to(device=device, dtype=torch.float32)
        if self.style_size is not None:
            image = resize_longer_side(image, self.style_size)
        self.register_buffer("style_image", image, persistent=False)
        with torch.no_grad():
            feats = self.vgg(image)
        for name in self.layers:
            self.register_buffer(f"target_{name}", gram_matrix(feats[name]), persistent=False)

    def from_features(self, features: dict[str, Tensor]) -> Tensor:
        """Style loss (N,) from precomputed ``VGG16Features`` outputs of the images."""
        total = None
        for name in self.layers:
            diff = gram_matrix(features[name]) - getattr(self, f"target_{name}")
            term = diff.pow(2).sum(dim=(1, 2))
            total = term if total is None else total + term
        return total

    def forward(self, images: Tensor) -> Tensor:
        """Style loss (N,) of ``images`` (N,3,H,W) in [0,1]."""
        return self.from_features(self.vgg(images))


def perceptual_loss_from_features(
    features: dict[str, Tensor], target_features: dict[str, Tensor], layer: str = CONTENT_LAYER
) -> Tensor:
    """Mean squared difference (N,) of two ``VGG16Features`` outputs at ``layer``."""
    if layer not in features or layer not in target_features:
        raise ValueError(f"layer {layer!r} missing from the given features ({sorted(features)})")
    a, b = features[layer], target_features[layer]
    if a.shape != b.shape:
        raise ValueError(f"features at {layer} differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).pow(2).mean(dim=(1, 2, 3))


def perceptual_loss(vgg: VGG16Features, images: Tensor, targets: Tensor, layer: str = CONTENT_LAYER) -> Tensor:
    """Perceptual loss (N,): MSE of VGG16 ``layer`` features of ``images`` and ``targets`` (N,3,H,W) [0,1]."""
    if layer not in vgg.layers:
        raise ValueError(f"the VGG16Features extractor does not return {layer!r}; it has {vgg.layers}")
    if images.shape != targets.shape:
        raise ValueError(f"images and targets differ in shape: {tuple(images.shape)} vs {tuple(targets.shape)}")
    return perceptual_loss_from_features(vgg(images), vgg(targets), layer)

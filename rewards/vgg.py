"""Frozen VGG16 feature extractor (ImageNet weights) returning named ReLU activations.

The network is torchvision's ``vgg16().features`` (Simonyan & Zisserman 2015),
built with ``torchvision.models.vgg.make_layers(cfgs["D"])`` (the same layers,
without allocating the unused classifier) and loaded ``strict=True`` from the
project's ``vgg16_features`` weights (torchvision IMAGENET1K_V1). It is cut
after the deepest requested layer. Parameters are frozen and the module stays
in eval mode, but it is differentiable with respect to its input: style and
perceptual losses backpropagate through it into pixels or latents.
``precision="bf16"`` runs the network in bf16 and returns fp32 features
(``pipeline.io.precision``): a bf16 copy of the layers in channels_last memory
format, made once per device, so no call casts the weights (as autocast does)
and oneDNN's bf16 kernels run in their native layout (features come back
channels-last). On this project's CPU (AMX), forward and backward to relu4_3
with Gram matrices of a 256x256 image: 212 ms against 357 ms under bf16
autocast, one thread; the same losses as autocast, Gram style losses within
0.3% of fp32 on real photos. Training rewards use it; evaluation
metrics keep the fp32 default.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from pipeline.io.precision import check_precision, resolve_precision
from pipeline.io.weights import load_state_dict

# Index of each ReLU in torchvision's vgg16().features.
VGG16_RELU_INDICES: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3,
    "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22,
    "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """Named VGG16 ReLU activations of images (N,3,H,W) in [0,1].

    ``layers``: names from ``VGG16_RELU_INDICES`` (``relu1_1`` ... ``relu5_3``).
    ``weights_path``: explicit ``vgg16_features.pth``; by default the project's
    weight lookup (``pipeline.io.weights``) finds it. ``precision``: "fp32"
    (default), "bf16" or "auto" (bf16 where the CPU runs it natively; resolved
    for the CPU here, again when the module moves with ``.to``).
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        weights_path: str | os.PathLike | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.requested_precision = check_precision(precision)
        if isinstance(layers, str) or len(layers) == 0:
            raise ValueError(f"layers must be a non-empty sequence of VGG16 ReLU names, got {layers!r}")
        unknown = [name for name in layers if name not in VGG16_RELU_INDICES]
        if unknown:
            raise ValueError(f"unknown VGG16 layer(s) {unknown}; known: {', '.join(VGG16_RELU_INDICES)}")
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        features = make_layers(cfgs["D"])
        features.load_state_dict(load_state_dict("vgg16_features", weights_path), strict=True)
        deepest = max(VGG16_RELU_INDICES[name] for name in self.layers)
        self.features = features[: deepest + 1]
        self._index_to_name = {VGG16_RELU_INDICES[name]: name for name in self.layers}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        self._bf16_copy: tuple[torch.device, nn.Sequential] | None = None  # (device, layers) of ``_bf16_layers``

    def train(self, mode: bool = True) -> VGG16Features:
        """Stay in eval mode: the extractor is frozen whatever its parent does."""
        return super().train(False)

    @property
    def precision(self) -> str:
        """The compute precision ("fp32" or "bf16") on the module's current device."""
        return resolve_precision(self.requested_precision, self.mean.device)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``{layer: (N,C_l,H_l,W_l)}`` for ``images`` (N,3,H,W) in [0,1], in ``self.layers`` order, in their dtype."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"VGG16Features expects images (N,3,H,W), got {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        layers = self.features
        if self.precision == "bf16":
            layers = self._bf16_layers()
            x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        found: dict[str, Tensor] = {}
        for index, module in enumerate(layers):
            x = module(x)
            if index in self._index_to_name:
                found[self._index_to_name[index]] = x
        return {name: found[name].to(images.dtype) for name in self.layers}  # channels-last under bf16

    def _bf16_layers(self) -> nn.Sequential:
        """The frozen layers in bf16 and channels_last on the module's device, copied from ``features`` at the
        first bf16 call there (the weights never change after loading)."""
        device = self.mean.device
        if self._bf16_copy is None or self._bf16_copy[0] != device:
            layers = copy.deepcopy(self.features).to(device=device, dtype=torch.bfloat16,
                                                     memory_format=torch.channels_last)
            self._bf16_copy = (device, layers)
        return self._bf16_copy[1]

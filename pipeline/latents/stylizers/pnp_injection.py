"""Plug-and-play feature injection into a diffusers UNet2DConditionModel.

Plug-and-Play Diffusion Features (Tumanyan et al., CVPR 2023) denoise a
source branch and an output branch in one batch and copy the source's decoder
features into the output branch: the residual-branch output of chosen
ResBlocks and the queries/keys of chosen self-attention layers. DiffuseST (Hu
et al., 2024) adds a style source branch whose self-attention keys/values
replace the output's. Here:

- ``PnPSelfAttnProcessor`` (a diffusers attention processor, installed with
  ``unet.set_attn_processor`` on the chosen ``attn1`` layers only) computes
  scaled dot-product self-attention like diffusers' ``AttnProcessor2_0``,
  after overwriting the output rows' q, k (content) and/or k, v (style);
- ResBlock features are replaced by a forward hook on the block's ``conv2``:
  its output is the residual branch just before the skip addition, the point
  where both papers' released code injects (not the block output, which would
  also overwrite the output branch's own skip path).

``PnPInjector`` is a context manager that installs both and restores the
original processors and removes the hooks on exit. Before each UNet call the
caller sets ``injector.plan`` (a ``StepPlan``: which batch rows are the content,
style and output branches, and which injections are active); every injection
performed is appended to ``injector.records``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

FEATURES, QUERY_KEY, KEY_VALUE = "features", "query_key", "key_value"


@dataclass(frozen=True)
class StepPlan:
    """The batch layout and the injections of one UNet call.

    content_row / style_row: batch index of the content / style source branch
    (None when that branch is not in the batch); output_rows: the output
    branch's rows (unconditional and conditional for guidance). features and
    query_key inject from the content row, key_value from the style row; when
    query_key and key_value are both on, the output gets the content's queries
    and the style's keys and values.
    """

    timestep: int
    content_row: int | None
    style_row: int | None
    output_rows: slice
    features: bool = False
    query_key: bool = False
    key_value: bool = False

    def __post_init__(self) -> None:
        if (self.features or self.query_key) and self.content_row is None:
            raise ValueError("content injection needs a content row in the batch")
        if self.key_value and self.style_row is None:
            raise ValueError("style injection needs a style row in the batch")


@dataclass(frozen=True)
class InjectionRecord:
    """One injection that happened: at ``timestep``, into ``layer``, of ``kind`` (features/query_key/key_value)."""

    timestep: int
    layer: str
    kind: str


def _copy_row(x: Tensor, source: int, rows: slice) -> Tensor:
    """``x`` with ``x[rows]`` replaced by ``x[source]`` (broadcast), out of place."""
    out = x.clone()
    out[rows] = x[source : source + 1]
    return out


class PnPSelfAttnProcessor:
    """Self-attention with plug-and-play injection, for one ``attn1`` layer named ``layer``."""

    def __init__(self, injector: PnPInjector, layer: str) -> None:
        self.injector = injector
        self.layer = layer

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(f"{self.layer}: PnP injection applies to self-attention (attn1) layers only")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key, value = self.injector.inject_attention(self.layer, query, key, value)

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class PnPInjector:
    """Installs PnP injection on ``unet`` for the ``with`` block.

    feature_layers: names of ResnetBlock2D modules (e.g. "up_blocks.1.resnets.1").
    attention_layers: names of modules holding self-attention layers (e.g.
    "up_blocks.1.attentions.1"); every ``attn1`` inside them is injected.
    Unknown names raise ValueError listing the valid ones.
    """

    def __init__(self, unet: nn.Module, feature_layers: tuple[str, ...], attention_layers: tuple[str, ...]) -> None:
        from diffusers.models.resnet import (
            ResnetBlock2D,  # deferred: diffusers is slow to import
        )

        self.unet = unet
        self.feature_layers = tuple(feature_layers)
        self.attention_layers = tuple(attention_layers)
        self.plan: StepPlan | None = None
        self.records: list[InjectionRecord] = []
        modules = dict(self.unet.named_modules())
        resnets = [name for name, module in modules.items() if isinstance(module, ResnetBlock2D)]
        for name in self.feature_layers:
            if not isinstance(modules.get(name), ResnetBlock2D):
                raise ValueError(f"feature layer {name!r} is not a ResnetBlock2D of this UNet; "
                                 f"its ResnetBlock2D modules are: {', '.join(resnets)}")
        self._attention_keys: dict[str, str] = {}  # processor key -> injected layer name
        processors = self.unet.attn_processors
        for name in self.attention_layers:
            keys = [k for k in processors if k.startswith(f"{name}.") and k.endswith("attn1.processor")]
            if not keys:
                holders = sorted({key.split(".transformer_blocks")[0] for key in processors
                                  if key.endswith("attn1.processor")})
                raise ValueError(f"attention layer {name!r} holds no self-attention (attn1) of this UNet; "
                                 f"modules with self-attention: {', '.join(holders)}")
            self._attention_keys.update({key: name for key in keys})
        self._resnets = {name: modules[name] for name in self.feature_layers}
        self._original: dict | None = None
        self._handles: list = []

    def __enter__(self) -> PnPInjector:
        self.records = []
        self._original = self.unet.attn_processors
        self.unet.set_attn_processor({
            key: PnPSelfAttnProcessor(self, self._attention_keys[key]) if key in self._attention_keys else processor
            for key, processor in self._original.items()
        })
        self._handles = [resnet.conv2.register_forward_hook(self._feature_hook(name))
                         for name, resnet in self._resnets.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._original is not None:
            self.unet.set_attn_processor(self._original)
            self._original = None
        self.plan = None

    def _record(self, layer: str, kind: str) -> None:
        self.records.append(InjectionRecord(self.plan.timestep, layer, kind))

    def _feature_hook(self, layer: str):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
            plan = self.plan
            if plan is None or not plan.features:
                return None
            self._record(layer, FEATURES)
            return _copy_row(output, plan.content_row, plan.output_rows)

        return hook

    def inject_attention(self, layer: str, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention q, k, v (B, L, dim) with the output rows overwritten as ``plan`` says."""
        plan = self.plan
        if plan is None:
            return query, key, value
        if plan.query_key:
            self._record(layer, QUERY_KEY)
            query = _copy_row(query, plan.content_row, plan.output_rows)
            key = _copy_row(key, plan.content_row, plan.output_rows)
        if plan.key_value:
            self._record(layer, KEY_VALUE)
            key = _copy_row(key, plan.style_row, plan.output_rows)
            value = _copy_row(value, plan.style_row, plan.output_rows)
        return query, key, value


__all__ = ["FEATURES", "KEY_VALUE", "QUERY_KEY", "InjectionRecord", "PnPInjector", "PnPSelfAttnProcessor", "StepPlan"]

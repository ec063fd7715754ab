"""diffusers' BLIP-Diffusion Q-Former, runnable under transformers 5.

diffusers ships the Q-Former of BLIP-Diffusion (``Blip2QFormerModel``, deprecated since diffusers 0.36) written
against transformers 4: it calls ``PreTrainedModel.invert_attention_mask`` and ``get_head_mask``, which
transformers 5 removed, and calls transformers' ``Blip2QFormerAttention`` with the old signature
``(hidden, mask, head_mask, encoder_hidden, encoder_mask, ...)`` expecting a tuple, where transformers 5 takes
``(hidden, mask, encoder_hidden, encoder_mask)`` and returns the tensor. ``qformer_class`` gives the same model
with both restored, the parameters (and so the checkpoints) unchanged. Under transformers 4 it is diffusers'
class as is.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import Tensor, nn


def _invert_attention_mask(model: nn.Module, mask: Tensor) -> Tensor:
    """Additive cross-attention mask (N,1,1,L) or (N,1,L,L) of a 0/1 ``mask`` (N,L) or (N,L,L), as transformers 4."""
    extended = (mask[:, None, None, :] if mask.dim() == 2 else mask[:, None, :, :]).to(model.dtype)
    return (1.0 - extended) * torch.finfo(model.dtype).min


def _get_head_mask(model: nn.Module, head_mask: Tensor | None, num_hidden_layers: int) -> list[None]:
    """One None per layer: transformers 4's result for ``head_mask=None``, the only value the style encoder passes."""
    if head_mask is not None:
        raise ValueError("the BLIP-Diffusion Q-Former adapter supports head_mask=None only")
    return [None] * num_hidden_layers


def _legacy_attention_class(attention_class: type) -> type:
    """A subclass of transformers 5's ``Blip2QFormerAttention`` called as transformers 4's: the old positional
    arguments in, ``(output, None)`` out (no attention probabilities, no key/value cache)."""

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None, head_mask: None = None,
                encoder_hidden_states: Tensor | None = None, encoder_attention_mask: Tensor | None = None,
                past_key_value: None = None, output_attentions: bool = False) -> tuple[Tensor, None]:
        if head_mask is not None or past_key_value is not None or output_attentions:
            raise ValueError("the BLIP-Diffusion Q-Former adapter supports no head mask, cache or attention output")
        output = attention_class.forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                         encoder_attention_mask)
        return output, None

    return type(f"Legacy{attention_class.__name__}", (attention_class,), {"forward": forward})


def qformer_class(blip_module: Any) -> type:
    """The ``Blip2QFormerModel`` of diffusers' BLIP-Diffusion module ``blip_module``, adapted to the installed
    transformers where it needs it (see the module docstring); loads with ``from_pretrained`` as the original."""
    base = blip_module.Blip2QFormerModel
    attention_class = importlib.import_module(base.__module__).Blip2QFormerAttention  # what its layers build
    methods: dict[str, Any] = {name: function for name, function in (
        ("invert_attention_mask", _invert_attention_mask), ("get_head_mask", _get_head_mask))
        if not hasattr(base, name)}
    if "head_mask" not in inspect.signature(attention_class.forward).parameters:
        legacy = _legacy_attention_class(attention_class)

        def __init__(self, config, *args, **kwargs) -> None:
            base.__init__(self, config, *args, **kwargs)
            for module in self.modules():
                if type(module) is attention_class:
                    module.__class__ = legacy

        methods["__init__"] = __init__
    return type(base.__name__, (base,), methods) if methods else base

"""Compute precision of the frozen networks (codecs, and VGG in the reward): fp32 or bf16 autocast.

bf16 here means ``torch.autocast`` with bfloat16: weights stay fp32, the
convolutions and matmuls run in bf16, results come back in the caller's dtype.
On a CPU with native bf16 (AVX512-BF16 or AMX; oneDNN) TAEF2 runs about 2.3x
faster at 256 px, and its round trip is as good as fp32 (PSNR within 0.1 dB on
the shared photos; bf16 vs fp32 output 52-55 dB apart). ``"auto"`` picks bf16
where the hardware runs it natively and fp32 elsewhere. ``rewards.vgg`` runs
its bf16 on a bf16 channels-last copy of its layers instead of under autocast
(faster there, the same numbers).
"""

from __future__ import annotations

import contextlib
import functools
from typing import ContextManager, Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (faster than fp32)."""
    return _native_bf16(torch.device(device))


@functools.lru_cache(maxsize=None)
def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``, else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: str | torch.device) -> Precision:
    """``"fp32"`` or ``"bf16"`` for a requested ``precision`` in ``PRECISIONS`` on ``device``."""
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision  # type: ignore[return-value]


def autocast(precision: Precision, device: str | torch.device) -> ContextManager[None]:
    """The context that runs networks on ``device`` at ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

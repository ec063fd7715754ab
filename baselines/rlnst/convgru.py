"""Convolutional GRU cell.

Ballas et al., "Delving Deeper into Convolutional Networks for Learning Video
Representations" (ICLR 2016).
As in RL-NST's public video code (``convGRU.py``, one layer): the reset,
update and candidate gates are ``kernel_size`` convolutions of the input
concatenated with the hidden state, gate weights initialised orthogonally and
biases to zero. A missing hidden state is zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvGRUCell(nn.Module):
    """``forward(x (N,C_in,H,W), hidden (N,C_h,H,W) or None) -> new hidden (N,C_h,H,W)``, values in (-1, 1)."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        padding = kernel_size // 2
        both = in_channels + hidden_channels
        self.reset_gate = nn.Conv2d(both, hidden_channels, kernel_size, padding=padding)
        self.update_gate = nn.Conv2d(both, hidden_channels, kernel_size, padding=padding)
        self.out_gate = nn.Conv2d(both, hidden_channels, kernel_size, padding=padding)
        for conv in (self.reset_gate, self.update_gate, self.out_gate):
            nn.init.orthogonal_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor, hidden: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvGRUCell expects input (N,{self.in_channels},H,W), got {tuple(x.shape)}")
        if hidden is None:
            hidden = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:])
        elif hidden.shape != (x.shape[0], self.hidden_channels, *x.shape[-2:]):
            raise ValueError(
                f"hidden state {tuple(hidden.shape)} does not fit input {tuple(x.shape)} "
                f"(expected (N,{self.hidden_channels},H,W)); was it carried from a differently sized frame?"
            )
        stacked = torch.cat([x, hidden], dim=1)
        update = torch.sigmoid(self.update_gate(stacked))
        reset = torch.sigmoid(self.reset_gate(stacked))
        candidate = torch.tanh(self.out_gate(torch.cat([x, hidden * reset], dim=1)))
        return hidden * (1 - update) + candidate * update

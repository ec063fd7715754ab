"""Data-parallel helpers: keep replicas identical across processes.

Training runs one process per device (``accelerate launch``), each on
different clips. Algorithms call ``average_gradients`` before every optimiser
step, so all replicas apply the same update; the loop calls
``broadcast_module`` once at the start. With a single process (or no
``torch.distributed`` process group) these are no-ops.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace each trainable parameter's gradient by its mean over processes (one all-reduce).

    Parameters without a gradient count as zero, so every process sends the same buffer.
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def mean_over_processes(value: float | Tensor) -> float:
    """Mean of a scalar over processes (the value itself in a single process)."""
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(1).clone()
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor.item()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy process ``src``'s parameters and buffers to every process."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def synchronized_step(optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter], summed: int, accumulate: int,
                      max_grad_norm: float) -> None:
    """One optimiser step on gradients summed (each scaled by 1/``accumulate``) over ``summed`` transitions.

    A partial sum (``summed`` < ``accumulate``, the end of an episode) is rescaled to a mean; gradients are
    averaged over processes, checked finite (else ``FloatingPointError`` and no step), clipped to
    ``max_grad_norm`` (0: no clip), applied and zeroed.
    """
    if summed < accumulate:
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(accumulate / summed)
    average_gradients(parameters)
    if not all(torch.isfinite(p.grad).all() for p in parameters if p.grad is not None):
        optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError("non-finite policy gradient; the update was skipped and the policy left unchanged")
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

"""Disk cache of a clip's content flows and occlusion masks (RAFT is the slowest part of preparing a clip).

An entry is one safetensors file with ``flow_fwd``, ``flow_bwd``, ``mask_fwd``,
``mask_bwd`` (``rewards.flow.ClipFlows``), named by the sha256 of its key: the
frames' content hash and the flow model's config. The key is stored in the
metadata and checked on read; unreadable or mismatched entries are recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from pipeline.io.files import atomic_output, tensor_digest
from rewards.flow import ClipFlows, RAFTFlow, flows_and_masks

FIELDS = ("flow_fwd", "flow_bwd", "mask_fwd", "mask_bwd")
log = logging.getLogger(__name__)


class FlowCache:
    """``flows(frames, model) -> ClipFlows``, computed once per (frames, model config) under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def flows(self, frames: Tensor, model: RAFTFlow) -> ClipFlows:
        """Flows and masks of ``frames`` (T,3,H,W) in [0,1], on the frames' device."""
        key = json.dumps({"frames": tensor_digest(frames), "flow": dataclasses.asdict(model.config)}, sort_keys=True)
        path = self.root / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"
        if path.is_file():
            try:
                with safe_open(str(path), framework="pt") as entry:
                    if (entry.metadata() or {}).get("key") == key:
                        return ClipFlows(*(entry.get_tensor(name) for name in FIELDS)).to(frames.device)
                log.warning("flow cache entry %s belongs to another key; recomputing", path)
            except (OSError, SafetensorError) as error:
                log.warning("flow cache entry %s is unreadable (%s); recomputing", path, error)
        flows = flows_and_masks(frames, model)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, ".safetensors") as tmp:
            save_file({name: getattr(flows, name).contiguous().cpu() for name in FIELDS}, str(tmp), metadata={"key": key})
        return flows


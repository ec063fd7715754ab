"""Scoring functions used both as RL rewards and as metrics: Gram style, LPIPS content, RAFT temporal."""

from rewards.content import LPIPSDistance
from rewards.flow import ClipFlows, RAFTFlow, estimate_flows, flows_and_masks
from rewards.reward import (
    RewardScales,
    RewardTerms,
    RewardWeights,
    StyleContentTemporalReward,
)
from rewards.style import (
    GramStyleLoss,
    gram_matrix,
    perceptual_loss,
    perceptual_loss_from_features,
)
from rewards.temporal import WarpingError, temporal_loss, warping_error
from rewards.vgg import VGG16Features
from rewards.warp import backward_warp, occlusion_mask, resize_flow

__all__ = [
    "ClipFlows", "GramStyleLoss", "LPIPSDistance", "RAFTFlow", "RewardScales", "RewardTerms", "RewardWeights",
    "StyleContentTemporalReward", "VGG16Features", "WarpingError", "backward_warp", "estimate_flows",
    "flows_and_masks", "gram_matrix", "occlusion_mask", "perceptual_loss", "perceptual_loss_from_features",
    "resize_flow", "temporal_loss", "warping_error",
]

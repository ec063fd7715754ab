"""The RL environment: one episode = one clip, one step = one frame.

Step t takes the residual delta_t, decodes L_t + delta_t into the stylized
frame S_t and scores it with the reward of ``docs/conventions.md``
(``rewards.reward.StyleContentTemporalReward``): Gram style against the
style image, LPIPS content against I_t, and the occlusion-masked L1 between
S_t and the previous OUTPUT frame S_{t-1} warped into frame t by the content
flow. The advantage is r_t(policy) - r_t(baseline), where the baseline's own
per-frame reward is computed once per clip, so a step costs one decode and
one reward evaluation.

Everything that depends only on the clip (baseline latents from the cache,
content flows and occlusion masks at pixel and latent resolution, the
decoded baseline and its reward terms, the reward normalisation scales) is
built once by ``prepare_clip``; style features are held by the reward
module, built once per style.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pipeline.latents.codecs import load_warp_codec
from policies.observations import (
    DEFAULT_OBSERVATION_FLOW,
    LatentFlows,
    check_flow_warp,
    latent_flows,
    observation_channels,
    pixel_warped_latent,
    warps_pixels,
)
from policies.rollout import RolloutState, advance, observe
from rewards.flow import ClipFlows, RAFTFlow, build_flow_model, default_flow_model, flows_and_masks
from rewards.flow_cache import FlowCache
from rewards.reward import (
    TERM_NAMES,
    RewardScales,
    RewardTerms,
    StyleContentTemporalReward,
    masked_l1,
)
from rewards.temporal import long_term_flows
from rewards.warp import detail_preserving_warp


@dataclass
class ClipData:
    """What an episode on one clip needs, computed once (all tensors on one device).

    frames (T,3,H,W) content frames in [0,1]; baseline_latents (T,C,h,w);
    flows: pixel flows/masks of the content (T-1 pairs, ``rewards.flow.ClipFlows``) that score the temporal term;
    observed_flows: those the ``flow`` observation reads, by the estimator named ``observation_flow`` (the
    policy's own, ``rewards.flow.FLOW_ESTIMATORS``; default: the reward's flows);
    latent_flows: per-frame observed flow to the previous frame at latent resolution
    (T entries; entry 0 is zero with mask 0: frame 0 has no previous frame);
    baseline_frames (T,3,H,W) decoded baseline; style: the style's name; baseline_terms: its reward
    terms (T,) under ``scales``, the clip's normalisation (``RewardScales.from_terms``
    of the baseline's raw terms on frames 1..T-1).
    long_term_gap k (0: none): long_term_flows, the reward's flows estimated directly between frames t-k and t
    (T-k pairs, ``rewards.temporal.long_term_flows``), and long_term_scale, the baseline's mean long-term
    temporal term (``long_term_temporal``), which normalises the policy's.
    """

    name: str
    frames: Tensor
    baseline_latents: Tensor
    flows: ClipFlows
    latent_flows: LatentFlows
    baseline_frames: Tensor
    baseline_terms: RewardTerms
    scales: RewardScales
    style: str = "style"
    observed_flows: ClipFlows | None = None
    observation_flow: str = "raft"
    long_term_gap: int = 0
    long_term_flows: ClipFlows | None = None
    long_term_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.observed_flows is None:  # the observation reads the reward's flows
            self.observed_flows = self.flows

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def latent_channels(self) -> int:
        return self.baseline_latents.shape[1]


def _pad_first(flows: LatentFlows) -> LatentFlows:
    """Prepend an empty entry (zero flow, mask 0) for frame 0."""
    return LatentFlows(
        torch.cat([torch.zeros_like(flows.flow[:1]), flows.flow]),
        torch.cat([torch.zeros_like(flows.mask[:1]), flows.mask]),
    )


def _concat_terms(parts: list[RewardTerms]) -> RewardTerms:
    return RewardTerms(*(torch.cat([getattr(p, name) for p in parts]) for name in ("total", *TERM_NAMES)))


def score_frames(
    reward: StyleContentTemporalReward, stylized: Tensor, content: Tensor, prev_stylized: Tensor | None,
    flows: ClipFlows | None, scales: RewardScales = RewardScales(),
) -> RewardTerms:
    """Reward terms of ``stylized`` (N,3,H,W) given the previous stylized frames (N,3,H,W) or None.

    ``flows``: the N content pairs (t-1, t) whose ``flow_bwd``/``mask_bwd``
    warp each previous frame into frame t; ``scales``: the clip's reward
    normalisation. Differentiable in ``stylized``.

    The previous frames are warped in two bands (``rewards.warp.detail_preserving_warp``), not bilinearly: a
    bilinear warp softens the strokes of the target, and a policy that follows the temporal term's gradient
    toward a softened copy of its last output loses style at every frame.
    """
    if prev_stylized is None:
        return reward(stylized, content, scales=scales)
    if flows is None:
        raise ValueError("scoring against previous frames needs their content flows")
    warped = detail_preserving_warp(prev_stylized, flows.flow_bwd)
    return reward(stylized, content, warped, flows.mask_bwd, scales=scales)


def long_term_temporal(stylized: Tensor, earlier: Tensor, flows: ClipFlows) -> Tensor:
    """The temporal term between frames k apart (N,): masked L1 between ``stylized`` (N,3,H,W) and the frames k
    earlier ``earlier`` (N,3,H,W) warped to them (two bands, as ``score_frames``) by ``flows``, the N pairs
    (t-k, t) estimated directly. Differentiable in ``stylized``."""
    return masked_l1(stylized, detail_preserving_warp(earlier, flows.flow_bwd), flows.mask_bwd)


@torch.no_grad()
def prepare_clip(
    frames: Tensor,
    style_image: Tensor,
    stylizer,
    cache,
    flow_model: RAFTFlow | None = None,
    reward: StyleContentTemporalReward | None = None,
    name: str = "clip",
    flow_cache: FlowCache | None = None,
    style: str = "style",
    observation_flow: str = DEFAULT_OBSERVATION_FLOW,
    long_term_gap: int = 0,
) -> ClipData:
    """Build the ``ClipData`` of ``frames`` (T,3,H,W) in [0,1] (T >= 2, sides multiples of 8).

    ``stylizer``: a ``pipeline.latents.stylizers.base.Stylizer`` (its codec decodes);
    ``cache``: a ``pipeline.latents.cache.LatentCache`` or None (stylize without caching);
    ``flow_model``: RAFT or None (the shared RAFT-small); ``reward``: the
    style's reward module (the clip's normalisation scales are computed here); ``flow_cache``: reuse flows computed
    by earlier runs (``rewards.flow_cache.FlowCache``); ``style``: the style's name, which picks the episode's
    reward in a multi-style run; ``observation_flow``: the estimator of the observation's flows
    (``rewards.flow.FLOW_ESTIMATORS``, the policy's ``observation_flow``; ``raft``: the reward's flows);
    ``long_term_gap`` k > 0: also the reward's flows between frames k apart and the baseline's long-term
    temporal term (none for a clip of k frames or fewer). Tensors live on the codec's device.
    """
    if reward is None:
        raise TypeError("prepare_clip() needs the style's reward module (reward=...)")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T,3,H,W), got {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"clip {name!r} has {frames.shape[0]} frame(s); an episode needs at least 2")
    codec = stylizer.codec
    device = codec.device
    if cache is not None:
        latents = cache.latents(stylizer, frames, style_image)
    else:
        latents = stylizer.stylize(frames.to(device), style_image.to(device))
    latents = latents.to(device)
    frames = frames.to(device)
    flow_model = flow_model if flow_model is not None else default_flow_model(device)
    flows = flow_cache.flows(frames, flow_model) if flow_cache is not None else flows_and_masks(frames, flow_model)
    observed = flows
    if observation_flow != "raft":
        observed = flows_and_masks(frames, build_flow_model(observation_flow, device))
    small = _pad_first(latent_flows(observed.flow_bwd, observed.mask_bwd, tuple(latents.shape[-2:])))
    baseline_frames = codec.decode(latents)

    first = score_frames(reward, baseline_frames[:1], frames[:1], None, None)
    rest = score_frames(reward, baseline_frames[1:], frames[1:], baseline_frames[:-1], flows)
    scales = RewardScales.from_terms(rest)
    terms = _concat_terms([reward.rescored(first, scales), reward.rescored(rest, scales)])
    long_term, long_term_scale = None, 1.0
    if 0 < long_term_gap < frames.shape[0]:
        long_term = long_term_flows(frames, long_term_gap, flow_model)
        baseline_long_term = long_term_temporal(baseline_frames[long_term_gap:], baseline_frames[:-long_term_gap],
                                                long_term)
        long_term_scale = max(baseline_long_term.mean().item(), 1e-6)
    return ClipData(name, frames, latents, flows, small, baseline_frames, terms, scales, style, observed,
                    observation_flow, long_term_gap if long_term is not None else 0, long_term, long_term_scale)


@dataclass
class StepResult:
    """Outcome of one step (frame ``t``): rewards as floats, raw terms, and the refined latent/frame."""

    t: int
    reward: float
    baseline_reward: float
    advantage: float
    terms: dict[str, float]
    done: bool
    latent: Tensor = field(repr=False)
    frame: Tensor = field(repr=False)

    baseline_terms: dict[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Loggable scalars: reward, baseline_reward, advantage, the raw terms and the baseline's (``baseline_<term>``)."""
        baseline = {f"baseline_{k}": v for k, v in self.baseline_terms.items()}
        return {"reward": self.reward, "baseline_reward": self.baseline_reward, "advantage": self.advantage,
                **self.terms, **baseline}


class LatentStyleEnv:
    """Episodes over one clip: ``reset() -> obs``, ``step(delta) -> (next_obs, StepResult)``.

    Observations are (1,Cobs,h,w) of kind ``observation`` (``policies.observations``);
    actions are residuals delta (1,C,h,w). After the last frame ``done`` is
    True and the returned observation is zeros (there is no next frame).
    ``render``/``score`` are the same decode and reward, differentiable, for
    algorithms that backpropagate through the reward.
    ``flow_warp``: how the ``flow`` observation warps the previous output
    (``policies.observations.FLOW_WARPS``); ``adopt(policy)``
    takes the policy's own setting (``run_episode`` and REINFORCE call it), and for a pixel warp the codec of
    its ``warp_encoder`` (``pipeline.latents.codecs.load_warp_codec``) unless ``warp_codec`` is given.
    """

    def __init__(
        self, clip: ClipData, codec, reward: StyleContentTemporalReward, observation: str, flow_warp: str = "latent",
        warp_codec=None,
    ) -> None:
        if clip.latent_channels != codec.latent_channels:
            raise ValueError(f"clip latents have {clip.latent_channels} channels, the codec {codec.latent_channels}")
        self.clip = clip
        self.codec = codec
        self._given_warp_codec = warp_codec  # None: ``adopt`` takes the policy's
        self.warp_codec = codec if warp_codec is None else warp_codec  # re-encodes a pixel-warp observation
        self.reward = reward
        self.observation = observation
        self.observation_channels = observation_channels(observation, clip.latent_channels)
        self.flow_warp = check_flow_warp(flow_warp)
        self.t = 0
        self._state = RolloutState()
        self._prev_frame: Tensor | None = None
        # the last long_term_gap decoded outputs (detached), oldest first: the long-term term's earlier frames
        self._recent_outputs: deque[Tensor] = deque(maxlen=clip.long_term_gap)

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames

    def adopt(self, policy) -> LatentStyleEnv:
        """Use ``policy``'s ``flow_warp``; call before ``reset``. A ``flow`` policy must read the flows of the
        estimator the clip's observation was built with."""
        if self.observation == "flow" and policy.observation_flow != self.clip.observation_flow:
            raise ValueError(f"the policy reads {policy.observation_flow} flows but clip {self.clip.name!r} was "
                             f"prepared with {self.clip.observation_flow} flows (prepare_clip(observation_flow=...))")
        self.flow_warp = check_flow_warp(policy.flow_warp)
        if self._given_warp_codec is None and warps_pixels(self.flow_warp):
            self.warp_codec = load_warp_codec(self.codec, policy.warp_encoder)
        return self

    def _observe(self) -> Tensor:
        t = self.t
        warped = None
        if self.observation == "flow" and warps_pixels(self.flow_warp) and t > 0 and self._prev_frame is not None:
            with torch.no_grad():
                warped = pixel_warped_latent(self.warp_codec, self._prev_frame,
                                             self.clip.observed_flows.flow_bwd[t - 1 : t], self._state.prev_output,
                                             flow_warp=self.flow_warp)
        return observe(self.observation, self.clip.baseline_latents[t : t + 1], self._state,
                       self.clip.latent_flows[t : t + 1], warped)

    def reset(self) -> Tensor:
        """Start the clip: the observation (1,Cobs,h,w) of frame 0."""
        self.t = 0
        self._state = RolloutState()
        self._prev_frame = None
        self._recent_outputs.clear()
        return self._observe()

    def render(self, t: int, delta: Tensor) -> Tensor:
        """Decoded frame (1,3,H,W) of L_t + delta (1,C,h,w); differentiable in ``delta``."""
        return self.codec.decode(self.clip.baseline_latents[t : t + 1] + delta)

    def score(self, t: int, frame: Tensor, prev_frame: Tensor | None) -> RewardTerms:
        """Reward terms of ``frame`` (1,3,H,W) as frame t after ``prev_frame`` (None at t=0); differentiable."""
        content = self.clip.frames[t : t + 1]
        if t == 0 or prev_frame is None:
            return score_frames(self.reward, frame, content, None, None, self.clip.scales)
        return score_frames(self.reward, frame, content, prev_frame, self.clip.flows[t - 1], self.clip.scales)

    def long_term_score(self, frame: Tensor) -> Tensor | None:
        """The long-term temporal term (1,) of ``frame`` (1,3,H,W) as the current frame t against this episode's
        output k = ``clip.long_term_gap`` frames earlier, over the baseline's (``ClipData.long_term_scale``); None
        before frame k or without long-term flows. Differentiable in ``frame``."""
        gap = self.clip.long_term_gap
        if not gap or len(self._recent_outputs) < gap:
            return None
        pair = self.clip.long_term_flows[self.t - gap : self.t - gap + 1]
        return long_term_temporal(frame, self._recent_outputs[0], pair) / self.clip.long_term_scale

    def _check_delta(self, delta: Tensor) -> None:
        if self.t >= self.num_frames:
            raise RuntimeError("the episode is over; call reset()")
        expected = (1, *self.clip.baseline_latents.shape[1:])
        if tuple(delta.shape) != expected:
            raise ValueError(f"delta must be {expected}, got {tuple(delta.shape)}")

    def _finish(self, delta: Tensor, frame: Tensor, terms: RewardTerms) -> tuple[Tensor, StepResult]:
        """Advance past the current frame given its (detached) residual, decoded frame and reward terms."""
        t = self.t
        reward = terms.total.item()
        baseline = self.clip.baseline_terms.total[t].item()
        latent = self.clip.baseline_latents[t : t + 1] + delta
        self._state = advance(self.clip.baseline_latents[t : t + 1], latent)
        self._prev_frame = frame
        if self.clip.long_term_gap:
            self._recent_outputs.append(frame)
        self.t += 1
        done = self.t == self.num_frames
        result = StepResult(
            t=t,
            reward=reward,
            baseline_reward=baseline,
            advantage=reward - baseline,
            terms={name: getattr(terms, name).item() for name in TERM_NAMES},
            done=done,
            latent=latent,
            frame=frame,
            baseline_terms={name: getattr(self.clip.baseline_terms, name)[t].item() for name in TERM_NAMES},
        )
        if done:
            c, h, w = self.clip.baseline_latents.shape[1:]
            return delta.new_zeros(1, self.observation_channels, h, w), result
        return self._observe(), result

    def step(self, delta: Tensor) -> tuple[Tensor, StepResult]:
        """Apply ``delta`` (1,C,h,w) at the current frame; returns the next observation and the step's result."""
        self._check_delta(delta)
        with torch.no_grad():
            delta = delta.detach().to(self.clip.baseline_latents)
            frame = self.render(self.t, delta)
            terms = self.score(self.t, frame, self._prev_frame)
        return self._finish(delta, frame, terms)

    def step_through(self, delta: Tensor) -> tuple[Tensor, RewardTerms, Tensor | None, StepResult]:
        """``step`` for algorithms that backpropagate through the reward: also returns the frame's reward
        terms (each (1,), differentiable in ``delta``, the previous outputs held fixed) and its normalised
        long-term temporal term (``long_term_score``, None where there is none)."""
        self._check_delta(delta)
        frame = self.render(self.t, delta)
        terms = self.score(self.t, frame, self._prev_frame)
        long_term = self.long_term_score(frame)
        detached = RewardTerms(*(getattr(terms, name).detach() for name in ("total", *TERM_NAMES)))
        obs, result = self._finish(delta.detach(), frame.detach(), detached)
        return obs, terms, long_term, result


@torch.no_grad()
def run_episode(env: LatentStyleEnv, policy, deterministic: bool = True) -> list[StepResult]:
    """Play one episode of ``policy`` (a ``policies.base.Policy``) on ``env`` without learning."""
    env.adopt(policy)
    results, obs, done = [], env.reset(), False
    while not done:
        obs, result = env.step(policy.act(obs, deterministic=deterministic))
        results.append(result)
        done = result.done
    return results

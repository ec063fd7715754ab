"""Training loop of the RL-NST image and video models (one model per style, as in the paper).

An episode starts from a content crop (image model) or a window of
``clip_len`` consecutive frames of a training clip (video model). Each frame
is refined for ``episode_steps`` steps: the state is the moving image,
initialised with the content; the policy samples an action, the stylizer
produces the next moving image, the reward is -lambda * style of that image,
and the transition goes into the replay buffer (episodes end by the time
limit only, so ``done`` is always 0). The video model resets the actor's
step-wise hidden state for every frame and the stylizer's frame-wise hidden
states (one per step index) for every clip. After ``bootstrap_episodes``
episodes, every ``update_every`` environment steps one ``RLNSTAgent.update``
runs on a replay batch (schedule of the public code: update every 4 steps,
actor every 2nd update, 10 steps per episode, 10 bootstrap episodes).

The loop, the run folder in ``out_dir`` (``model/`` for inference,
``checkpoint.pt`` for ``resume``, ``config.json``, ``log.csv``,
``curves.png``) and resuming are those of ``baselines.training``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from baselines.rlnst.agent import AgentConfig, RLNSTAgent
from baselines.rlnst.data import (
    ContentFrames,
    default_clips,
    default_photos,
    expand_images,
)
from baselines.rlnst.losses import RLNSTObjective
from baselines.rlnst.models import RLNST, Hidden, RLNSTConfig
from baselines.training import ReplayTrainer, TrainResult, json_friendly
from pipeline.io.images import load_image
from policies.sac_core import ReplayBuffer

MODES = ("image", "video")
VIDEO_TEMPORAL_WEIGHT = 1e2
LOG_COLUMNS = (
    "update", "env_steps", "episodes", "elapsed_s", "reward", "critic_loss", "q", "actor_loss",
    "alpha", "alpha_loss", "log_prob", "content", "style", "tv", "temporal", "style_learning_loss",
)
CURVES: dict[str, tuple[str, ...]] = {  # panel title: logged columns
    "style-learning loss": ("style_learning_loss",), "content (relu2_2 MSE)": ("content",),
    "style (sum of Gram MSE)": ("style",), "reward": ("reward",), "critic loss": ("critic_loss",),
    "entropy temperature": ("alpha",), "compound regularisation": ("temporal",),
}


@dataclass
class TrainConfig:
    """What to train on and for how long. ``clips``/``photos`` None: the shared training clips / photos
    (photos are used by the image model only). ``agent`` None: defaults, with the compound regularisation
    weight zeta = 1e2 for the video model and 0 for the image model."""

    style: Path
    out_dir: Path
    mode: str = "image"
    clips: Sequence[Path] | None = None
    photos: Sequence[Path] | None = None
    size: int = 128
    max_frames: int | None = None
    updates: int = 2000
    episode_steps: int = 10
    clip_len: int = 4
    bootstrap_episodes: int = 10
    update_every: int = 4
    batch_size: int = 1
    buffer_capacity: int = 500
    log_every: int = 10
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "cpu"
    style_size: int | None = 256
    agent: AgentConfig | None = None
    model: RLNSTConfig | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not Path(self.style).is_file():
            raise FileNotFoundError(f"style image {self.style} does not exist")
        positive = ("updates", "episode_steps", "clip_len", "update_every", "batch_size", "buffer_capacity",
                    "log_every", "checkpoint_every")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad or self.bootstrap_episodes < 0:
            raise ValueError(f"{', '.join(bad) or 'bootstrap_episodes'} must be positive (non-negative)")
        video = self.mode == "video"
        if self.agent is None:
            self.agent = AgentConfig(temporal_weight=VIDEO_TEMPORAL_WEIGHT if video else 0.0)
        if self.model is None:
            self.model = RLNSTConfig(video=video)
        if self.model.video != video:
            raise ValueError(f"mode {self.mode!r} needs RLNSTConfig(video={video})")
        if self.clips is None:
            self.clips = default_clips()
        if self.photos is None:
            self.photos = default_photos() if not video else []
        self.photos = expand_images(self.photos)

    def summary(self) -> dict:
        """JSON-friendly dict of the settings (the run folder's config.json)."""
        return json_friendly(dataclasses.asdict(self))


class RLNSTTrainer(ReplayTrainer):
    """Episodes of RL-NST: a content crop (image model) or clip (video model), refined step by step."""

    name = "RL-NST"
    checkpoint_format = "rlnst-trainer-v2"
    log_columns = LOG_COLUMNS
    curves = CURVES
    resume_keys = ("mode", "size", "buffer_capacity", "style")
    progress_columns = (("loss", "style_learning_loss"), ("content", "content"), ("style", "style"),
                        ("reward", "reward"))
    divergence_hint = "a lower --lr or --style-weight"

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        super().__init__(config, resume)
        cfg = config
        self.model = RLNST(cfg.model)  # first, so its initial weights depend on the seed only
        agent_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.content = ContentFrames(cfg.clips, cfg.photos, cfg.size, cfg.max_frames, self.data_generator)
        objective = RLNSTObjective(load_image(cfg.style), style_size=cfg.style_size)
        self.agent = RLNSTAgent(self.model, objective, cfg.agent, agent_generator).to(cfg.device)
        self.buffer = ReplayBuffer(cfg.buffer_capacity, seed=cfg.seed + 2, device="cpu")

    def collect_episode(self) -> Iterator[dict[str, Tensor]]:
        cfg, model = self.config, self.model
        frames = self.content.sample_clip(cfg.clip_len) if model.is_video else self.content.sample_image()
        frame_hidden: list = [None] * cfg.episode_steps  # per step index, carried across the clip's frames
        for frame in frames.to(self.device).split(1):
            state, step_hidden = frame, None
            for k in range(cfg.episode_steps):
                with torch.no_grad():
                    out = model.step(state, Hidden(step_hidden, frame_hidden[k]))
                    reward = self.agent.reward(out.image)
                transition = dict(state=state.half(), action=out.action, reward=reward,
                                  next_state=out.image.half(), done=torch.zeros(1, device=self.device))
                if cfg.agent.anchor == "content":
                    transition["content"] = frame.half()
                if model.is_video:
                    zeros = frame.new_zeros(1, cfg.model.channels[2], cfg.size // 4, cfg.size // 4)
                    transition["step_hidden"] = (zeros if step_hidden is None else step_hidden).half()
                    transition["frame_hidden"] = (zeros if frame_hidden[k] is None else frame_hidden[k]).half()
                yield transition
                state, step_hidden, frame_hidden[k] = out.image, out.hidden.step, out.hidden.frame

    def training_settings(self) -> dict[str, Any]:
        """What ``inference.training_settings`` reads back: mode, style, size, episode_steps, updates."""
        cfg = self.config
        return {"mode": cfg.mode, "style": str(cfg.style), "size": cfg.size, "episode_steps": cfg.episode_steps,
                "updates": self.progress.updates}


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train an RL-NST model per ``config``; ``resume`` continues from ``out_dir/checkpoint.pt``."""
    return RLNSTTrainer(config, resume).train(log)

"""Training loop of RLMiniStyler: one model for many styles, environment batch 1, replay batch 8.

An episode pairs a random content crop (a frame of the training clips or a
photo) with a random crop of a random training style image. The state is
the moving image, initialised with the content; for ``episode_steps`` steps
the policy samples an action, the builder makes the next moving image under
the style's code, the reward is minus its style term, and the transition
(with the style crop and its style id) goes into the replay buffer; episodes
end by the time limit only (``done`` = 0). After ``bootstrap_episodes``
episodes, every ``update_every`` environment steps one
``MiniStylerAgent.update`` runs on a replay batch of ``batch_size``. The
public code's training script is not published; the schedule here (10 steps
per episode, an update every step) is this port's choice.

Styles: the shared paintings except ``HELD_OUT_STYLES`` (kept for testing
generalisation to unseen styles). Content: the shared training clips (never
``videos/test``) and photos.

What a CPU run reaches (measured here: 2 shared cores, one torch thread): about
1.5 s per update at 64 px (replay batch 8), roughly 4x that at 128 px. 400
updates at 64 px (10 min; lr 1e-3, actor lr / 10, alpha from 0.1; the five
training clips, 8 frames each, and the photos; six styles), scored on the four
shared photos at 64 px with the held-out ``woman_with_hat_matisse.jpg``: style
term 25.1 for the photos themselves, 25.0 / 23.7 / 22.5 after 1 / 5 / 10
steps; content term (relu4_1 MSE to the photo) 0.1 / 2.8 / 8.9. Each
(residual) step is a small move: the stylization deepens with the number of
steps (starry_night: 29.3 for the photos, 26.2 after 10 steps, 23.7 after 20)
until, past about 20 steps, the added texture turns to noise (24.9 after 40).
The steps shrink as training goes on (content term per step 0.7 at update 50,
0.14 at 400, while the uncertainty weights move from 0.5 each to content 0.72,
style 0.34). The paper's quality needs far more updates (a GPU).

The loop, the run folder in ``out_dir`` (``model/`` for inference,
``checkpoint.pt`` for ``resume``, ``config.json``, ``log.csv``,
``curves.png``) and resuming are those of ``baselines.training``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.rlministyler.agent import AgentConfig, MiniStylerAgent
from baselines.rlministyler.inference import step_losses
from baselines.rlministyler.losses import MiniStylerObjective
from baselines.rlministyler.models import RLMiniStyler, RLMiniStylerConfig
from baselines.rlnst.data import (
    ContentFrames,
    default_clips,
    default_photos,
    expand_images,
)
from baselines.training import ReplayTrainer, TrainResult, json_friendly
from pipeline.io.files import shared_data_dir, write_json
from pipeline.io.images import load_image
from policies.sac_core import ReplayBuffer

HELD_OUT_STYLES: tuple[str, ...] = ("woman_with_hat_matisse.jpg",)
LOG_COLUMNS = (
    "update", "env_steps", "episodes", "elapsed_s", "reward", "critic_loss", "q", "actor_loss", "alpha",
    "alpha_loss", "log_prob", "content", "style", "contrastive", "supervised_loss",
    "w_content", "w_style", "w_contrastive",
)
CURVES: dict[str, tuple[str, ...]] = {
    "content (relu4_1 MSE to the previous moving image)": ("content",),
    "style (mean/std MSE, relu1_1..relu4_1)": ("style",),
    "style-code contrast": ("contrastive",),
    "reward": ("reward",),
    "uncertainty weights 0.5 exp(-s)": ("w_content", "w_style", "w_contrastive"),
    "critic loss": ("critic_loss",),
    "entropy temperature": ("alpha",),
}


def default_styles() -> list[Path]:
    """The shared style images (``styles/``) except ``HELD_OUT_STYLES``."""
    folder = shared_data_dir() / "styles"
    if not folder.is_dir():
        raise FileNotFoundError(f"style images not found at {folder}; pass styles explicitly or set VSTYLE_SHARED")
    return [p for p in expand_images([folder]) if p.name not in HELD_OUT_STYLES]


@dataclass
class TrainConfig:
    """What to train on and for how long. ``clips``/``photos``/``styles`` None: the shared training clips,
    photos and styles (minus ``HELD_OUT_STYLES``). ``size``: content and style crop size (multiple of 4)."""

    out_dir: Path
    clips: Sequence[Path] | None = None
    photos: Sequence[Path] | None = None
    styles: Sequence[Path] | None = None
    size: int = 128
    max_frames: int | None = None
    updates: int = 2000
    episode_steps: int = 10
    bootstrap_episodes: int = 2
    update_every: int = 1
    batch_size: int = 8
    buffer_capacity: int = 500
    log_every: int = 10
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "cpu"
    agent: AgentConfig = field(default_factory=AgentConfig)
    model: RLMiniStylerConfig = field(default_factory=RLMiniStylerConfig)

    def __post_init__(self) -> None:
        positive = ("updates", "episode_steps", "update_every", "batch_size", "buffer_capacity", "log_every",
                    "checkpoint_every")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad or self.bootstrap_episodes < 0:
            raise ValueError(f"{', '.join(bad) or 'bootstrap_episodes'} must be positive (non-negative)")
        if self.batch_size > self.buffer_capacity:
            raise ValueError(f"batch_size {self.batch_size} exceeds the buffer capacity {self.buffer_capacity}")
        self.clips = default_clips() if self.clips is None else list(self.clips)
        self.photos = expand_images(default_photos() if self.photos is None else self.photos)
        missing = [str(p) for p in self.styles or () if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"style image(s) not found: {', '.join(missing)}")
        self.styles = expand_images(default_styles() if self.styles is None else self.styles)
        if not self.styles:
            raise ValueError("no style images to train on")

    def summary(self) -> dict:
        """JSON-friendly dict of the settings (the run folder's config.json)."""
        return json_friendly(dataclasses.asdict(self))


def held_out_step_losses(model: RLMiniStyler, size: int, out_dir: Path | None = None) -> dict[str, dict]:
    """Style and content terms after 1, 5 and 10 steps (``inference.step_losses``) on the shared photos,
    resized to ``size`` x ``size``, for each style of ``HELD_OUT_STYLES`` (never used in training by
    default); written to ``out_dir/steps.json`` (atomically) when ``out_dir`` is given."""
    photos = torch.cat([F.interpolate(load_image(p), size=(size, size), mode="area") for p in default_photos()])
    device = next(model.parameters()).device
    styles = shared_data_dir() / "styles"
    report = {name: step_losses(model, photos.to(device), load_image(styles / name)) for name in HELD_OUT_STYLES}
    if out_dir is not None:
        write_json(Path(out_dir) / "steps.json", report)
    return report


class MiniStylerTrainer(ReplayTrainer):
    """Episodes of RLMiniStyler: a content crop refined under the code of a random style crop."""

    name = "RLMiniStyler"
    checkpoint_format = "rlministyler-trainer-v3"
    log_columns = LOG_COLUMNS
    curves = CURVES
    resume_keys = ("size", "buffer_capacity", "styles", "model")
    progress_columns = (("content", "content"), ("style", "style"), ("contrast", "contrastive"), ("reward", "reward"))
    divergence_hint = "a lower --lr"

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        super().__init__(config, resume)
        cfg = config
        self.content = ContentFrames(cfg.clips, cfg.photos, cfg.size, cfg.max_frames, self.data_generator)
        self.styles = [ContentFrames([], [path], cfg.size, generator=self.data_generator) for path in cfg.styles]
        self.model = RLMiniStyler(cfg.model)
        self.agent = MiniStylerAgent(self.model, MiniStylerObjective(), cfg.agent).to(cfg.device)
        self.buffer = ReplayBuffer(cfg.buffer_capacity, seed=cfg.seed + 1, device="cpu")

    def collect_episode(self) -> Iterator[dict[str, Tensor]]:
        style_id = int(torch.randint(len(self.styles), (1,), generator=self.data_generator))
        style = self.styles[style_id].sample_image().to(self.device)
        state = self.content.sample_image().to(self.device)
        with torch.no_grad():
            code = self.model.style_code(style)
            style_features = self.agent.objective.features(style)
        for _ in range(self.config.episode_steps):
            with torch.no_grad():
                out = self.model.step(state, code)
                reward = self.agent.reward(out.image, style_features)
            yield dict(state=state.half(), style=style.half(), style_id=torch.tensor([style_id]),
                       action=out.action.half(), reward=reward, next_state=out.image.half(),
                       done=torch.zeros(1, device=self.device))
            state = out.image

    def training_settings(self) -> dict[str, Any]:
        """What ``inference.training_settings`` reads back: styles, held_out_styles, size, episode_steps, updates."""
        cfg = self.config
        return {
            "styles": [str(p) for p in cfg.styles],
            "held_out_styles": [name for name in HELD_OUT_STYLES if name not in {Path(p).name for p in cfg.styles}],
            "size": cfg.size,
            "episode_steps": cfg.episode_steps,
            "updates": self.progress.updates,
        }


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train an RLMiniStyler model per ``config``; ``resume`` continues from ``out_dir/checkpoint.pt``."""
    return MiniStylerTrainer(config, resume).train(log)

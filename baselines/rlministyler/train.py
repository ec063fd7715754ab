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

Outputs in ``out_dir``: ``model.pt`` (what inference needs), ``trainer.pt``
(everything, for ``resume``), ``log.csv`` (one row per ``log_every``
updates) and ``curves.png``; all written atomically. Resuming continues from
``trainer.pt`` with a fresh episode; log rows after its update count are
dropped. A non-finite loss stops training with ``FloatingPointError``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from baselines.rlministyler.agent import AgentConfig, MiniStylerAgent
from baselines.rlministyler.inference import FORMATS, save_model, step_losses
from baselines.rlministyler.losses import MiniStylerObjective
from baselines.rlministyler.models import RLMiniStyler, RLMiniStylerConfig
from baselines.rlnst.data import (
    ContentFrames,
    default_clips,
    default_photos,
    expand_images,
)
from baselines.training import (
    Progress,
    RunFiles,
    json_friendly,
    restore_trainer,
    rows_until,
    trainer_checkpoint,
)
from pipeline.io.files import atomic_output, save_torch_atomic, shared_data_dir
from pipeline.io.images import load_image
from pipeline.io.run_files import plot_curves, write_csv
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
        """JSON-friendly dict of the settings (stored in checkpoints)."""
        return json_friendly(dataclasses.asdict(self))


@dataclass
class TrainResult:
    model: RLMiniStyler
    agent: MiniStylerAgent
    progress: Progress
    model_path: Path
    trainer_path: Path
    log_path: Path
    curves_path: Path


def held_out_step_losses(model: RLMiniStyler, size: int, out_dir: Path | None = None) -> dict[str, dict]:
    """Style and content terms after 1, 5 and 10 steps (``inference.step_losses``) on the shared photos,
    resized to ``size`` x ``size``, for each style of ``HELD_OUT_STYLES`` (never used in training by
    default); written to ``out_dir/steps.json`` (atomically) when ``out_dir`` is given."""
    photos = torch.cat([F.interpolate(load_image(p), size=(size, size), mode="area") for p in default_photos()])
    device = next(model.parameters()).device
    styles = shared_data_dir() / "styles"
    report = {name: step_losses(model, photos.to(device), load_image(styles / name)) for name in HELD_OUT_STYLES}
    if out_dir is not None:
        with atomic_output(Path(out_dir) / "steps.json", ".json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return report


def training_info(config: TrainConfig, progress: Progress) -> dict:
    """How the model was trained, stored in ``model.pt`` beside the weights (see ``inference.save_model``)."""
    return {
        "styles": [str(p) for p in config.styles],
        "held_out_styles": [name for name in HELD_OUT_STYLES if name not in {Path(p).name for p in config.styles}],
        "size": config.size,
        "episode_steps": config.episode_steps,
        "updates": progress.updates,
    }


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    old, new = saved["config"], config.summary()
    for key in ("size", "buffer_capacity", "styles", "model"):
        if old[key] != new[key]:
            raise ValueError(f"cannot resume: the checkpoint was trained with {key}={old[key]!r}, now {new[key]!r}")


def _finite_or_raise(logs: dict[str, float], where: str, trainer: Path) -> None:
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"RLMiniStyler training diverged {where}: non-finite {bad}; "
            f"the last good checkpoint is {trainer} (resume with a lower --lr)"
        )


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train an RLMiniStyler model per ``config``; ``resume`` continues from ``out_dir/trainer.pt``."""
    log = log or (lambda _: None)
    cfg = config
    files = RunFiles(Path(cfg.out_dir))
    files.prepare(resume)

    torch.manual_seed(cfg.seed)
    data_generator = torch.Generator().manual_seed(cfg.seed)
    content = ContentFrames(cfg.clips, cfg.photos, cfg.size, cfg.max_frames, data_generator)
    styles = [ContentFrames([], [path], cfg.size, generator=data_generator) for path in cfg.styles]
    model = RLMiniStyler(cfg.model)
    agent = MiniStylerAgent(model, MiniStylerObjective(), cfg.agent).to(cfg.device)
    buffer = ReplayBuffer(cfg.buffer_capacity, seed=cfg.seed + 1, device="cpu")
    progress = Progress()
    rows: list[dict] = []
    if resume:
        saved = torch.load(files.trainer, map_location=cfg.device, weights_only=False)
        _check_resumable(saved, cfg)
        progress = restore_trainer(saved, agent, buffer, data_generator)
        rows = rows_until(files.log, progress.updates)
        log(f"resumed from {files.trainer} at update {progress.updates}")

    def save() -> None:
        save_model(model, files.model, **training_info(cfg, progress))
        save_torch_atomic(
            trainer_checkpoint(FORMATS[1], cfg.summary(), agent, buffer, progress, data_generator), files.trainer
        )
        write_csv(rows, files.log, columns=LOG_COLUMNS)
        plot_curves(rows, files.curves, CURVES, x_key="update")

    device = torch.device(cfg.device)
    pending: list[dict[str, float]] = []
    rewards: list[float] = []
    started = time.perf_counter() - progress.elapsed_s
    while progress.updates < cfg.updates:
        style_id = int(torch.randint(len(styles), (1,), generator=data_generator))
        style = styles[style_id].sample_image().to(device)
        state = content.sample_image().to(device)
        with torch.no_grad():
            code = model.style_code(style)
            style_features = agent.objective.features(style)
        for _ in range(cfg.episode_steps):
            if progress.updates >= cfg.updates:
                break
            with torch.no_grad():
                out = model.step(state, code)
                reward = agent.reward(out.image, style_features)
            buffer.add(
                state=state.half(), style=style.half(), style_id=torch.tensor([style_id]), action=out.action.half(),
                reward=reward, next_state=out.image.half(), done=torch.zeros(1, device=device),
            )
            rewards.append(reward.item())
            _finite_or_raise({"reward": rewards[-1]}, f"when acting after update {progress.updates}", files.trainer)
            state = out.image
            progress.env_steps += 1

            ready = progress.episodes >= cfg.bootstrap_episodes and len(buffer) >= cfg.batch_size
            if not (ready and progress.env_steps % cfg.update_every == 0):
                continue
            batch = {k: v.to(device) if k == "style_id" else v.to(device).float()
                     for k, v in buffer.sample(cfg.batch_size).items()}
            logs = agent.update(batch, progress.updates)
            progress.updates += 1
            _finite_or_raise(logs, f"at update {progress.updates}", files.trainer)
            pending.append(logs)
            if progress.updates % cfg.log_every == 0 or progress.updates == cfg.updates:
                progress.elapsed_s = time.perf_counter() - started
                row = progress.log_row(pending, rewards, keys=LOG_COLUMNS)
                rows.append(row)
                pending, rewards = [], []
                write_csv(rows, files.log, columns=LOG_COLUMNS)
                log(f"update {progress.updates}/{cfg.updates} ({progress.elapsed_s:.0f} s): content "
                    f"{row['content']:.4g} style {row['style']:.4g} contrast {row.get('contrastive', math.nan):.4g} "
                    f"reward {row['reward']:.4g}")
            if progress.updates % cfg.checkpoint_every == 0:
                save()
        progress.episodes += 1
    progress.elapsed_s = time.perf_counter() - started
    save()
    return TrainResult(model, agent, progress, files.model, files.trainer, files.log, files.curves)

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

Outputs in ``out_dir``: ``model.pt`` (what inference needs),
``trainer.pt`` (everything, for ``resume``), ``log.csv`` (one row per
``log_every`` updates) and ``curves.png``; files are written atomically.
Resuming continues from ``trainer.pt`` with a fresh episode; log rows after
its update count are dropped. A non-finite loss stops training with
``FloatingPointError``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from baselines.rlnst.agent import AgentConfig, RLNSTAgent
from baselines.rlnst.data import (
    ContentFrames,
    default_clips,
    default_photos,
    expand_images,
)
from baselines.rlnst.inference import FORMATS, save_model
from baselines.rlnst.losses import RLNSTObjective
from baselines.rlnst.models import RLNST, Hidden, RLNSTConfig
from baselines.training import (
    Progress,
    RunFiles,
    json_friendly,
    restore_trainer,
    rows_until,
    trainer_checkpoint,
)
from pipeline.io.files import save_torch_atomic
from pipeline.io.images import load_image
from pipeline.io.run_files import plot_curves, write_csv
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
        """JSON-friendly dict of the settings (stored in checkpoints)."""
        return json_friendly(dataclasses.asdict(self))


@dataclass
class TrainResult:
    model: RLNST
    progress: Progress
    model_path: Path
    trainer_path: Path
    log_path: Path
    curves_path: Path


def training_info(config: TrainConfig, progress: Progress) -> dict:
    """How the model was trained, stored in ``model.pt`` beside the weights (see ``inference.save_model``)."""
    return {
        "mode": config.mode,
        "style": str(config.style),
        "size": config.size,
        "episode_steps": config.episode_steps,
        "updates": progress.updates,
    }


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    old = saved["config"]
    for key in ("mode", "size", "buffer_capacity", "style"):
        new = str(getattr(config, key)) if key == "style" else getattr(config, key)
        if old[key] != new:
            raise ValueError(f"cannot resume: the checkpoint was trained with {key}={old[key]!r}, now {new!r}")


def _diverged(what: str, update: int, files: RunFiles) -> FloatingPointError:
    last = f"the last good checkpoint is {files.trainer}" if files.trainer.exists() else "no checkpoint was written yet"
    return FloatingPointError(
        f"RL-NST training diverged at update {update}: {what}; {last} "
        "(resume with a lower --lr or --style-weight)"
    )


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train an RL-NST model per ``config``; ``resume`` continues from ``out_dir/trainer.pt``."""
    log = log or (lambda _: None)
    cfg = config
    files = RunFiles(Path(cfg.out_dir))
    files.prepare(resume)

    torch.manual_seed(cfg.seed)
    model = RLNST(cfg.model)  # first, so its initial weights depend on the seed only
    data_generator = torch.Generator().manual_seed(cfg.seed)
    agent_generator = torch.Generator().manual_seed(cfg.seed + 1)
    content = ContentFrames(cfg.clips, cfg.photos, cfg.size, cfg.max_frames, data_generator)
    objective = RLNSTObjective(load_image(cfg.style), style_size=cfg.style_size)
    agent = RLNSTAgent(model, objective, cfg.agent, agent_generator).to(cfg.device)
    buffer = ReplayBuffer(cfg.buffer_capacity, seed=cfg.seed + 2, device="cpu")
    progress = Progress()
    rows: list[dict] = []
    if resume:
        saved = torch.load(files.trainer, map_location=cfg.device, weights_only=True)
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
        plot_curves(rows, files.curves, CURVES, x_key="update", title_size=None)

    device = torch.device(cfg.device)
    hidden_channels = cfg.model.channels[2]
    pending: list[dict[str, float]] = []
    rewards: list[float] = []
    started = time.perf_counter() - progress.elapsed_s
    while progress.updates < cfg.updates:
        frames = content.sample_clip(cfg.clip_len) if model.is_video else content.sample_image()
        frame_hidden: list = [None] * cfg.episode_steps  # per step index, carried across the clip's frames
        for frame in frames.to(device).split(1):
            state, step_hidden = frame, None
            for k in range(cfg.episode_steps):
                if progress.updates >= cfg.updates:
                    break
                with torch.no_grad():
                    out = model.step(state, Hidden(step_hidden, frame_hidden[k]))
                    reward = agent.reward(out.image)
                if not torch.isfinite(reward).all():
                    raise _diverged(f"non-finite reward {reward.tolist()}", progress.updates + 1, files)
                transition = dict(
                    state=state.half(), action=out.action, reward=reward,
                    next_state=out.image.half(), done=torch.zeros(1, device=device),
                )
                if cfg.agent.anchor == "content":
                    transition["content"] = frame.half()
                if model.is_video:
                    zeros = frame.new_zeros(1, hidden_channels, cfg.size // 4, cfg.size // 4)
                    transition["step_hidden"] = (zeros if step_hidden is None else step_hidden).half()
                    transition["frame_hidden"] = (zeros if frame_hidden[k] is None else frame_hidden[k]).half()
                buffer.add(**transition)
                rewards.append(reward.item())
                state, step_hidden, frame_hidden[k] = out.image, out.hidden.step, out.hidden.frame
                progress.env_steps += 1

                ready = progress.episodes >= cfg.bootstrap_episodes and len(buffer) >= cfg.batch_size
                if not (ready and progress.env_steps % cfg.update_every == 0):
                    continue
                batch = {name: v.to(device).float() for name, v in buffer.sample(cfg.batch_size).items()}
                try:
                    logs = agent.update(batch, progress.updates)
                except FloatingPointError as error:
                    raise _diverged(str(error), progress.updates + 1, files) from error
                progress.updates += 1
                pending.append(logs)
                if progress.updates % cfg.log_every == 0 or progress.updates == cfg.updates:
                    progress.elapsed_s = time.perf_counter() - started
                    row = progress.log_row(pending, rewards)
                    rows.append(row)
                    pending, rewards = [], []
                    write_csv(rows, files.log, columns=LOG_COLUMNS)
                    log(f"update {progress.updates}/{cfg.updates} ({progress.elapsed_s:.0f} s): "
                        f"loss {row['style_learning_loss']:.4g} content {row['content']:.4g} "
                        f"style {row['style']:.4g} reward {row['reward']:.4g}")
                if progress.updates % cfg.checkpoint_every == 0:
                    save()
        progress.episodes += 1
    progress.elapsed_s = time.perf_counter() - started
    save()
    return TrainResult(model, progress, files.model, files.trainer, files.log, files.curves)

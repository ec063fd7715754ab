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

import csv
import dataclasses
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from baselines.rlnst.agent import AgentConfig, RLNSTAgent
from baselines.rlnst.data import ContentFrames, default_clips, default_photos, expand_images
from baselines.rlnst.losses import RLNSTObjective
from baselines.rlnst.models import Hidden, RLNST, RLNSTConfig
from pipeline.images import atomic_output, load_image
from policies.sac_core import ReplayBuffer

MODES = ("image", "video")
VIDEO_TEMPORAL_WEIGHT = 1e2
LOG_COLUMNS = (
    "update", "env_steps", "episodes", "elapsed_s", "reward", "critic_loss", "q", "actor_loss",
    "alpha", "alpha_loss", "log_prob", "content", "style", "tv", "temporal", "style_learning_loss",
)
CURVES = (
    ("style_learning_loss", "style-learning loss"), ("content", "content (relu2_2 MSE)"),
    ("style", "style (sum of Gram MSE)"), ("reward", "reward"), ("critic_loss", "critic loss"),
    ("alpha", "entropy temperature"), ("temporal", "compound regularisation"),
)


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
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value
        return plain(dataclasses.asdict(self))


@dataclass
class Progress:
    """Counters that survive a resume."""

    updates: int = 0
    env_steps: int = 0
    episodes: int = 0
    elapsed_s: float = 0.0


@dataclass
class TrainResult:
    model: RLNST
    progress: Progress
    model_path: Path
    trainer_path: Path
    log_path: Path
    curves_path: Path


@dataclass
class _RunFiles:
    out_dir: Path
    model: Path = field(init=False)
    trainer: Path = field(init=False)
    log: Path = field(init=False)
    curves: Path = field(init=False)

    def __post_init__(self) -> None:
        self.model = self.out_dir / "model.pt"
        self.trainer = self.out_dir / "trainer.pt"
        self.log = self.out_dir / "log.csv"
        self.curves = self.out_dir / "curves.png"


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_output(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


def _write_text_atomic(text: str, path: Path) -> None:
    with atomic_output(path, suffix=path.suffix) as tmp:
        tmp.write_text(text)


def _read_log(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_log(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_text_atomic(buffer.getvalue(), path)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training curves (one panel per logged quantity present) against the update count, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in CURVES if any(row.get(key) not in (None, "") for row in rows)]
    if not panels:
        return
    cols = 3
    grid_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(12, 3 * grid_rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        points = [(float(r["update"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        ax.plot(*zip(*points))
        ax.set_title(title)
        ax.set_xlabel("update")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def model_checkpoint(model: RLNST, config: TrainConfig, progress: Progress) -> dict:
    """What inference needs: architecture, weights and how the model was trained."""
    return {
        "format": "rlnst-model-v1",
        "model_config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
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


def _finite_or_raise(logs: dict[str, float], update: int, files: _RunFiles) -> None:
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"RL-NST training diverged at update {update}: non-finite {bad}; "
            f"the last good checkpoint is {files.trainer} (resume with a lower --lr, or a smaller style weight)"
        )


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train an RL-NST model per ``config``; ``resume`` continues from ``out_dir/trainer.pt``."""
    log = log or (lambda _: None)
    cfg = config
    files = _RunFiles(Path(cfg.out_dir))
    files.out_dir.mkdir(parents=True, exist_ok=True)
    if resume and not files.trainer.exists():
        raise FileNotFoundError(f"nothing to resume: {files.trainer} does not exist")
    if not resume and files.trainer.exists():
        raise FileExistsError(f"{files.trainer} exists; pass resume=True (--resume) or choose another output folder")

    torch.manual_seed(cfg.seed)
    data_generator = torch.Generator().manual_seed(cfg.seed)
    agent_generator = torch.Generator().manual_seed(cfg.seed + 1)
    content = ContentFrames(cfg.clips, cfg.photos, cfg.size, cfg.max_frames, data_generator)
    objective = RLNSTObjective(load_image(cfg.style), style_size=cfg.style_size)
    model = RLNST(cfg.model)
    agent = RLNSTAgent(model, objective, cfg.agent, agent_generator).to(cfg.device)
    buffer = ReplayBuffer(cfg.buffer_capacity, seed=cfg.seed + 2, device="cpu")
    progress = Progress()
    rows: list[dict] = []
    if resume:
        saved = torch.load(files.trainer, map_location=cfg.device, weights_only=False)
        _check_resumable(saved, cfg)
        agent.load_state_dict(saved["agent"])
        buffer.load_state_dict(saved["buffer"])
        progress = Progress(**saved["progress"])
        torch.set_rng_state(saved["rng"]["torch"])
        data_generator.set_state(saved["rng"]["data"])
        rows = [r for r in _read_log(files.log) if int(r["update"]) <= progress.updates]
        log(f"resumed from {files.trainer} at update {progress.updates}")

    def save() -> None:
        _save_atomic(model_checkpoint(model, cfg, progress), files.model)
        _save_atomic(
            {
                "format": "rlnst-trainer-v1",
                "config": cfg.summary(),
                "agent": agent.state_dict(),
                "buffer": buffer.state_dict(),
                "progress": dataclasses.asdict(progress),
                "rng": {"torch": torch.get_rng_state(), "data": data_generator.get_state()},
            },
            files.trainer,
        )
        _write_log(rows, files.log)
        plot_curves(rows, files.curves)

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
                transition = dict(
                    content=frame.half(), state=state.half(), action=out.action, reward=reward,
                    next_state=out.image.half(), done=torch.zeros(1, device=device),
                )
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
                batch = {k: v.to(device).float() for k, v in buffer.sample(cfg.batch_size).items()}
                logs = agent.update(batch, progress.updates)
                progress.updates += 1
                _finite_or_raise(logs, progress.updates, files)
                pending.append(logs)
                if progress.updates % cfg.log_every == 0 or progress.updates == cfg.updates:
                    progress.elapsed_s = time.perf_counter() - started
                    row = {key: sum(p[key] for p in pending if key in p) / max(1, sum(key in p for p in pending))
                           for key in LOG_COLUMNS if any(key in p for p in pending)}
                    row.update(update=progress.updates, env_steps=progress.env_steps, episodes=progress.episodes,
                               elapsed_s=round(progress.elapsed_s, 2), reward=sum(rewards) / len(rewards))
                    rows.append(row)
                    pending, rewards = [], []
                    _write_log(rows, files.log)
                    log(f"update {progress.updates}/{cfg.updates} ({progress.elapsed_s:.0f} s): "
                        f"loss {row['style_learning_loss']:.4g} content {row['content']:.4g} "
                        f"style {row['style']:.4g} reward {row['reward']:.4g}")
                if progress.updates % cfg.checkpoint_every == 0:
                    save()
        progress.episodes += 1
    progress.elapsed_s = time.perf_counter() - started
    save()
    return TrainResult(model, progress, files.model, files.trainer, files.log, files.curves)

"""RL-NST port: shapes, recurrent state handling, compound regularisation, a short real training run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from baselines.rlministyler.models import RLMiniStyler
from baselines.rlnst.agent import AgentConfig, RLNSTAgent
from baselines.rlnst.data import ContentFrames
from baselines.rlnst.inference import StepwiseStylizer, load_model, stylize_frames, training_settings
from baselines.rlnst.losses import RLNSTObjective
from baselines.rlnst.models import RLNST, Critic, RLNSTConfig, count_parameters
from baselines.rlnst.regularization import (
    CompoundRegularizationConfig,
    compound_regularization,
    random_perturbation,
    random_smooth_flow,
)
from baselines.rlnst.train import TrainConfig, train
from pipeline.io.images import load_image
from pipeline.io.run_files import read_csv
from policies.sac_core import TwinCritic
from rewards.style import GramStyleLoss, perceptual_loss
from scripts.train_rlnst import build_parser, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(64, 64), (96, 128), (36, 52)]


@pytest.mark.fast
@pytest.mark.parametrize("video", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_step_shapes_and_action_size(video: bool, size: tuple[int, int]) -> None:
    model = RLNST(RLNSTConfig(video=video))
    state = torch.rand(2, 3, *size)
    out = model.step(state)
    h, w = size
    assert out.image.shape == state.shape
    assert 0 <= out.image.min() and out.image.max() <= 1
    assert out.action.shape == out.mean.shape == (2, 1, h // 4, w // 4)
    assert out.log_prob.shape == (2,)
    if video:
        assert out.hidden.step.shape == out.hidden.frame.shape == (2, 64, h // 4, w // 4)
        again = model.step(out.image, out.hidden)
        assert again.image.shape == state.shape
    else:
        assert out.hidden.step is None and out.hidden.frame is None
    q1, q2 = TwinCritic(Critic)(state, out.action)
    assert q1.shape == q2.shape == (2,)


@pytest.mark.fast
@pytest.mark.parametrize("size", [(66, 64), (64, 30), (4, 4)])
def test_sizes_not_divisible_by_4_are_refused_clearly(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        RLNST().step(torch.rand(1, 3, *size))


@pytest.mark.fast
def test_parameter_counts_match_the_paper() -> None:
    image = count_parameters(RLNST(RLNSTConfig(video=False)))
    video = count_parameters(RLNST(RLNSTConfig(video=True)))
    assert 170_000 < image < 190_000, image  # paper: about 0.18 M
    assert video > image  # plus the step-wise and frame-wise ConvGRUs


@pytest.mark.fast
def test_deterministic_step_uses_the_mean() -> None:
    model = RLNST()
    state = torch.rand(1, 3, 32, 32)
    first, second = model.step(state, deterministic=True), model.step(state, deterministic=True)
    assert torch.equal(first.image, second.image)
    assert torch.equal(first.action, first.mean)
    assert not torch.equal(model.step(state).action, first.mean)


@pytest.mark.fast
def test_frame_wise_hidden_state_is_carried_within_a_clip_and_reset_between_clips() -> None:
    model = RLNST(RLNSTConfig(video=True)).eval()
    clip_a, clip_b = torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32)
    fresh_b = stylize_frames(model, clip_b, steps=3)
    stylizer = StepwiseStylizer(model, steps=3)
    stylizer(clip_a)
    carried_b = stylizer(clip_b)  # same clip continued: hidden states from clip_a flow into clip_b
    assert (carried_b - fresh_b).abs().max() > 1e-4
    stylizer.reset()
    assert torch.allclose(stylizer(clip_b), fresh_b, atol=1e-6)
    # within one call the frames of the clip are chained too
    joined = stylize_frames(model, torch.cat([clip_a, clip_b]), steps=3)
    assert torch.allclose(joined[3:], carried_b, atol=1e-6)


@pytest.mark.fast
def test_image_model_treats_frames_independently_and_pads_any_size() -> None:
    model = RLNST().eval()
    frames = torch.rand(3, 3, 30, 42)
    steps = stylize_frames(model, frames, steps=4, return_steps=True, batch_size=2)
    assert steps.shape == (4, 3, 3, 30, 42)
    alone = stylize_frames(model, frames[2:], steps=4)
    assert torch.allclose(steps[-1, 2:], alone, atol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        stylize_frames(model, frames, steps=0)


def _translation(n: int, h: int, w: int, dx: int, dy: int) -> torch.Tensor:
    flow = torch.zeros(n, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


@pytest.mark.fast
def test_compound_regularisation_is_zero_for_identity_and_translation() -> None:
    images = torch.rand(2, 3, 40, 48)
    flow = _translation(2, 40, 48, dx=3, dy=-2)
    no_noise = torch.zeros_like(images)
    assert compound_regularization(lambda x: x, images, flow, no_noise) == 0
    # a translation-equivariant model commutes with an integer shift away from the borders
    kernel = torch.rand(3, 1, 3, 3)
    blur = lambda x: F.conv2d(x, kernel, padding=1, groups=3)  # noqa: E731
    interior = torch.zeros(2, 1, 40, 48)
    interior[..., 6:-6, 6:-6] = 1
    assert compound_regularization(blur, images, flow, no_noise, mask=interior) < 1e-5
    # ... which is not trivially true: a position-dependent model does not commute
    ramp = torch.linspace(0, 1, 48).view(1, 1, 1, 48)
    assert compound_regularization(lambda x: x * ramp, images, flow, no_noise, mask=interior) > 1e-3
    # noise alone shows up for the identity model
    _, noise = random_perturbation(images)
    assert compound_regularization(lambda x: x, images, flow, noise) > 0


@pytest.mark.fast
def test_random_smooth_flow_is_smooth_shifted_and_seeded() -> None:
    config = CompoundRegularizationConfig()
    flows = random_smooth_flow(16, 256, 320, config, torch.Generator().manual_seed(0))
    assert flows.shape == (16, 2, 256, 320)
    assert flows.abs().amax() < 5 * 8 + 10, "Gaussian motion (std 8 px) plus a shift of at most 10 px"
    per_flow_mean = flows.mean(dim=(2, 3))
    assert per_flow_mean.abs().max() > 2, "the random translation moves the frames"
    neighbour = (flows[..., 1:] - flows[..., :-1]).abs().max()
    assert neighbour < 0.5, "a smooth motion: neighbouring vectors nearly equal"
    again = random_smooth_flow(16, 256, 320, config, torch.Generator().manual_seed(0))
    assert torch.equal(flows, again)
    flow, noise = random_perturbation(torch.rand(4, 3, 64, 64), config, torch.Generator().manual_seed(1))
    assert flow.shape == (4, 2, 64, 64)
    assert 0.0005 < noise.std() < 0.0025


def test_training_on_test_clips_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="test clip"):
        ContentFrames([data_dir / "videos" / "test" / "wolf.mp4"], size=64)


@pytest.fixture(scope="module")
def trained_image_run(tmp_path_factory, data_dir: Path):
    """A short real training run of the image model at 64 px (about a minute on a busy CPU).

    Lambda is lowered to 3e3 (paper: 1e5) and lr raised to 5e-4 (paper: 1e-4)
    so that one step stylizes only part of the way and the step-wise trend
    shows after 60 updates; with lambda 1e4 and lr 1e-3 short runs were
    unstable here. Seeds 0, 5, 6, 7 checked with these settings: the RL-NST
    style term fell by 20-40 % from step 1 to steps 5 and 10.
    """
    out = tmp_path_factory.mktemp("rlnst_image")
    config = TrainConfig(
        style=data_dir / "styles" / "starry_night.jpg",
        out_dir=out,
        mode="image",
        clips=[data_dir / "videos" / "train" / "juggle.mp4", data_dir / "videos" / "train" / "sintel_ambush_3"],
        photos=[],
        size=64,
        max_frames=8,
        updates=60,
        episode_steps=10,
        bootstrap_episodes=1,
        update_every=1,
        log_every=10,
        checkpoint_every=30,
        agent=AgentConfig(lr=5e-4, critic_lr=5e-5, style_weight=3e3),
    )
    return config, train(config, log=None)


def test_stylization_gets_stronger_with_more_steps(trained_image_run, data_dir: Path) -> None:
    config, result = trained_image_run
    photos = torch.cat([
        F.interpolate(load_image(data_dir / "photos" / name), size=(64, 64), mode="area")
        for name in ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg")
    ])  # held out: the run trained on video frames only
    objective = RLNSTObjective(load_image(config.style))
    metric = GramStyleLoss(objective.vgg, load_image(config.style))
    with torch.no_grad():
        steps = stylize_frames(result.model, photos, steps=10, return_steps=True)
        rlnst_style = [objective.style(steps[k - 1]).mean().item() for k in (1, 5, 10)]
        project_style = [metric(steps[k - 1]).mean().item() for k in (1, 5, 10)]
        content = [perceptual_loss(objective.vgg, steps[k - 1], photos).mean().item() for k in (1, 10)]
        assert project_style[0] < metric(photos).mean().item()
    one, five, ten = rlnst_style
    assert five < 0.9 * one and ten < 0.9 * one, f"RL-NST style term at steps 1/5/10: {rlnst_style}"
    # The project's metric weights deep layers by C^2; after a 1-minute run it falls from step 1 to 5
    # (by 10-20 % over the seeds checked) but at step 10 colour drift can lift it again; longer runs
    # fall throughout (600 iterations at 128 px: 6.5 / 3.1 / 2.8 at steps 1 / 5 / 10).
    assert project_style[1] < 0.95 * project_style[0], f"GramStyleLoss at steps 1/5/10: {project_style}"
    assert content[0] < content[1], f"content loss should grow with the steps: {content}"


def test_training_writes_checkpoints_log_curves_and_resumes(trained_image_run) -> None:
    config, result = trained_image_run
    assert result.progress.updates == 60
    rows = list(csv.DictReader(result.log_path.open()))
    assert [int(r["update"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert all(float(r["style"]) > 0 and r["critic_loss"] and r["alpha"] for r in rows)
    assert result.curves_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(Path(config.out_dir).glob(".*tmp*")), "no temporary files left behind"
    folder = Path(config.out_dir)
    assert result.model_path == folder / "model" and result.checkpoint_path == folder / "checkpoint.pt"
    loaded = load_model(result.model_path)
    frames = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(stylize_frames(loaded, frames, 3), stylize_frames(result.model, frames, 3))
    assert not load_model(folder).is_video  # the run folder resolves to its model/
    assert training_settings(folder) == {"mode": "image", "style": str(config.style), "size": 64,
                                         "episode_steps": 10, "updates": 60}
    with pytest.raises(ValueError, match="not a 'rlministyler-model-v3' one"):
        RLMiniStyler.from_pretrained(folder)

    with pytest.raises(FileExistsError, match="resume"):
        train(config, log=None)
    config.updates = 62
    resumed = train(config, resume=True, log=None)
    assert resumed.progress.updates == 62
    assert resumed.progress.env_steps > result.progress.env_steps
    rows = list(csv.DictReader(result.log_path.open()))
    assert [int(r["update"]) for r in rows] == [10, 20, 30, 40, 50, 60, 62]


def _tiny_config(data_dir: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        style=data_dir / "styles" / "starry_night.jpg",
        out_dir=out,
        clips=[data_dir / "videos" / "train" / "sintel_ambush_3"],
        photos=[],
        size=64,
        max_frames=3,
        updates=2,
        episode_steps=2,
        bootstrap_episodes=0,
        update_every=1,
        log_every=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_video_model_trains_with_compound_regularisation(tmp_path: Path, data_dir: Path) -> None:
    config = _tiny_config(data_dir, tmp_path, mode="video", clip_len=2, updates=3)
    assert config.agent.temporal_weight == 100.0
    result = train(config, log=None)
    rows = list(csv.DictReader(result.log_path.open()))
    assert len(rows) == 3 and all(float(r["temporal"]) > 0 for r in rows)
    model = load_model(result.model_path)
    assert model.is_video
    out = stylize_frames(model, torch.rand(3, 3, 48, 40), steps=2, return_steps=True)
    assert out.shape == (2, 3, 3, 48, 40)


def test_same_seed_gives_the_same_model(tmp_path: Path, data_dir: Path) -> None:
    first, second = (train(_tiny_config(data_dir, tmp_path / name, seed=3), log=None) for name in "ab")
    assert first.progress.updates == second.progress.updates == 2
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    torch.manual_seed(3)
    initial = RLNST()  # the run's initial weights: training seeds torch with its seed before building the model
    assert not torch.equal(first.model.stylizer.out.conv.weight, initial.stylizer.out.conv.weight)


def test_resume_continues_exactly_as_the_uninterrupted_run(tmp_path: Path, data_dir: Path) -> None:
    """4 updates straight, or 2 (one 2-step episode, so the run stops at an episode end) then 2 more resumed:
    the same weights and the same log rows (but the times)."""
    straight = train(_tiny_config(data_dir, tmp_path / "straight", updates=4), log=None)
    first = _tiny_config(data_dir, tmp_path / "resumed", updates=2)
    train(first, log=None)
    first.updates = 4
    resumed = train(first, resume=True, log=None)
    assert resumed.progress.updates == 4 and resumed.progress.env_steps == straight.progress.env_steps
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    untimed = [[{k: v for k, v in row.items() if k != "elapsed_s"} for row in read_csv(result.log_path)]
               for result in (straight, resumed)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 4


def test_resume_refuses_a_corrupt_or_foreign_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    config = _tiny_config(data_dir, tmp_path, updates=1)
    result = train(config, log=None)
    with pytest.raises(ValueError, match="settings differ from the run's config.json: mode"):
        train(_tiny_config(data_dir, tmp_path, mode="video", updates=2), resume=True, log=None)
    checkpoint = result.checkpoint_path.read_bytes()
    result.checkpoint_path.write_bytes(checkpoint[: len(checkpoint) // 2])
    with pytest.raises(ValueError, match="checkpoint.pt is corrupt or not a checkpoint"):
        train(config, resume=True, log=None)
    torch.save({"format": "rlministyler-trainer-v3"}, result.checkpoint_path)
    with pytest.raises(ValueError, match="is a 'rlministyler-trainer-v3' checkpoint, not a 'rlnst-trainer-v2' one"):
        train(config, resume=True, log=None)
    with pytest.raises(FileNotFoundError, match="cannot resume: .*checkpoint.pt does not exist"):
        train(_tiny_config(data_dir, tmp_path / "fresh"), resume=True, log=None)


def test_non_finite_loss_stops_training_with_a_clear_message(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    with monkeypatch.context() as patch:  # a NaN total variation makes the style-learning loss NaN
        patch.setattr("baselines.rlnst.losses.total_variation", lambda images: torch.full(images.shape[:1], math.nan))
        with pytest.raises(FloatingPointError, match="diverged at update 1: non-finite style-learning loss"):
            train(_tiny_config(data_dir, tmp_path), log=None)
    monkeypatch.setattr(RLNSTAgent, "reward", lambda self, images: torch.full(images.shape[:1], math.nan))
    with pytest.raises(FloatingPointError, match="diverged at update 1: non-finite reward .*no checkpoint was written"):
        train(_tiny_config(data_dir, tmp_path / "reward"), log=None)


@pytest.mark.fast
def test_training_script_parses_its_options_and_reports_bad_input(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--style", "s.jpg", "--out", "o", "--mode", "video", "--photos"])
    assert args.mode == "video" and args.photos == [] and args.updates == 2000 and args.style_weight == 1e5
    with pytest.raises(FileNotFoundError, match="style image"):
        main(["--style", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--style", "s.jpg", "--out", "o", "--mode", "audio"])

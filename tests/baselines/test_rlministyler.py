"""RLMiniStyler port: arbitrary styles in one batch, sizes, losses, uncertainty weights, a short real training run
whose model stylizes progressively (the style term falls from step 1 to step 5).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from baselines.rlministyler.agent import AgentConfig, MiniStylerAgent
from baselines.rlministyler.inference import load_model, step_losses, stylize_frames, training_settings
from baselines.rlministyler.losses import MiniStylerObjective, UncertaintyWeights, contrastive_loss
from baselines.rlministyler.models import LOGIT_EPS, QNetwork, RLMiniStyler, RLMiniStylerConfig, StyleCode
from baselines.rlministyler.train import HELD_OUT_STYLES, TrainConfig, default_styles, train
from baselines.rlnst.inference import load_model as load_rlnst_model
from baselines.rlnst.models import count_parameters
from pipeline.io.images import load_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN_STYLES = ("starry_night.jpg", "udnie.jpg", "composition_vii.jpg")


def _image(path: Path, size: int = 64) -> torch.Tensor:
    return F.interpolate(load_image(path), size=(size, size), mode="area")


@pytest.fixture(scope="module")
def photos(data_dir: Path) -> torch.Tensor:
    return torch.cat([_image(data_dir / "photos" / name) for name in ("chelsea.png", "astronaut.png")])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir: Path):
    """A short real training run: 40 updates at 64 px on 8 frames of a training clip and three styles (about 1 min)."""
    config = TrainConfig(
        out_dir=tmp_path_factory.mktemp("rlministyler"),
        clips=[data_dir / "videos" / "train" / "sintel_ambush_3"],
        photos=[],
        styles=[data_dir / "styles" / name for name in TRAIN_STYLES],
        size=64,
        max_frames=8,
        updates=40,
        episode_steps=5,
        bootstrap_episodes=2,
        batch_size=8,
        log_every=20,
        checkpoint_every=20,
        agent=AgentConfig(lr=1e-3),
    )
    return config, train(config, log=None)


@pytest.mark.fast
def test_parameter_count_matches_the_paper() -> None:
    model = RLMiniStyler()
    total = count_parameters(model)
    print(f"RLMiniStyler parameters: {total:,} (actor {count_parameters(model.actor):,}, "
          f"builder {count_parameters(model.builder):,}; critic {count_parameters(QNetwork()):,} each)")
    assert 360_000 < total < 380_000, total  # the paper: 0.37 M


def test_one_model_handles_two_styles_in_one_batch(trained_run, photos, data_dir: Path) -> None:
    model = trained_run[1].model.eval()
    styles = torch.cat([_image(data_dir / "styles" / "starry_night.jpg"),
                        _image(data_dir / "styles" / HELD_OUT_STYLES[0])])
    content = photos[:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        both = model(content, styles, deterministic=True).image
        alone = [model(content[:1], styles[i : i + 1], deterministic=True).image for i in range(2)]
        codes = StyleCode.cat([model.style_code(styles[i : i + 1]) for i in range(2)])
        from_codes = model.step(content, codes, deterministic=True).image
    assert (both[0] - both[1]).abs().mean() > 1e-3, "the same content under two styles gives two results"
    for i in range(2):
        assert torch.allclose(both[i : i + 1], alone[i], atol=1e-5)
    assert torch.allclose(both, from_codes, atol=1e-5)
    with pytest.raises(ValueError, match="style code holds 2 styles for 3"):
        model.step(torch.rand(3, 3, 64, 64), codes)


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (37, 53), (6, 10)])
def test_output_size_equals_input_size(size: tuple[int, int], data_dir: Path) -> None:
    model = RLMiniStyler().eval()
    frames = F.interpolate(load_image(data_dir / "photos" / "coffee.png"), size=size, mode="area").repeat(3, 1, 1, 1)
    style = load_image(data_dir / "styles" / "mondrian.jpg")
    steps = stylize_frames(model, frames, style, steps=2, return_steps=True, batch_size=2)
    assert steps.shape == (2, 3, 3, *size)
    assert 0 <= steps.min() and steps.max() <= 1
    if size[0] % 4 == 0 and size[1] % 4 == 0:
        out = model(frames[:1], _image(data_dir / "styles" / "mondrian.jpg"))
        assert out.image.shape == (1, 3, *size) and out.action.shape == (1, 64, size[0] // 4, size[1] // 4)
    else:
        with pytest.raises(ValueError, match="multiples of 4"):
            model(frames[:1], _image(data_dir / "styles" / "mondrian.jpg"))


def test_untrained_model_is_the_identity_with_residual_steps(photos, data_dir: Path) -> None:
    style = _image(data_dir / "styles" / "udnie.jpg")
    residual, public = RLMiniStyler(), RLMiniStyler(RLMiniStylerConfig(residual=False))
    with torch.no_grad():
        kept = residual(photos, style).image
        decoded = public(photos, style).image
    assert (kept - photos).abs().max() <= LOGIT_EPS + 1e-6, "zero residual: s_1 = s_0 (up to the logit clamp)"
    assert (decoded - photos).abs().mean() > 0.1, "the public builder decodes a new image"
    assert count_parameters(residual) == count_parameters(public)


def test_style_term_falls_from_step_1_to_step_5_after_a_short_training_run(trained_run, data_dir: Path) -> None:
    """40 updates on frames of one training clip; scored on the four shared photos (never trained on)."""
    model = trained_run[1].model.eval()
    photos = torch.cat([_image(path) for path in sorted((data_dir / "photos").iterdir())])
    objective = MiniStylerObjective()
    report = {}
    for name in (*TRAIN_STYLES, HELD_OUT_STYLES[0]):
        losses = step_losses(model, photos, load_image(data_dir / "styles" / name), steps=(1, 5), objective=objective)
        report[name] = {k: (round(v["style"], 2), round(v["content"], 2)) for k, v in losses.items()}
    print("RLMiniStyler (step: (style, content)) after 40 updates:", report)
    trained = [report[name] for name in TRAIN_STYLES]
    mean_style = {k: sum(r[k][0] for r in trained) / len(trained) for k in (0, 1, 5)}
    assert mean_style[1] < mean_style[0] and mean_style[5] < 0.95 * mean_style[1], report
    held_out = report[HELD_OUT_STYLES[0]]
    assert held_out[5][0] < 0.95 * held_out[1][0], f"an unseen style is applied progressively too: {held_out}"
    assert all(r[1][1] < r[5][1] for r in report.values()), f"each step moves further from the photo: {report}"


def test_contrastive_loss_prefers_the_own_style(data_dir: Path) -> None:
    model = RLMiniStyler()
    styles = torch.cat([_image(data_dir / "styles" / name) for name in TRAIN_STYLES])
    with torch.no_grad():
        codes = model.style_code(styles)
        swapped = model.style_code(styles[[1, 2, 0]])
    ids = torch.tensor([0, 1, 2])
    assert contrastive_loss(codes, codes, ids) == 0, "results carrying exactly their own style's code"
    assert contrastive_loss(swapped, codes, ids) > 0.5, "results carrying another style's code"
    assert contrastive_loss(codes, codes, torch.tensor([4, 4, 4])) is None, "no negatives in a one-style batch"


def test_uncertainty_weights_are_learnable_and_finite(trained_run) -> None:
    weights = UncertaintyWeights()
    total = weights({"content": torch.tensor(2.0), "style": torch.tensor(30.0)})
    total.backward()
    grad = weights.log_vars.grad
    # d/ds (0.5 exp(-s) L + 0.5 s) at s = 0 is 0.5 (1 - L); the contrast term was absent
    assert torch.allclose(grad, torch.tensor([-0.5, -14.5, 0.0]))
    learned = trained_run[1].agent.loss_weights
    assert torch.isfinite(learned.log_vars).all() and (learned.log_vars != 0).all(), learned.log_vars
    assert all(math.isfinite(w) and w > 0 for w in learned.weights().values())


def test_updates_on_a_fixed_replay_batch_lower_the_style_term(photos, data_dir: Path) -> None:
    """The supervised part learns from real images: twenty updates on one two-style batch cut its style term
    (the untrained model is the identity, so step 1 starts at the photos' own style term)."""
    torch.manual_seed(0)
    model = RLMiniStyler()
    agent = MiniStylerAgent(model, MiniStylerObjective(), AgentConfig(lr=1e-3))
    styles = torch.cat([_image(data_dir / "styles" / name) for name in TRAIN_STYLES[:2]])
    state = torch.cat([photos, photos.flip(-1)])
    style, style_id = styles[[0, 1, 1, 0]], torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        out = model.step(state, model.style_code(style))
        reward = agent.reward(out.image, agent.objective.features(style))
    batch = dict(state=state, style=style, style_id=style_id, action=out.action, reward=reward,
                 next_state=out.image, done=torch.zeros(4))
    logs = [agent.update(batch, index) for index in range(20)]
    last = sum(log["style"] for log in logs[-5:]) / 5  # actions are sampled: average out the noise
    assert last < 0.92 * logs[0]["style"], [round(log["style"], 2) for log in logs]
    assert logs[0]["content"] < 1e-3 < logs[-1]["content"], "the steps move away from the identity"
    assert all(math.isfinite(log["critic_loss"]) and log["contrastive"] > 0 for log in logs)
    assert (agent.loss_weights.log_vars != 0).all(), "the uncertainty weights moved"


def test_training_writes_checkpoints_log_curves_and_resumes(trained_run, photos, data_dir: Path) -> None:
    config, result = trained_run
    rows = list(csv.DictReader(result.log_path.open()))
    assert [int(r["update"]) for r in rows] == [20, 40]
    assert all(float(r["style"]) > 0 and float(r["contrastive"]) > 0 for r in rows)
    assert all(r["critic_loss"] and r["w_style"] for r in rows)
    assert result.curves_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(Path(config.out_dir).glob(".*tmp*")), "no temporary files left behind"
    held_out = load_image(data_dir / "styles" / HELD_OUT_STYLES[0])
    loaded = load_model(config.out_dir)  # the run folder resolves to its model/
    assert torch.equal(stylize_frames(loaded, photos, held_out, 2), stylize_frames(result.model, photos, held_out, 2))
    assert training_settings(result.model_path) == {
        "styles": [str(data_dir / "styles" / name) for name in TRAIN_STYLES], "held_out_styles": list(HELD_OUT_STYLES),
        "size": 64, "episode_steps": 5, "updates": 40}
    with pytest.raises(ValueError, match="holds a 'rlministyler-model-v3' model of kind 'rlministyler'"):
        load_rlnst_model(result.model_path)
    with pytest.raises(FileExistsError, match="resume"):
        train(config, log=None)
    config.updates = 41
    resumed = train(config, resume=True, log=None)
    assert resumed.progress.updates == 41 and resumed.progress.env_steps > result.progress.env_steps
    assert [int(r["update"]) for r in csv.DictReader(result.log_path.open())] == [20, 40, 41]


def test_default_styles_hold_out_a_test_style() -> None:
    names = {p.name for p in default_styles()}
    assert names and not names & set(HELD_OUT_STYLES)


def test_non_finite_loss_stops_training_with_a_clear_message(tmp_path: Path, data_dir: Path) -> None:
    config = TrainConfig(
        out_dir=tmp_path, clips=[data_dir / "videos" / "train" / "sintel_ambush_3"], photos=[],
        styles=[data_dir / "styles" / "udnie.jpg"], size=64, max_frames=2, updates=3, episode_steps=2,
        bootstrap_episodes=0, batch_size=1, agent=AgentConfig(lr=1e30),
    )
    with pytest.raises(FloatingPointError, match="diverged (at|when acting after) update"):
        train(config, log=None)


def test_objective_reward_is_zero_for_the_style_itself(data_dir: Path) -> None:
    objective = MiniStylerObjective()
    style = _image(data_dir / "styles" / "udnie.jpg")
    features = objective.features(style)
    assert objective.style(features, features).item() < 1e-10
    assert objective.style(objective.features(_image(data_dir / "photos" / "rocket.jpg")), features).item() > 1


def test_step_losses_report_each_step(trained_run, photos, data_dir: Path) -> None:
    _, result = trained_run
    held_out = load_image(data_dir / "styles" / HELD_OUT_STYLES[0])
    losses = step_losses(result.model, photos, held_out, steps=(1, 3))
    assert list(losses) == [0, 1, 3]
    assert losses[0]["content"] == 0.0 and losses[0]["style"] > 0  # step 0: the photos themselves
    assert all(v["content"] > 0 and math.isfinite(v["style"]) for k, v in losses.items() if k > 0)
    again = step_losses(result.model, photos, held_out, steps=(1, 3))
    assert again == losses, "evaluation acts with the means: deterministic"

"""scripts/train_policy.py and policies.train: arguments, run folder, resume, data-parallel replicas."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from policies.train import TrainConfig, Trainer, train
from scripts.train_policy import main, parse_args, train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
FAST = ["--size", "96", "--max-frames", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def videos(data_dir, tmp_path_factory) -> Path:
    """A training folder with one short real clip: 8 Sintel frames (96x40 px at --size 96)."""
    folder = tmp_path_factory.mktemp("videos")
    clip = folder / "ambush"
    clip.mkdir()
    for frame in sorted((data_dir / "videos/train/sintel_ambush_3").glob("*.png"))[:8]:
        (clip / frame.name).symlink_to(frame)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("latent-cache"))


def config(data_dir, videos, cache_dir, out, **changes) -> TrainConfig:
    settings = dict(style=str(data_dir / "styles/starry_night.jpg"), out=str(out), videos=str(videos), size=96,
                    max_frames=4, epochs=2, threads=1, cache_dir=cache_dir, algo="reinforce",
                    algo_options={"lr": 1e-3, "scalar_lr": 1e-2})
    return TrainConfig(**{**settings, **changes})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.fast
def test_help_explains_each_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--style", "--out", "--videos", "--algo", "--obs", "--size", "--max-frames", "--epochs",
                   "--weights", "--seed", "--resume", "--device"):
        assert option in text


@pytest.mark.parametrize("argv,message", [
    ([], "the following arguments are required: --style"),
    (["--style", "s.jpg", "--algo", "ppo"], "invalid choice: 'ppo'"),
    (["--style", "s.jpg", "--obs", "optical"], "invalid choice: 'optical'"),
    (["--style", "s.jpg", "--weights", "1", "2"], "argument --weights: expected 3 arguments"),
    (["--style", "s.jpg", "--reinforce-accumulate", "2.5"], "argument --reinforce-accumulate: invalid int value: '2.5'"),
    (["--style", "s.jpg", "--reinforce-head", "mlp"], "argument --reinforce-head: invalid choice: 'mlp'"),
])
@pytest.mark.fast
def test_bad_arguments_are_refused_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_inputs_fail_fast_with_clear_messages(data_dir, videos, tmp_path):
    style = str(data_dir / "styles/starry_night.jpg")
    out = ["--out", str(tmp_path / "run")]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        main(["--style", str(tmp_path / "missing.jpg"), "--videos", str(videos), *out])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos in .*empty"):
        main(["--style", style, "--videos", str(tmp_path / "empty"), *out])
    with pytest.raises(FileNotFoundError, match="video folder .* does not exist"):
        main(["--style", style, "--videos", str(tmp_path / "nowhere"), *out])
    with pytest.raises(ValueError, match="test clips"):
        main(["--style", style, "--videos", str(data_dir / "videos/test"), *out])
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        main(["--style", style, "--videos", str(videos), "--resume", *out])
    with pytest.raises(ValueError, match=r"init_alpha must be in \(0,1\)"):
        main(["--style", style, "--videos", str(videos), "--pathwise-init-alpha", "1.5", *out])
    if not (REPO / "policies/sac.py").exists():
        with pytest.raises(ValueError, match="algorithm 'sac' is not available"):
            main(["--style", style, "--videos", str(videos), "--algo", "sac", *out])
    with pytest.raises(ValueError, match="at least 32 px per side"):
        main(["--style", style, "--videos", str(videos), "--size", "64", *out])


@pytest.mark.fast
def test_cli_prints_one_line_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/train_policy.py", "--style", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "r")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_training_run_interruption_and_resume(data_dir, videos, cache_dir, tmp_path):
    straight = train(config(data_dir, videos, cache_dir, tmp_path / "straight"))
    folder = tmp_path / "straight"
    assert straight["epoch"] == 2 and straight["replicas_identical"] is True
    for name in ("config.json", "checkpoint.pt", "model/config.json", "model/model.safetensors", "best/config.json",
                 "best/model.safetensors", "episodes.csv", "epochs.csv", "curves.png"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob(".*tmp*"))
    episodes = read_csv(folder / "episodes.csv")
    assert [int(r["epoch"]) for r in episodes] == [1, 1, 2, 2]  # 8 frames = 2 windows of 4
    assert {"reward", "advantage", "style", "content", "temporal", "loss", "sigma"} <= set(episodes[0])
    assert json.loads((folder / "config.json").read_text())["obs"] == "flow"

    # a run killed during its second epoch keeps the first epoch's checkpoint and logs
    interrupted = Trainer(config(data_dir, videos, cache_dir, tmp_path / "resumed"))
    calls = {"n": 0}
    episode = interrupted.algorithm.train_episode

    def crash_on_fourth(env):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return episode(env)

    interrupted.algorithm.train_episode = crash_on_fourth
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed_folder = tmp_path / "resumed"
    assert torch.load(resumed_folder / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert [int(r["epoch"]) for r in read_csv(resumed_folder / "epochs.csv")] == [1]

    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(config(data_dir, videos, cache_dir, resumed_folder))
    with pytest.raises(ValueError, match="settings differ.*obs"):
        Trainer(config(data_dir, videos, cache_dir, resumed_folder, obs="pair"), resume=True)
    corrupt = shutil.copytree(resumed_folder, tmp_path / "corrupt")
    (corrupt / "checkpoint.pt").write_bytes((corrupt / "checkpoint.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="checkpoint.pt is corrupt or not a checkpoint"):
        Trainer(config(data_dir, videos, cache_dir, corrupt), resume=True)

    resumed = train(config(data_dir, videos, cache_dir, resumed_folder), resume=True)
    assert resumed["epoch"] == 2
    assert [int(r["episode"]) for r in read_csv(resumed_folder / "episodes.csv")] == [0, 1, 2, 3]
    a = load_file(folder / "model" / "model.safetensors")
    b = load_file(resumed_folder / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # continued exactly where the uninterrupted run went
    assert float(read_csv(resumed_folder / "epochs.csv")[1]["train_advantage"]) == pytest.approx(straight["train_advantage"])

    # more epochs later: resume extends the run
    longer = train(config(data_dir, videos, cache_dir, resumed_folder, epochs=3, eval_every=0), resume=True)
    assert longer["epoch"] == 3 and len(read_csv(resumed_folder / "episodes.csv")) == 6


def test_two_process_data_parallel_run_keeps_replicas_identical(data_dir, videos, cache_dir, tmp_path):
    """Two CPU processes (gloo) launched by torchrun, which accelerate's state picks up (accelerate
    launch --cpu starts multi-CPU jobs through mpirun only); each trains on its own window."""
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "scripts/train_policy.py", "--style", str(data_dir / "styles/starry_night.jpg"), "--videos", str(videos),
        "--out", str(out), "--epochs", "1", "--cache-dir", cache_dir, "--pathwise-lr", "1e-3", "--device", "cpu", *FAST,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = read_csv(out / "epochs.csv")
    assert epochs[0]["processes"] == "2" and epochs[0]["replicas_identical"] == "True"
    assert sorted(r["rank"] for r in read_csv(out / "episodes.csv")) == ["0", "1"]  # each process its own window


@pytest.mark.fast
def test_algorithm_flags_become_the_saved_algo_options(tmp_path):
    args = parse_args(["--style", "s.jpg", "--out", str(tmp_path), "--algo", "reinforce", "--reinforce-head", "residual",
                       "--reinforce-flow-warp", "latent", "--no-reinforce-input-skip", "--sac-lr", "1.0"])
    options = train_config(args).algo_options
    assert options["head"] == "residual" and options["flow_warp"] == "latent" and options["input_skip"] is False
    assert options["lr"] == 1e-4 and "critic_lr" not in options  # the --sac-* flags apply with --algo sac only
    sac = train_config(parse_args(["--style", "s.jpg", "--algo", "sac", "--sac-lr", "1.0"])).algo_options
    assert sac["lr"] == 1.0 and sac["critic_lr"] == 3e-4 and "head" not in sac
    assert json.loads(json.dumps(options)) == options  # config.json holds them as they are
    pathwise = train_config(parse_args(["--style", "s.jpg", "--pathwise-style-target", "1.0", "--reinforce-lr", "1.0"]))
    assert pathwise.algo == "pathwise" and pathwise.algo_options["style_target"] == 1.0
    assert pathwise.algo_options["lr"] == 3e-4 and "scalar_lr" not in pathwise.algo_options


def test_bad_precision_is_refused(data_dir, videos, cache_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown precision"):
        config(data_dir, videos, cache_dir, tmp_path / "d", precision="half")


def test_several_styles_train_one_policy_with_a_reward_per_style(data_dir, videos, cache_dir, tmp_path):
    styles = [str(data_dir / "styles" / name) for name in ("starry_night.jpg", "mondrian.jpg")]
    trainer = Trainer(config(data_dir, videos, cache_dir, tmp_path / "run", style=styles, epochs=1))
    assert sorted(trainer.rewards) == ["mondrian", "starry_night"]
    assert sorted(clip.style for clip in trainer.clips) == ["mondrian", "mondrian", "starry_night", "starry_night"]
    # each episode is scored against its own style: the baselines' style terms differ between the two
    by_style = {clip.style: clip.baseline_terms.style.mean().item() for clip in trainer.clips}
    assert abs(by_style["mondrian"] - by_style["starry_night"]) > 0.1 * by_style["starry_night"]
    trainer.run()
    episodes = read_csv(tmp_path / "run" / "episodes.csv")
    assert sorted(row["clip"].split("@")[1] for row in episodes) == ["mondrian", "mondrian", "starry_night",
                                                                     "starry_night"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["style"] == styles
    with pytest.raises(ValueError, match="different file names"):
        TrainConfig(style=[styles[0], styles[0]], out=str(tmp_path / "x"))

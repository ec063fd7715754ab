"""scripts/_cli.py: flags generated from config dataclasses (types, defaults, help, errors), the stylizer flags,
and the default agent that train_policy.py's default flags build."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.latents.stylizers import STYLIZERS, build_stylizer
from pipeline.latents.stylizers.diffusest import DiffuseSTConfig
from pipeline.latents.stylizers.latent_wct import LatentWCT, LatentWCTConfig
from policies.base import make_algorithm
from policies.pathwise import PathwiseConfig
from policies.reinforce import ReinforceConfig, ReinforcePolicyConfig
from policies.train import TrainConfig
from scripts._cli import add_config_arguments, add_stylizer_arguments, config_from_args, stylizer_from_args
from scripts.train_policy import parse_args, train_config

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Example:
    name: str = field(metadata={"help": "a required text"})
    count: int = field(default=3, metadata={"help": "an int"})
    rate: float = field(default=0.5, metadata={"help": "a float"})
    enabled: bool = field(default=True, metadata={"help": "a switch"})
    limit: int | None = field(default=None, metadata={"help": "an optional int"})
    mode: str | None = field(default=None, metadata={"choices": ("fast", "slow"), "help": "an optional choice"})
    span: tuple[float, float] = field(default=(0.0, 1.0), metadata={"help": "two floats"})
    tags: tuple[str, ...] = field(default=("a", "b"), metadata={"help": "any number of texts"})
    kind: str = field(default="x", metadata={"choices": ("x", "y"), "help": "a choice"})

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def parser_for(config_class: type = Example, **options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example")
    add_config_arguments(parser, config_class, **options)
    return parser


@pytest.mark.fast
def test_defaults_parse_to_the_dataclass_defaults() -> None:
    assert config_from_args(Example, parser_for().parse_args(["--name", "n"])) == Example("n")


@pytest.mark.fast
def test_flags_parse_to_typed_values() -> None:
    args = parser_for().parse_args(["--name", "n", "--count", "7", "--rate", "2e-3", "--no-enabled", "--limit", "4",
                                    "--mode", "slow", "--span", "0.2", "0.9", "--tags", "c", "--kind", "y"])
    assert config_from_args(Example, args) == Example("n", 7, 2e-3, False, 4, "slow", (0.2, 0.9), ("c",), "y")
    none = parser_for().parse_args(["--name", "n", "--limit", "4", "--limit", "none", "--mode", "none", "--tags"])
    assert config_from_args(Example, none, count=1) == Example("n", count=1, tags=())


@pytest.mark.fast
def test_prefix_and_exclude() -> None:
    parser = parser_for(prefix="ex", exclude=("name", "kind"))
    args = parser.parse_args(["--ex-count", "2", "--ex-enabled"])
    assert not hasattr(args, "ex_kind") and config_from_args(Example, args, "ex", name="m") == Example("m", count=2)


@pytest.mark.parametrize("argv,message", [
    (["--count", "2"], "the following arguments are required: --name"),
    (["--name", "n", "--count", "2.5"], "argument --count: invalid int value: '2.5'"),
    (["--name", "n", "--limit", "many"], "argument --limit: invalid int value: 'many'"),
    (["--name", "n", "--kind", "z"], "argument --kind: invalid choice: 'z'"),
    (["--name", "n", "--mode", "medium"], "argument --mode: invalid choice: 'medium'"),
    (["--name", "n", "--span", "1"], "argument --span: expected 2 arguments"),
    (["--name", "n", "--colour", "red"], "unrecognized arguments: --colour red"),
])
@pytest.mark.fast
def test_bad_values_are_one_line_parser_errors(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser_for().parse_args(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and error.startswith(f"example: error: {message}")


@pytest.mark.fast
def test_config_checks_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        config_from_args(Example, parser_for().parse_args(["--name", "n", "--count", "-1"]))


@pytest.mark.fast
def test_help_lists_field_help_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        parser_for().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--count COUNT an int (default: 3)" in text and "--enabled, --no-enabled a switch (default: True)" in text
    assert "--mode {fast,slow,none}" in text and "--span SPAN SPAN two floats (default: (0.0, 1.0))" in text


@pytest.mark.fast
def test_a_field_without_help_is_refused() -> None:
    @dataclass
    class Undocumented:
        size: int = 1

    with pytest.raises(TypeError, match=r"Undocumented.size has no help text"):
        parser_for(Undocumented)


@pytest.mark.fast
def test_default_flags_build_the_documented_default_agent() -> None:
    config = train_config(parse_args(["--style", "s.jpg", "--device", "cpu"]))
    assert config == TrainConfig(style="s.jpg", out=config.out, algo_options=config.algo_options,
                                 stylizer_options=dataclasses.asdict(LatentWCTConfig()))
    assert (config.stylizer, config.codec) == ("latent-wct", "taef2")
    assert (config.algo, config.obs, config.weights, config.out) == ("pathwise", "flow", (10.0, 1.0, 10.0),
                                                                    str(Path("runs/s-pathwise-flow-s0")))
    assert (config.size, config.max_frames, config.epochs) == (256, 24, 2)
    agent = make_algorithm(config.algo, config.obs, 16, **config.algo_options)
    documented = {"head": "blend", "flow_warp": "pixel", "observation_flow": "dis", "warp_encoder": "auto",
                  "init_alpha": 0.7, "input_skip": True, "init_gate": 0.0}
    assert documented.items() <= dataclasses.asdict(agent.policy.config).items()
    assert agent.config == PathwiseConfig(lr=3e-4, accumulate=4, max_grad_norm=10.0, style_target=1.0,
                                          content_target=0.9, multiplier_lr=0.05, init_multiplier=1.0,
                                          constraint="frame", constraint_tolerance=0.02)
    assert make_algorithm("pathwise", "flow", 16).config == agent.config  # the dataclass defaults are the same agent
    # the REINFORCE agent (--algo reinforce) with its own defaults
    config = train_config(parse_args(["--style", "s.jpg", "--algo", "reinforce"]))
    agent = make_algorithm(config.algo, config.obs, 16, **config.algo_options)
    assert agent.config == ReinforceConfig(lr=1e-4, scalar_lr=None, accumulate=4, baseline_momentum=0.9,
                                           max_grad_norm=10.0)
    assert [group["lr"] for group in agent.optimizer.param_groups] == [1e-4, 1e-3]  # the blend head's scalar lr
    pair = make_algorithm("reinforce", "pair", 16, **config.algo_options)
    assert pair.policy.config.head == "residual" and pair.optimizer.param_groups[1]["lr"] == 1e-2
    plain = make_algorithm("reinforce", "flow", 16)  # the dataclass defaults are the same agent
    assert plain.policy.config == agent.policy.config and plain.config == agent.config
    # the blend head reads flow observations: on pair observations the default head is the residual one
    pair = train_config(parse_args(["--style", "s.jpg", "--algo", "reinforce", "--obs", "pair"]))
    assert make_algorithm("reinforce", "pair", 16, **pair.algo_options).policy.config.head == "residual"
    assert ReinforcePolicyConfig(16, "pair").head == "residual" and ReinforcePolicyConfig(16).head == "blend"


@pytest.mark.fast
def test_train_policy_help_lists_the_algorithm_flags() -> None:
    result = subprocess.run([sys.executable, "scripts/train_policy.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stderr
    for expected in ("pathwise settings (with --algo pathwise)", "reinforce settings (with --algo reinforce)",
                     "sac settings (with --algo sac)",
                     "--reinforce-lr LR Adam learning rate of the network (default: 0.0001)",
                     "--reinforce-head {residual,blend,none}", "none: blend on flow, residual on pair",
                     "--reinforce-init-alpha INIT_ALPHA blend head: initial flow-blend factor",
                     "--sac-style-learning, --no-sac-style-learning", "--sac-gamma GAMMA discount",
                     "--weights WEIGHTS WEIGHTS WEIGHTS reward weights", "--precision {auto,fp32,bf16}"):
        assert expected in text, expected


@pytest.mark.fast
def test_train_policy_bad_flag_value_is_one_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "scripts/train_policy.py", "--style", "s.jpg", "--sac-warmup", "many"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("error: argument --sac-warmup: invalid int value: 'many'")


@pytest.mark.fast
def test_stylizer_flags_build_the_configured_stylizer() -> None:
    parser = argparse.ArgumentParser()
    add_stylizer_arguments(parser)
    args = parser.parse_args(["--latent-wct-alpha", "0.4", "--latent-wct-refine-steps", "2", "--diffusest-prompt",
                              "ink", "--diffusest-style-attention-range", "0.8", "1"])
    stylizer = stylizer_from_args(args, codec=object())
    assert isinstance(stylizer, LatentWCT) and stylizer.cfg == LatentWCTConfig(alpha=0.4, refine_steps=2)
    assert config_from_args(DiffuseSTConfig, args, "diffusest") == DiffuseSTConfig(
        prompt="ink", style_attention_range=(0.8, 1.0))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        stylizer_from_args(parser.parse_args(["--latent-wct-alpha", "1.5"]), codec=object())
    assert set(STYLIZERS) == {"latent-wct", "diffusest"}


@pytest.mark.fast
def test_build_stylizer_refuses_unknown_names_and_other_configs() -> None:
    with pytest.raises(ValueError, match="unknown stylizer 'adain'; choose one of latent-wct, diffusest"):
        build_stylizer("adain")
    with pytest.raises(TypeError, match="takes a LatentWCTConfig, got a DiffuseSTConfig"):
        build_stylizer("latent-wct", DiffuseSTConfig(), codec=object())


@pytest.mark.fast
def test_train_policy_records_the_latent_space_and_its_settings() -> None:
    args = parse_args(["--style", "s.jpg", "--stylizer", "diffusest", "--model", "sd15", "--blip-diffusion", "blip",
                       "--steps", "20", "--diffusest-inversion-steps", "999", "--diffusest-negative-prompt", "release"])
    config = train_config(args)
    assert (config.stylizer, config.codec) == ("diffusest", "sd-vae")
    assert DiffuseSTConfig(**config.stylizer_options) == DiffuseSTConfig(
        model="sd15", blip_diffusion="blip", num_inference_steps=20, inversion_steps=999, negative_prompt="release")
    with pytest.raises(ValueError, match="stylizer diffusest works with codec sd-vae, not 'taef2'.*own VAE"):
        train_config(parse_args(["--style", "s.jpg", "--stylizer", "diffusest", "--codec", "taef2"]))
    assert train_config(parse_args(["--style", "s.jpg", "--codec", "taesd"])).codec == "taesd"

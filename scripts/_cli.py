"""What command-line entry points share: turning expected failures into one clear line (all), flags
generated from configuration dataclasses (run, algorithm and stylizer settings), and the arguments of the
baseline trainers."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from pipeline.latents.codecs import CODEC_NAMES
from pipeline.latents.stylizers import (
    STYLIZERS,
    Stylizer,
    build_latent_space,
    build_stylizer,
    stylizer_config_class,
)

T = TypeVar("T")

USER_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, ValueError, FloatingPointError)
INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_cli(main: Callable[[], T]) -> T:
    """Run ``main``; bad input (missing/unreadable files, bad values) exits with status 2 and a message, no traceback.

    SIGTERM is handled as SIGINT: both unwind ``main`` (so atomic writers remove their temporaries) and end
    the process with one line and status 130.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        print(f"interrupted ({interrupt or 'SIGINT'}); nothing was left half-written", file=sys.stderr)
        sys.exit(INTERRUPTED)


# Flags generated from configuration dataclasses: a field ``name`` becomes ``--[prefix-]name`` (underscores as
# dashes), typed by its annotation, defaulting to the dataclass's default, helped by ``metadata["help"]``, limited to
# ``metadata["choices"]`` when given.

def _dest(prefix: str, name: str) -> str:
    return f"{prefix.replace('-', '_')}_{name}" if prefix else name


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, with the text ``none`` read as None (for fields typed ``X | None``)."""

    def parse_or_none(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__  # argparse names it in "invalid int value" errors
    return parse_or_none


def _argument_options(annotation: Any, where: str) -> tuple[dict[str, Any], bool]:
    """argparse ``add_argument`` options (type, nargs or action) of a field annotation, and whether it is ``X | None``."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1 or len(typing.get_args(annotation)) != 2:
            raise TypeError(f"{where}: only X | None unions become flags, got {annotation}")
        annotation, optional = members[0], True
    if annotation is bool and not optional:
        return {"action": argparse.BooleanOptionalAction}, False
    nargs: int | str | None = None
    if typing.get_origin(annotation) is tuple:
        items = typing.get_args(annotation)
        if len(items) == 2 and items[1] is Ellipsis:
            nargs, items = "*", items[:1]
        elif len(set(items)) == 1:
            nargs = len(items)
        else:
            raise TypeError(f"{where}: tuples become flags only with one item type, got {annotation}")
        annotation = items[0]
    if annotation not in (int, float, str):
        raise TypeError(f"{where}: no flag for fields of type {annotation}")
    options: dict[str, Any] = {"type": _optional(annotation) if optional else annotation}
    if nargs is not None:
        options["nargs"] = nargs
    return options, optional


def add_config_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, config_class: type, *,
                         exclude: Collection[str] = (), prefix: str = "", aliases: Mapping[str, str] = {}) -> None:
    """Add a flag per field of dataclass ``config_class`` (but ``exclude``) to ``parser`` (or an argument group);
    ``aliases``: field name -> a second flag for it (e.g. ``{"num_inference_steps": "--steps"}``).

    Types come from the annotations: int, float, str; bool as ``--x/--no-x``; ``X | None`` (the text ``none``
    gives None); ``tuple[X, X]`` as two values, ``tuple[X, ...]`` as any number. Fields without a default are
    required. Every flag's help is the field's ``metadata["help"]`` (a TypeError when missing), then its default.
    """
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in exclude or not field.init:
            continue
        where = f"{config_class.__name__}.{field.name}"
        if "help" not in field.metadata:
            raise TypeError(f"{where} has no help text (dataclasses.field(metadata={{'help': ...}}))")
        options, optional = _argument_options(hints[field.name], where)
        if field.default is not dataclasses.MISSING:
            options["default"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            options["default"] = field.default_factory()
        else:
            options["required"] = True
        if "choices" in field.metadata:
            choices = tuple(field.metadata["choices"])
            if optional:
                options["metavar"] = "{" + ",".join(map(str, (*choices, "none"))) + "}"
                choices = (*choices, None)
            options["choices"] = choices
        elif "type" in options:  # not a --x/--no-x switch
            options["metavar"] = field.name.upper()
        flag = "--" + _dest(prefix, field.name).replace("_", "-")
        flags = (flag, aliases[field.name]) if field.name in aliases else (flag,)
        action = parser.add_argument(*flags, dest=_dest(prefix, field.name), help=field.metadata["help"], **options)
        if "%(default)" not in action.help and not action.required:
            action.help += " (default: %(default)s)"


def config_values(config_class: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The values of ``config_class``'s fields in ``args`` (as ``add_config_arguments`` named them), by field name."""
    values = {}
    for field in dataclasses.fields(config_class):
        dest = _dest(prefix, field.name)
        if field.init and hasattr(args, dest):
            value = getattr(args, dest)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return values


def config_from_args(config_class: type[T], args: argparse.Namespace, prefix: str = "", **overrides: Any) -> T:
    """A ``config_class`` from the flags of ``add_config_arguments`` in ``args``, ``overrides`` (fields) last."""
    return config_class(**{**config_values(config_class, args, prefix), **overrides})


# short flags of the names for stylizer fields (unambiguous: no other stylizer has them)
STYLIZER_ALIASES: dict[str, dict[str, str]] = {
    "diffusest": {"model": "--model", "blip_diffusion": "--blip-diffusion", "num_inference_steps": "--steps"},
}


def add_stylizer_arguments(parser: argparse.ArgumentParser, default: str = "latent-wct") -> None:
    """--stylizer, --codec, and each stylizer's config fields as --<stylizer>-<field> flags in a group of their
    own (with the short ``STYLIZER_ALIASES``)."""
    parser.add_argument("--stylizer", choices=tuple(STYLIZERS), default=default,
                        help="per-frame stylizer; its settings are the --<stylizer>-* flags (default: %(default)s)")
    parser.add_argument("--codec", choices=CODEC_NAMES, default=None,
                        help="latent codec: latent-wct works on any (default taef2), diffusest on its model's VAE "
                             "(sd-vae, the default)")
    for name, (_, config_class) in STYLIZERS.items():
        add_config_arguments(parser.add_argument_group(f"{name} settings (with --stylizer {name})"), config_class,
                             prefix=name, aliases=STYLIZER_ALIASES.get(name, {}))


def stylizer_config_from_args(args: argparse.Namespace) -> Any:
    """The config dataclass of ``--stylizer`` from its --<stylizer>-* flags."""
    return config_from_args(stylizer_config_class(args.stylizer), args, prefix=args.stylizer)


def stylizer_from_args(args: argparse.Namespace, codec=None, device: str | torch.device = "cpu",
                       precision: str = "auto") -> Stylizer:
    """The stylizer that the flags of ``add_stylizer_arguments`` in ``args`` describe, on the ``--codec`` loaded
    at ``precision`` (``build_latent_space``), or on ``codec`` when one is given (a loaded codec)."""
    config = stylizer_config_from_args(args)
    if codec is not None:
        return build_stylizer(args.stylizer, config, codec=codec, device=device)
    return build_latent_space(args.stylizer, config, args.codec, device=device, precision=precision)


# Arguments shared by the baseline trainers (scripts/train_rlnst.py, scripts/train_rlministyler.py).

def add_content_arguments(parser: argparse.ArgumentParser, photos_help: str) -> None:
    """--clips, --photos (``photos_help``: what they are for, before the default) and --max-frames."""
    parser.add_argument("--clips", type=Path, nargs="+", default=None,
                        help="training clips (video files or frame folders); default: ../shared/data/videos/train/*")
    parser.add_argument("--photos", type=Path, nargs="*", default=None,
                        help=f"{photos_help}; default: ../shared/data/photos; give the flag alone for none")
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per clip")


def add_replay_schedule_arguments(parser: argparse.ArgumentParser, *, episode_steps_help: str,
                                  bootstrap_episodes: int, update_every: int, batch_size: int,
                                  buffer_help: str = "replay buffer capacity (transitions)") -> None:
    """--updates, --episode-steps, --bootstrap-episodes, --update-every, --batch-size, --buffer."""
    parser.add_argument("--updates", type=int, default=2000, help="total training iterations (one replay batch each)")
    parser.add_argument("--episode-steps", type=int, default=10, help=episode_steps_help)
    parser.add_argument("--bootstrap-episodes", type=int, default=bootstrap_episodes,
                        help="episodes collected before training starts")
    parser.add_argument("--update-every", type=int, default=update_every, help="environment steps per training iteration")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="replay batch size")
    parser.add_argument("--buffer", type=int, default=500, help=buffer_help)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-every, --checkpoint-every, --resume, --seed, --device, --threads."""
    parser.add_argument("--log-every", type=int, default=10, help="iterations per log.csv row")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="iterations between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/trainer.pt")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def common_train_settings(args: argparse.Namespace) -> dict:
    """The ``TrainConfig`` fields that the arguments above set, by name (``threads`` applied here)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return dict(
        out_dir=args.out, clips=args.clips, photos=args.photos, size=args.size, max_frames=args.max_frames,
        updates=args.updates, episode_steps=args.episode_steps, bootstrap_episodes=args.bootstrap_episodes,
        update_every=args.update_every, batch_size=args.batch_size, buffer_capacity=args.buffer,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
    )


def print_training_result(result) -> None:
    """One line: iterations, time and the files a baseline trainer wrote."""
    print(f"trained {result.progress.updates} iterations in {result.progress.elapsed_s:.0f} s; "
          f"model: {result.model_path}; log: {result.log_path}; curves: {result.curves_path}")

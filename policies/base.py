"""The policy interface, saving/loading, and the protocol training loops drive.

A policy maps an observation (N, Cobs, h, w) built by ``policies.observations``
to a latent residual delta (N, C, h, w); the refined latent is L_t + delta_t
(``docs/conventions.md``, "Policies"). Every policy is an ``nn.Module`` with a dataclass
``config`` and a registered ``kind``, so ``load_policy`` can rebuild it from
the model folder written by ``Policy.save_pretrained``
(``pipeline.io.pretrained``: ``config.json`` with format ``POLICY_FORMAT``,
the kind, the ``policies.*`` module defining it and the config, beside
``model.safetensors``). A run folder written by ``policies.train`` holds
``best/`` and/or ``model/`` (the last policy).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from pipeline.io.pretrained import PretrainedMixin, SavedModel

OBSERVATION_KINDS = ("pair", "flow")
POLICY_FORMAT = "vstyle-policy-v1"

_POLICY_CLASSES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` loadable by ``load_policy`` under ``cls.kind``."""
    if cls.kind in _POLICY_CLASSES and _POLICY_CLASSES[cls.kind] is not cls:
        raise ValueError(f"policy kind {cls.kind!r} is registered twice")
    _POLICY_CLASSES[cls.kind] = cls
    return cls


def check_observation_kind(kind: str) -> str:
    if kind not in OBSERVATION_KINDS:
        raise ValueError(f"unknown observation kind {kind!r}; choose one of {', '.join(OBSERVATION_KINDS)}")
    return kind


class Policy(PretrainedMixin, nn.Module):
    """A residual-latent policy.

    Subclasses set the class attributes ``kind`` (registry name) and
    ``config_class`` (a dataclass with at least ``observation``, ``latent_channels``, ``flow_warp``,
    ``observation_flow`` and ``warp_encoder`` fields), take the config as the only constructor
    argument, and implement ``act``. ``save_pretrained(folder)`` writes a model folder;
    ``Policy.from_pretrained`` (or ``load_policy``) rebuilds any registered kind, a subclass's only its own.
    """

    pretrained_format: ClassVar[str] = POLICY_FORMAT
    kind: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        check_observation_kind(config.observation)
        self.config = config

    @property
    def observation(self) -> str:
        """The observation kind this policy reads: ``"pair"`` or ``"flow"``."""
        return self.config.observation

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def observation_flow(self) -> str:
        """The content-flow estimator (``rewards.flow.FLOW_ESTIMATORS``) whose flows the ``flow`` observation reads,
        in training and at inference alike."""
        return self.config.observation_flow

    @property
    def flow_warp(self) -> str:
        """How the ``flow`` observation's warped previous output W_t is built (``policies.observations.FLOW_WARPS``)."""
        return self.config.flow_warp

    @property
    def warp_encoder(self) -> str:
        """The encoder of a pixel ``flow_warp``'s re-encodes (``pipeline.latents.codecs.WARP_ENCODERS``), in training
        and at inference alike."""
        return self.config.warp_encoder

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Residual delta (N, C, h, w) for observations ``obs`` (N, Cobs, h, w).

        ``deterministic=True`` gives the policy's mean action (evaluation and
        the stylization pipeline); ``False`` samples (training).
        """
        raise NotImplementedError

    @classmethod
    def build_pretrained(cls, saved: SavedModel) -> Policy:
        """An untrained policy of the saved kind (through the registry); a subclass refuses other kinds."""
        policy = policy_from_spec(saved.kind, saved.module, saved.config)
        if not isinstance(policy, cls):
            raise ValueError(f"{saved.folder} holds a {saved.kind!r} policy, not a {cls.kind!r} one")
        return policy


def policy_from_spec(kind: str, module: str, config: dict[str, Any]) -> Policy:
    """Build an untrained policy of registered ``kind`` from its config dict."""
    if kind not in _POLICY_CLASSES and module.startswith("policies."):
        importlib.import_module(module)
    if kind not in _POLICY_CLASSES:
        raise ValueError(f"unknown policy kind {kind!r}; known: {', '.join(sorted(_POLICY_CLASSES))}")
    cls = _POLICY_CLASSES[kind]
    return cls(cls.config_class(**config))


#: Policies that ship with the project, by name (``policies/pretrained/<name>/``: a model folder and its MODEL_CARD.md).
SHIPPED_POLICIES = {"default": Path(__file__).resolve().parent / "pretrained" / "default"}


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> Policy:
    """The policy (eval mode, on ``device``) of a shipped policy's name (``SHIPPED_POLICIES``), a model folder,
    or a run folder (its best, else its last)."""
    return Policy.from_pretrained(SHIPPED_POLICIES.get(os.fspath(path), path), device)


@runtime_checkable
class Algorithm(Protocol):
    """What ``policies.train`` drives. An algorithm module exposes
    ``make_algorithm(observation: str, latent_channels: int, **options) -> Algorithm``.

    - ``policy``: the ``Policy`` being trained (saved each epoch).
    - ``train_episode(env)``: run one episode on a ``LatentStyleEnv`` (one
      clip), updating the networks inside; return one dict of float scalars
      per step (keys such as ``reward``, ``advantage``, ``style``,
      ``content``, ``temporal``, ``loss``). Gradients must be averaged across
      processes with ``policies.parallel.average_gradients`` before each
      optimiser step so data-parallel replicas stay identical. Random draws
      use torch's global generator (the loop seeds it per epoch and process).
    - ``state_dict()``/``load_state_dict()``: networks, optimisers, counters:
      everything needed to resume.
    - ``to(device)``: move every network (called once, before training or resuming); returns self.
    """

    policy: Policy

    def to(self, device: torch.device | str) -> Algorithm: ...

    def train_episode(self, env: Any) -> list[dict[str, float]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


ALGORITHM_MODULES = {"pathwise": "policies.pathwise", "reinforce": "policies.reinforce", "sac": "policies.sac"}


def algorithm_module(name: str):
    """The module implementing training algorithm ``name``; a clear ValueError when unknown or missing."""
    if name not in ALGORITHM_MODULES:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHM_MODULES)}")
    module_name = ALGORITHM_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ValueError(f"algorithm {name!r} is not available: module {module_name} does not exist yet") from error
    if not hasattr(module, "make_algorithm"):
        raise ValueError(f"module {module_name} defines no make_algorithm(observation, latent_channels, ...)")
    return module


def make_algorithm(name: str, observation: str, latent_channels: int, **options: Any) -> Algorithm:
    """Build training algorithm ``name`` (``pathwise``, ``reinforce`` or ``sac``) for the given observation kind."""
    check_observation_kind(observation)
    return algorithm_module(name).make_algorithm(observation, latent_channels, **options)

"""RLMiniStyler networks: the unified actor, the builder and the critic
(``QNetwork``, one of the pair in ``policies.sac_core.TwinCritic``).

Feng et al., "Light-weight RL Style Agent for Arbitrary Sequential Neural
Style Generation" (IJCAI 2025); layers as in the public code
(github.com/fengxiaoming520/RLMiniStyler, ``rl/nets.py``).

One refinement step maps the moving image s_k (N,3,H,W) in [0,1] and a style
to s_{k+1}:

- the actor's encoder (a 9x9 convolution, two depthwise-separable stride-2
  stages, two residual blocks; reflection padding, no normalisation) encodes
  the moving image into a Gaussian latent action (N,64,H/4,W/4), sampled by
  reparameterisation. The same encoder, with a style-specific 3x3 branch
  inserted after each stride-2 stage (at H/2 and H/4), encodes the style
  image into an explicit style representation (``StyleCode``, StyleBank-like):
  per-channel mean/std of four feature maps (the shallow branch, the deep
  branch and the two residual outputs) and, from each, a channel-wise filter
  modulation (weight, bias) pooled from a grouped 3x3 convolution;
- the builder executes the action: AdaIN to the deepest style statistics, a
  residual block modulated by the deepest filter modulation, AdaIN and a
  modulated residual block for the next level, then two bilinear 2x
  upsamplings whose 1x1 convolutions are modulated by the H/4 and H/2
  branch codes, and a 9x9 convolution to RGB. Modulation, as the public
  ``filterMod``: y = w * conv(x) + b * x.

The action depends on the moving image only; the style enters through the
builder. Every operation is per image (no batch statistics), so one batch may
mix styles. H and W must be multiples of 4 (``inference.stylize_frames``
pads). With the default widths (16, 32, 64) actor + builder hold 371,155
parameters (the paper: 0.37 M).

Deviations from the public code, each needed for a correct, trainable port:

- Output range: the public builder emits unbounded pixels; here a sigmoid
  gives the next moving image in [0,1] (the project's image convention, so
  the state stays a valid image across steps), as in ``baselines.rlnst``.
- Residual steps (``RLMiniStylerConfig.residual``, on by default): the
  builder's output is added to the logits of the current moving image,
  s_{k+1} = sigmoid(logit(s_k) + builder(a, code)), and its RGB convolution
  starts at zero, so the untrained model is the identity and every step is a
  move away from the current image, which is what the content term (to the
  previous moving image) measures. The public builder decodes the whole
  image, and its first AdaIN replaces the action's channel statistics with
  the style's, so how stylised s_k already was barely reaches s_{k+1}: in
  short CPU runs (64 px, lr 1e-3, 20-240 updates, two seeds) the style term
  after step 5 over step 1 wandered between 0.83 and 1.09 (mean over three
  training styles on the four shared photos), and its content term to the
  photo reached 50 after 5 steps (two different shared photos: 40-97).
  With residual steps, runs of the same setting gave 0.82-0.96 up to 100
  updates (0.87-0.91 after 40 updates over five seeds, the run of the
  tests), at a content term of 5-25. ``residual=False`` is the public
  builder.
- Initialisation: the public code keeps PyTorch's default initialisation,
  under which each layer shrinks the signal about 2.4x: at init the action
  mean varies spatially by ~4e-4 (below AdaIN's eps, so the builder sees
  only the sampling noise) and the builder outputs a uniform grey whatever
  the input and style. Here the convolutions use He initialisation (biases
  0), except the Gaussian head's 1x1 convolutions and the RGB output (PyTorch
  default; zero with residual steps), and the filter modulation starts near
  identity (weight ~1, bias ~0). Observed here with the public builder (two
  64 px photos, one style, 30 supervised updates at lr 1e-3): style term
  14.4 and content term 40.3, against 35.6 and 51.4 with the default
  initialisation (grey output).
- Critic: the public Q network ends with a ReLU, so its values cannot be
  negative while the rewards (negative style losses) are; here the last
  1x1 convolution is linear, and its Q map is averaged into one value per
  image (log-probabilities are averaged per action element likewise).

The Gaussian head is the public one: its squashed output in [-10, 2] is the
log of the standard deviation (the public code names it a log-variance but
passes exp() of it to ``Normal`` as the scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.io.pretrained import PretrainedMixin

EPS = 1e-5
MIN_SIZE = 8
LOGIT_EPS = 1e-3  # residual steps clamp the moving image into [LOGIT_EPS, 1 - LOGIT_EPS] before its logit


def check_moving(images: Tensor) -> None:
    """Raise ValueError unless ``images`` is (N,3,H,W) with H, W multiples of 4 and at least ``MIN_SIZE``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"moving images must be (N,3,H,W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % 4 or width % 4 or height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(
            f"RLMiniStyler needs H and W that are multiples of 4 and at least {MIN_SIZE}, got {height}x{width}; "
            "resize or pad the frames (inference.stylize_frames pads for you)"
        )


def mean_std(features: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation (N,C,1,1) each of ``features`` (N,C,H,W) (AdaIN's ``calc_mean_std``)."""
    if features.dim() != 4:
        raise ValueError(f"features must be (N,C,H,W), got {tuple(features.shape)}")
    flat = features.flatten(2)
    mean = flat.mean(dim=2)[..., None, None]
    std = (flat.var(dim=2, unbiased=features.shape[2] * features.shape[3] > 1) + eps).sqrt()[..., None, None]
    return mean, std


def adain(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """AdaIN (Huang & Belongie 2017): ``x`` (N,C,H,W) re-normalised to ``mean``/``std`` (N or 1,C,1,1)."""
    x_mean, x_std = mean_std(x)
    return (x - x_mean) / x_std * std + mean


class ConvLayer(nn.Sequential):
    """Reflection padding + (grouped) convolution: keeps the size at stride 1, halves it at stride 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.ReflectionPad2d(kernel_size // 2),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups),
        )

    @property
    def conv(self) -> nn.Conv2d:
        return self[1]


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise-separable stride-2 stage: grouped 3x3 (stride 2), ReLU, 1x1, ReLU."""
    return nn.Sequential(
        ConvLayer(in_channels, out_channels, 3, stride=2, groups=in_channels), nn.ReLU(),
        ConvLayer(out_channels, out_channels, 1), nn.ReLU(),
    )


class ModulatedResidual(nn.Module):
    """Residual block x + conv2(relu(conv1 x)); modulated by (w, b), each conv output y becomes w*y + b*(its input)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.conv2 = ConvLayer(channels, channels, 3)

    def forward(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        if weight is None:
            return x + self.conv2(F.relu(self.conv1(x)))
        h = F.relu(weight * self.conv1(x) + bias * x)
        return x + weight * self.conv2(h) + bias * h


class ModulatedUpsample(nn.Module):
    """Bilinear 2x upsampling, grouped 3x3 conv + ReLU, 1x1 conv modulated by (w, b) (N or 1,C_out,1,1) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, out_channels, 3, groups=out_channels)
        self.conv2 = ConvLayer(out_channels, out_channels, 1)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.conv1(x))
        return F.relu(weight * self.conv2(x) + bias * x)


class ModulationHead(nn.Module):
    """Channel-wise filter modulation of a feature map: (weight, bias) (N,C_out,1,1), pooled grouped 3x3 convs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = ConvLayer(in_channels, out_channels, 3, groups=out_channels)
        self.bias = ConvLayer(in_channels, out_channels, 3, groups=out_channels)

    @torch.no_grad()
    def start_near_identity(self, scale: float = 0.1) -> None:
        """Start near (weight 1, bias 0): conv weights scaled by ``scale``, conv biases 1 (weight) and 0 (bias)."""
        for layer, offset in ((self.weight, 1.0), (self.bias, 0.0)):
            layer.conv.weight.mul_(scale)
            layer.conv.bias.fill_(offset)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return F.adaptive_avg_pool2d(self.weight(features), 1), F.adaptive_avg_pool2d(self.bias(features), 1)


class StyleLevel(NamedTuple):
    """One style-code level: feature ``mean``/``std`` (N,C,1,1), filter modulation ``weight``/``bias`` (N,C',1,1)."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor


class StyleCode(NamedTuple):
    """Explicit style representation, size-independent (all fields (N,C,1,1)).

    ``shallow``: the style branch at H/2 (modulates the builder's last
    upsampling); ``middle``: the style branch at H/4 (first upsampling);
    ``deep1``/``deep2``: the two residual outputs (AdaIN targets and
    modulations of the builder's second/first residual block).
    """

    shallow: StyleLevel
    middle: StyleLevel
    deep1: StyleLevel
    deep2: StyleLevel

    @staticmethod
    def cat(codes: list[StyleCode]) -> StyleCode:
        """Concatenate codes along the batch (e.g. of style images of different sizes)."""
        return StyleCode(*(StyleLevel(*(torch.cat(parts) for parts in zip(*levels))) for levels in zip(*codes)))


@dataclass(frozen=True)
class RLMiniStylerConfig:
    """Architecture: encoder widths (c1, c2, c3) with c2 = 2 c1 and c3 = 2 c2 (the paper: 16, 32, 64);
    ``log_std_range``: bounds of the action's per-element log standard deviation (public code: -10, 2);
    ``residual``: the builder adds to the current moving image's logits (True) or decodes the whole next
    image (False, the public code); see the module doc."""

    channels: tuple[int, int, int] = (16, 32, 64)
    log_std_range: tuple[float, float] = (-10.0, 2.0)
    residual: bool = True

    def __post_init__(self) -> None:
        c1, c2, c3 = self.channels
        if c1 < 1 or c2 != 2 * c1 or c3 != 2 * c2:
            raise ValueError(f"channels must be (c, 2c, 4c), got {self.channels}")
        low, high = self.log_std_range
        if not low < high:
            raise ValueError(f"log_std_range must be (low, high) with low < high, got {self.log_std_range}")


class Encoder(nn.Module):
    """The actor's lightweight encoder, shared by the moving image and (through its style branches) the style image."""

    def __init__(self, config: RLMiniStylerConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.stem = nn.Sequential(ConvLayer(3, c1, 9), nn.ReLU())
        self.down1 = _down(c1, c2)
        self.down2 = _down(c2, c3)
        self.res1 = ModulatedResidual(c3)
        self.res2 = ModulatedResidual(c3)
        self.branch_shallow = nn.Sequential(ConvLayer(c2, c2, 3), nn.ReLU())
        self.branch_middle = nn.Sequential(ConvLayer(c3, c3, 3), nn.ReLU())
        self.mod_shallow = ModulationHead(c2, c1)
        self.mod_middle = ModulationHead(c3, c2)
        self.mod_deep1 = ModulationHead(c3, c3)
        self.mod_deep2 = ModulationHead(c3, c3)

    def encode_moving(self, images: Tensor) -> Tensor:
        """Deep features (N,c3,H/4,W/4) of moving images (N,3,H,W) in [0,1]."""
        return self.res2(self.res1(self.down2(self.down1(self.stem(images)))))

    def encode_style(self, images: Tensor) -> StyleCode:
        """Style code of style images (N,3,H,W) in [0,1] (any size of at least 9 px), through the style branches."""
        shallow = self.branch_shallow(self.down1(self.stem(images)))
        middle = self.branch_middle(self.down2(shallow))
        deep1 = self.res1(middle)
        deep2 = self.res2(deep1)
        heads = (self.mod_shallow, self.mod_middle, self.mod_deep1, self.mod_deep2)
        return StyleCode(*(
            StyleLevel(*mean_std(features), *head(features))
            for features, head in zip((shallow, middle, deep1, deep2), heads)
        ))


class GaussianHead(nn.Module):
    """Depthwise 3x3 conv, then 1x1 convs to the action's mean and log-std (tanh-squashed into ``log_std_range``)."""

    def __init__(self, channels: int, log_std_range: tuple[float, float]) -> None:
        super().__init__()
        self.depthwise = ConvLayer(channels, channels, 3, groups=channels)
        self.mean = ConvLayer(channels, channels, 1)
        self.log_std = ConvLayer(channels, channels, 1)
        self.log_std_range = log_std_range

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std), each (N,C,H/4,W/4)."""
        x = self.depthwise(features)
        low, high = self.log_std_range
        return self.mean(x), low + 0.5 * (high - low) * (torch.tanh(self.log_std(x)) + 1)


class Actor(nn.Module):
    """Unified actor: encoder + Gaussian head; ``forward(moving) -> (mean, log_std)``, ``style_code(style)``."""

    def __init__(self, config: RLMiniStylerConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config)
        self.head = GaussianHead(config.channels[2], config.log_std_range)

    def style_code(self, style: Tensor) -> StyleCode:
        return self.encoder.encode_style(style)

    def forward(self, moving: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.encoder.encode_moving(moving))


class Builder(nn.Module):
    """Executes an action (N,c3,H/4,W/4) under a style code into the next moving image (N,3,H,W) in [0,1].

    With ``moving`` (the current moving image (N,3,H,W) in [0,1]) the output is a residual on its logits.
    """

    def __init__(self, config: RLMiniStylerConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.channels
        self.res1 = ModulatedResidual(c3)
        self.res2 = ModulatedResidual(c3)
        self.up1 = ModulatedUpsample(c3, c2)
        self.up2 = ModulatedUpsample(c2, c1)
        self.out = ConvLayer(c1, 3, 9)

    def forward(self, action: Tensor, code: StyleCode, moving: Tensor | None = None) -> Tensor:
        x = adain(action, code.deep2.mean, code.deep2.std)
        x = self.res1(x, code.deep2.weight, code.deep2.bias)
        x = adain(x, code.deep1.mean, code.deep1.std)
        x = self.res2(x, code.deep1.weight, code.deep1.bias)
        x = self.up1(x, code.middle.weight, code.middle.bias)
        x = self.up2(x, code.shallow.weight, code.shallow.bias)
        if moving is None:
            return torch.sigmoid(self.out(x))
        return torch.sigmoid(torch.logit(moving, eps=LOGIT_EPS) + self.out(x))


class StepResult(NamedTuple):
    """One refinement step: ``image`` (N,3,H,W) [0,1]; ``action`` and ``mean`` (N,c3,H/4,W/4); ``log_prob`` (N,)
    (log-density per action element, averaged)."""

    image: Tensor
    action: Tensor
    mean: Tensor
    log_prob: Tensor


def _check_code(code: StyleCode, batch: int) -> None:
    n = code.deep2.mean.shape[0]
    if n not in (1, batch):
        raise ValueError(f"the style code holds {n} styles for {batch} moving images; give 1 or {batch}")


class RLMiniStyler(PretrainedMixin, nn.Module):
    """Actor + builder (what inference needs). ``step(moving, code)`` performs one refinement step.
    ``save_pretrained(folder)`` / ``RLMiniStyler.from_pretrained(folder)``: a model folder (``pipeline.io.pretrained``)."""

    pretrained_format: ClassVar[str] = "rlministyler-model-v3"
    kind: ClassVar[str] = "rlministyler"
    config_class: ClassVar[type] = RLMiniStylerConfig

    def __init__(self, config: RLMiniStylerConfig | None = None) -> None:
        super().__init__()
        self.config = config or RLMiniStylerConfig()
        self.actor = Actor(self.config)
        self.builder = Builder(self.config)
        self._initialise()

    @torch.no_grad()
    def _initialise(self) -> None:
        """He init; PyTorch default for the Gaussian head's 1x1 convs and the RGB output (zero with residual
        steps: the untrained model is the identity); filter modulation near identity."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for layer in (self.actor.head.mean, self.actor.head.log_std, self.builder.out):
            layer.conv.reset_parameters()
        if self.config.residual:
            nn.init.zeros_(self.builder.out.conv.weight)
            nn.init.zeros_(self.builder.out.conv.bias)
        encoder = self.actor.encoder
        for head in (encoder.mod_shallow, encoder.mod_middle, encoder.mod_deep1, encoder.mod_deep2):
            head.start_near_identity()

    def style_code(self, style: Tensor) -> StyleCode:
        """Style code of style images (N,3,H,W) in [0,1]."""
        if style.dim() != 4 or style.shape[1] != 3 or min(style.shape[-2:]) < 9:
            raise ValueError(f"style images must be (N,3,H,W) with H, W >= 9, got {tuple(style.shape)}")
        return self.actor.style_code(style)

    def policy(self, moving: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(action, log_prob (N,), mean) for moving images (N,3,H,W); ``deterministic`` takes the mean."""
        check_moving(moving)
        mean, log_std = self.actor(moving)
        std = log_std.exp()
        action = mean if deterministic else mean + std * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, std, validate_args=False).log_prob(action).flatten(1).mean(dim=1)
        return action, log_prob, mean

    def step(self, moving: Tensor, code: StyleCode, deterministic: bool = False) -> StepResult:
        """s_k (N,3,H,W) in [0,1] -> s_{k+1} under ``code`` (batch N, or 1 for one style for all)."""
        _check_code(code, moving.shape[0])
        action, log_prob, mean = self.policy(moving, deterministic)
        image = self.builder(action, code, moving if self.config.residual else None)
        return StepResult(image, action, mean, log_prob)

    def forward(self, moving: Tensor, style: Tensor, deterministic: bool = False) -> StepResult:
        return self.step(moving, self.style_code(style), deterministic)


class QNetwork(nn.Module):
    """Q(s, a): ``forward(moving (N,3,H,W) [0,1], action (N,c3,H/4,W/4)) -> (N,)``.

    The moving image through a 9x9 conv and two depthwise-separable stride-2
    stages (widths c1, c2, c3 as the actor), concatenated with the action,
    a 3x3 conv + ReLU and a linear 1x1 conv to a Q map, averaged per image.
    """

    def __init__(self, config: RLMiniStylerConfig | None = None) -> None:
        super().__init__()
        c1, c2, c3 = (config or RLMiniStylerConfig()).channels
        self.state = nn.Sequential(ConvLayer(3, c1, 9), nn.ReLU(), _down(c1, c2), _down(c2, c3))
        self.mix = nn.Sequential(ConvLayer(2 * c3, 2 * c3, 3), nn.ReLU(), ConvLayer(2 * c3, c3, 1))

    def forward(self, moving: Tensor, action: Tensor) -> Tensor:
        check_moving(moving)
        x = self.state(moving)
        if action.shape != x.shape:
            raise ValueError(f"action must be (N,C,H/4,W/4) = {tuple(x.shape)}, got {tuple(action.shape)}")
        return self.mix(torch.cat([x, action], dim=1)).mean(dim=(1, 2, 3))

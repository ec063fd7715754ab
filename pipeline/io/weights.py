"""One place that finds every pretrained file the project loads.

Lookup order for a file named in ``WEIGHTS``:

1. an explicit path given by the caller;
2. the directory named by the environment variable ``VSTYLE_WEIGHTS``
   (CI and the README point it at ``../shared/weights``);
3. the user cache ``$XDG_CACHE_HOME/vstyle/weights`` (default ``~/.cache``);
4. a download from the file's public source into that cache, checked by
   sha256 (or by the hash prefix torchvision publishes in its file names),
   only when ``allow_download=True`` and ``VSTYLE_OFFLINE`` is not set;
5. otherwise ``WeightsNotFoundError`` naming the file and how to supply it.

Tests set ``VSTYLE_OFFLINE=1`` so they never touch the network.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ENV_DIR = "VSTYLE_WEIGHTS"
ENV_OFFLINE = "VSTYLE_OFFLINE"


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained file could not be found locally nor downloaded."""


@dataclass(frozen=True)
class WeightSpec:
    """A pretrained file: its name on disk and where it comes from.

    ``sha256`` is the digest of the file as stored in the weights folder (None
    where only the source's hash prefix is published).
    ``url`` is its public source; when the source is a larger checkpoint
    (torchvision's full VGG16, say) ``convert`` turns that state dict into the
    stored one and ``source_hash_prefix`` checks the download instead.
    """

    filename: str
    sha256: str | None
    url: str
    description: str
    source_hash_prefix: str | None = None
    convert: Callable[[dict], dict] | None = None


def _features_only(state_dict: dict) -> dict:
    """Keep the ``features.*`` part of a torchvision classifier's state dict."""
    return {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}


WEIGHTS: dict[str, WeightSpec] = {
    "taef2_encoder": WeightSpec(
        "taef2_encoder.pth",
        "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
        "https://github.com/madebyollin/taesd/raw/main/taef2_encoder.pth",
        "TAEF2 encoder (tiny FLUX.2 autoencoder, MIT)",
    ),
    "taef2_decoder": WeightSpec(
        "taef2_decoder.pth",
        "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
        "https://github.com/madebyollin/taesd/raw/main/taef2_decoder.pth",
        "TAEF2 decoder (tiny FLUX.2 autoencoder, MIT)",
    ),
    "vgg16_features": WeightSpec(
        "vgg16_features.pth",
        "a478548abce140c00cbdf56c87aec9887b4284d7d9e7be3a0cafb20aaae5cfa2",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "torchvision VGG16 IMAGENET1K_V1, features part",
        source_hash_prefix="397923af",
        convert=_features_only,
    ),
    "alexnet_features": WeightSpec(
        "alexnet_features.pth",
        "3b5856e6943b7976b9b3178a12e36f48d2606396280e93be7a59315e38befdaa",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "torchvision AlexNet IMAGENET1K_V1, features part (LPIPS-alex backbone)",
        source_hash_prefix="7be5be79",
        convert=_features_only,
    ),
    "raft_small": WeightSpec(
        "raft_small.pth",
        "d70a855211b0493605d42f1f9dc1a3ae69555488e0ebc44a01adb7a0898e3ca3",
        "https://download.pytorch.org/models/raft_small_C_T_V1-ad48884c.pth",
        "RAFT-small (princeton-vl, FlyingChairs+Things) in torchvision layout",
        source_hash_prefix="ad48884c",
    ),
    "raft_large": WeightSpec(
        "raft_large.pth",
        None,
        "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        "RAFT-large (torchvision C_T_SKHT_V2: Chairs+Things+Sintel+KITTI+HD1K)",
        source_hash_prefix="ff5fadd5",
    ),
}


def cache_dir() -> Path:
    """The user cache for downloaded weights."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "vstyle" / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(spec: WeightSpec, target: Path) -> None:
    """Fetch ``spec`` into ``target`` atomically, verifying its hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        raw = Path(tmp) / "download"
        torch.hub.download_url_to_file(spec.url, str(raw), hash_prefix=spec.source_hash_prefix, progress=True)
        if spec.convert is not None:
            converted = Path(tmp) / "converted"
            torch.save(spec.convert(torch.load(raw, map_location="cpu", weights_only=True)), converted)
            raw = converted
        elif spec.source_hash_prefix is None and sha256_of(raw) != spec.sha256:
            raise WeightsNotFoundError(f"downloaded {spec.filename} from {spec.url} but its sha256 does not match")
        os.replace(raw, target)


def weight_path(name: str, path: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """Return the local path of pretrained file ``name`` (a key of ``WEIGHTS``).

    Raises ``WeightsNotFoundError`` with instructions when nothing is found.
    """
    if name not in WEIGHTS:
        raise KeyError(f"unknown weight {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    spec = WEIGHTS[name]
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise WeightsNotFoundError(f"{spec.description}: the given path {explicit} does not exist")
        return explicit
    env_dir = os.environ.get(ENV_DIR)
    if env_dir and (Path(env_dir) / spec.filename).is_file():
        return Path(env_dir) / spec.filename
    cached = cache_dir() / spec.filename
    if cached.is_file():
        return cached
    offline = bool(os.environ.get(ENV_OFFLINE))
    if allow_download and not offline:
        try:
            _download(spec, cached)
            return cached
        except (OSError, RuntimeError) as error:
            reason = f"download from {spec.url} failed ({error})"
    else:
        reason = "downloads are disabled (VSTYLE_OFFLINE is set)" if offline else "downloads are disabled"
    searched = f"{ENV_DIR}={env_dir!r}" if env_dir else f"{ENV_DIR} is not set"
    raise WeightsNotFoundError(
        f"missing pretrained file {spec.filename} ({spec.description}): {searched}, "
        f"not in the cache {cache_dir()}, and {reason}. Put {spec.filename} in a folder and "
        f"set {ENV_DIR} to it (e.g. export {ENV_DIR}=../shared/weights), or pass its path explicitly."
    )


def load_state_dict(name: str, path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Load the state dict of pretrained file ``name`` on the CPU, as float32."""
    state = torch.load(weight_path(name, path), map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

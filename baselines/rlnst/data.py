"""Training content for RL-NST: frames of training clips and photos, resized and cropped at random.

Clips (video files or folders of numbered frames) and photos are loaded once,
resized so their shorter side is ``size`` (antialiased) and kept as uint8;
each draw takes a random ``size`` x ``size`` crop (the same crop for all
frames of a clip window). Clips under a ``videos/test`` folder are refused:
the shared test clips are for evaluation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.io.files import shared_data_dir
from pipeline.io.images import load_image
from pipeline.io.video import IMAGE_EXTENSIONS, read_video


def default_clips() -> list[Path]:
    """The shared training clips (``videos/train``: video files and frame folders)."""
    folder = shared_data_dir() / "videos" / "train"
    if not folder.is_dir():
        raise FileNotFoundError(f"training clips not found at {folder}; pass clips explicitly or set VSTYLE_SHARED")
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def default_photos() -> list[Path]:
    """The shared photos (``photos/``)."""
    folder = shared_data_dir() / "photos"
    if not folder.is_dir():
        raise FileNotFoundError(f"photos not found at {folder}; pass photos explicitly or set VSTYLE_SHARED")
    return expand_images([folder])


def expand_images(paths: Sequence[Path]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders expanded to their image files (sorted)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"photo {path} does not exist")
    return found


def check_training_path(path: Path) -> None:
    """Raise ValueError for a path inside a ``videos/test`` folder (held-out evaluation clips)."""
    parts = Path(path).resolve().parts
    if any(a == "videos" and b == "test" for a, b in zip(parts, parts[1:])):
        raise ValueError(f"{path} is a held-out test clip (under videos/test); RL-NST must not train on it")


def _resize_shorter_side(images: Tensor, size: int) -> Tensor:
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    resized = F.interpolate(images, size=new_size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return (resized.clamp(0, 1) * 255).round().to(torch.uint8)


class ContentFrames:
    """Random crops (float32 [0,1]) of training frames and photos; ``size`` a multiple of 4, >= 64."""

    def __init__(
        self,
        clips: Sequence[Path],
        photos: Sequence[Path] = (),
        size: int = 128,
        max_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if size % 4 or size < 64:
            raise ValueError(f"training size must be a multiple of 4 and at least 64, got {size}")
        if not clips and not photos:
            raise ValueError("no training content: give at least one clip or photo")
        for path in clips:
            check_training_path(path)
        self.size = size
        self.generator = generator or torch.Generator()
        self.clips = [_resize_shorter_side(read_video(path, max_frames)[0], size) for path in clips]
        self.photos = [_resize_shorter_side(load_image(path), size) for path in photos]
        self._images = [(clip, t) for clip in self.clips for t in range(clip.shape[0])]
        self._images += [(photo, 0) for photo in self.photos]

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def _crop(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        top, left = self._randint(height - self.size + 1), self._randint(width - self.size + 1)
        return frames[..., top : top + self.size, left : left + self.size].float() / 255

    def sample_image(self) -> Tensor:
        """One random crop (1,3,size,size) of a frame or photo, each image equally likely."""
        frames, index = self._images[self._randint(len(self._images))]
        return self._crop(frames[index : index + 1])

    def sample_clip(self, length: int) -> Tensor:
        """``length`` consecutive frames (length,3,size,size) of a random clip, one random crop."""
        usable = [clip for clip in self.clips if clip.shape[0] >= length]
        if not usable:
            raise ValueError(f"no training clip has {length} frames (video mode needs clips, not photos)")
        clip = usable[self._randint(len(usable))]
        start = self._randint(clip.shape[0] - length + 1)
        return self._crop(clip[start : start + length])

"""Still images: loading, resizing to codec-friendly sizes, saving and grids.

Images are float32 tensors (N,3,H,W), RGB, in [0,1] (``docs/conventions.md``). Files are
read with PIL and written atomically (a temporary file in the same folder,
then ``os.replace``), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from torch import Tensor

from pipeline.io.files import atomic_output

PathLike = str | os.PathLike

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_GRAY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_LABEL_HEIGHT = 18
_GAP = 2


class ImageReadError(ValueError):
    """A file exists but cannot be decoded as an image."""


def load_image_array(path: PathLike) -> np.ndarray:
    """Read an image file as float32 (H,W,3) RGB in [0,1].

    EXIF orientation is applied. Grayscale becomes RGB (16-bit grayscale keeps
    its precision), images with transparency (RGBA, LA, palette with a
    transparent colour) are composited on white, other modes (CMYK, YCbCr, ...)
    are converted by PIL.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if not path.is_file():
        raise ImageReadError(f"{path} is not a file, cannot read it as an image")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageReadError(f"{path} is not a readable image: {err}") from err

    if img.mode in _SIXTEEN_BIT_GRAY:
        gray = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path: PathLike) -> Tensor:
    """Read an image file as a float32 tensor (1,3,H,W) RGB in [0,1].

    Raises FileNotFoundError for a missing path and ImageReadError for a file
    that is not an image. See ``load_image_array`` for mode handling.
    """
    return torch.from_numpy(load_image_array(path)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _check_images(images: Tensor, what: str = "images") -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what} must be a tensor (N,3,H,W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in [0,1], got dtype {images.dtype}")


def _round_to_multiple(size: float, multiple: int) -> int:
    return max(multiple, int(round(size / multiple)) * multiple)


def _check_multiple(multiple: int) -> None:
    if multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple}")


def restore_size(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (N,3,H,W) images to ``size`` = (H, W), antialiased bilinear.

    Returns the input unchanged when it already has that size.
    """
    _check_images(images)
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    if tuple(images.shape[-2:]) == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def resize_to_width(images: Tensor, width: int, multiple: int = 8) -> Tensor:
    """Resize (N,3,H,W) images to about ``width`` pixels wide, keeping the aspect ratio.

    Both sides are rounded to the nearest multiple of ``multiple`` (at least
    ``multiple``), as latent codecs need sides divisible by 8.
    """
    _check_images(images)
    _check_multiple(multiple)
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    height_in, width_in = images.shape[-2:]
    new_w = _round_to_multiple(width, multiple)
    new_h = _round_to_multiple(height_in * width / width_in, multiple)
    return restore_size(images, (new_h, new_w))


def fit_to_multiple(images: Tensor, multiple: int = 8) -> Tensor:
    """Resize (N,3,H,W) images so both sides are the nearest multiples of ``multiple``.

    Images whose sides already are multiples are returned unchanged.
    """
    _check_images(images)
    _check_multiple(multiple)
    height, width = images.shape[-2:]
    return restore_size(images, (_round_to_multiple(height, multiple), _round_to_multiple(width, multiple)))


def to_uint8(images: Tensor) -> np.ndarray:
    """Convert (N,3,H,W) images in [0,1] to a uint8 array (N,H,W,3).

    Values outside [0,1] are clipped; NaN or infinite values raise ValueError.
    """
    _check_images(images)
    images = images.detach()
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    scaled = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def _pil_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path} from its extension; use .png or .jpg")
    return fmt


def _save_pil(path: PathLike, img: Image.Image) -> None:
    path = Path(path)
    fmt = _pil_format(path)
    with atomic_output(path, suffix=path.suffix) as tmp:
        img.save(tmp, format=fmt)


def _one_image(image: Tensor, what: str) -> Tensor:
    """Return one image (3,H,W) or (1,3,H,W) as (1,3,H,W)."""
    if isinstance(image, Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    _check_images(image, what)
    if image.shape[0] != 1:
        raise ValueError(f"{what} must be one image (3,H,W), got a batch of {image.shape[0]}")
    return image


def save_image(path: PathLike, image: Tensor) -> None:
    """Save one image (3,H,W) or (1,3,H,W) in [0,1]; format from the extension, atomic."""
    _save_pil(path, Image.fromarray(to_uint8(_one_image(image, "image"))[0]))


def _fit_into(image: Tensor, height: int, width: int) -> Image.Image:
    """Scale a (3,h,w) image to fit (height, width) keeping its aspect ratio, centred on white."""
    image = _one_image(image, "grid cell")
    h, w = image.shape[-2:]
    scale = min(height / h, width / w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    pixels = Image.fromarray(to_uint8(restore_size(image, size))[0])
    cell = Image.new("RGB", (width, height), "white")
    cell.paste(pixels, ((width - size[1]) // 2, (height - size[0]) // 2))
    return cell


def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=_LABEL_HEIGHT - 4)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def save_image_grid(
    path: PathLike,
    rows: Sequence[Sequence[Tensor] | Tensor],
    labels: Sequence[str] | None = None,
) -> None:
    """Save a grid of images, one row per entry of ``rows``, atomically.

    ``rows``: a list of rows, each a list of (3,H,W) tensors or one (N,3,H,W)
    tensor, in [0,1]. Every cell has the size of the first image; other images
    are scaled to fit it, keeping their aspect ratio, on a white background.
    ``labels``: one text per row, drawn in a white strip above that row.
    """
    rows = [list(row) for row in rows]
    if not rows or not any(rows):
        raise ValueError("save_image_grid needs at least one image")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"got {len(labels)} labels for {len(rows)} rows; give one label per row")
    first = next(image for row in rows for image in row)
    cell_h, cell_w = first.shape[-2:]
    strip = _LABEL_HEIGHT if labels is not None else 0
    columns = max(len(row) for row in rows)
    row_h = strip + cell_h + _GAP
    grid = Image.new("RGB", (columns * (cell_w + _GAP) - _GAP, len(rows) * row_h - _GAP), "white")
    draw = ImageDraw.Draw(grid)
    font = _label_font() if labels is not None else None
    for r, row in enumerate(rows):
        top = r * row_h
        if labels is not None:
            draw.text((2, top + 1), str(labels[r]), fill="black", font=font)
        for c, image in enumerate(row):
            grid.paste(_fit_into(image, cell_h, cell_w), (c * (cell_w + _GAP), top + strip))
    _save_pil(path, grid)

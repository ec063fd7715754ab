"""Image loading, resizing and saving on real photos from ../shared/data/photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io.images import (
    ImageReadError,
    atomic_output,
    fit_to_multiple,
    load_image,
    resize_to_width,
    restore_size,
    save_image,
    save_image_grid,
    to_uint8,
)


@pytest.fixture(scope="module")
def chelsea_pil(data_dir) -> Image.Image:
    """The cat photo (451x300 RGB) as a PIL image."""
    with Image.open(data_dir / "photos" / "chelsea.png") as img:
        return img.convert("RGB")


def _rgb(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def test_load_image_is_rgb_float_in_unit_range(data_dir):
    image = load_image(data_dir / "photos" / "astronaut.png")
    assert image.shape == (1, 3, 512, 512)
    assert image.dtype == torch.float32
    assert 0.0 <= image.min() < 0.1 and 0.9 < image.max() <= 1.0


def test_grayscale_becomes_rgb(chelsea_pil, tmp_path):
    chelsea_pil.convert("L").save(tmp_path / "gray.png")
    image = load_image(tmp_path / "gray.png")
    assert image.shape == (1, 3, 300, 451)
    assert torch.equal(image[:, 0], image[:, 1]) and torch.equal(image[:, 1], image[:, 2])
    luma = _rgb(chelsea_pil) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert (image[:, 0] - luma.sum(1)).abs().max() < 2 / 255


def test_sixteen_bit_grayscale_keeps_its_range(chelsea_pil, tmp_path):
    gray = np.asarray(chelsea_pil.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    image = load_image(tmp_path / "gray16.png")
    assert torch.allclose(image[0, 1], torch.from_numpy(gray / 65535.0).float(), atol=1e-6)


def test_transparency_is_composited_on_white(chelsea_pil, tmp_path):
    rgba = np.asarray(chelsea_pil.convert("RGBA")).copy()
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    rgba[:, : rgba.shape[1] // 2, 3] = 0  # left half fully transparent
    Image.fromarray(rgba).save(tmp_path / "half.png")
    Image.fromarray(rgba).convert("LA").save(tmp_path / "half_la.png")

    assert torch.equal(load_image(tmp_path / "opaque.png"), _rgb(chelsea_pil))
    for name in ("half.png", "half_la.png"):
        image = load_image(tmp_path / name)
        assert image.shape == (1, 3, 300, 451)
        assert torch.all(image[..., :225] == 1.0)
        assert image[..., 226:].mean() < 0.9


def test_palette_with_transparent_colour_is_composited_on_white(chelsea_pil, tmp_path):
    palette = chelsea_pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    index = palette.getpixel((0, 0))
    palette.save(tmp_path / "palette.png", transparency=index)
    image = load_image(tmp_path / "palette.png")
    transparent = torch.from_numpy(np.asarray(palette) == index)
    assert torch.all(image[0][:, transparent] == 1.0)
    assert image[0][:, ~transparent].mean() < 0.9


def test_cmyk_becomes_rgb(chelsea_pil, tmp_path):
    chelsea_pil.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.shape == (1, 3, 300, 451)
    assert (image - _rgb(chelsea_pil)).abs().mean() < 0.03


def test_load_image_errors_name_the_file(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match="not a file"):
        load_image(data_dir / "photos")
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize(("width", "multiple"), [(200, 8), (64, 8), (203, 8), (130, 16)])
def test_resize_to_width_keeps_aspect_and_multiples(chelsea_pil, width, multiple):
    image = _rgb(chelsea_pil)  # 300x451
    out = resize_to_width(image, width, multiple)
    height, new_width = out.shape[-2:]
    assert height % multiple == 0 and new_width % multiple == 0
    assert abs(new_width - width) <= multiple / 2
    assert abs(height - 300 * width / 451) <= multiple / 2
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.fast
def test_resize_to_width_never_goes_below_one_multiple():
    strip = torch.rand(1, 3, 4, 400)
    assert resize_to_width(strip, 64).shape[-2:] == (8, 64)
    with pytest.raises(ValueError, match="width"):
        resize_to_width(strip, 0)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        resize_to_width(strip[0], 64)


def test_fit_to_multiple_and_restore_size(chelsea_pil):
    image = _rgb(chelsea_pil)[..., :101, :77]
    fitted = fit_to_multiple(image)
    assert fitted.shape[-2:] == (104, 80)
    assert fit_to_multiple(fitted) is fitted
    restored = restore_size(fitted, (101, 77))
    assert restored.shape == image.shape
    assert (restored - image).abs().mean() < 0.02

    small = resize_to_width(_rgb(chelsea_pil), 128)
    assert restore_size(small, (300, 451)).shape[-2:] == (300, 451)


@pytest.mark.fast
def test_to_uint8_clips_and_rejects_nan():
    images = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 5).expand(2, 3, 1, 5)
    pixels = to_uint8(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 1, 5, 3)
    assert pixels[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.full((1, 3, 2, 2), float("nan")))


def test_save_image_round_trip_and_atomicity(chelsea_pil, tmp_path):
    image = _rgb(chelsea_pil)[0, :, :96, :128]
    save_image(tmp_path / "cat.png", image)
    assert torch.equal(load_image(tmp_path / "cat.png"), image[None])
    save_image(tmp_path / "cat.png", 1.0 - image)  # overwrites
    assert torch.allclose(load_image(tmp_path / "cat.png"), 1.0 - image[None], atol=1 / 255)
    with pytest.raises(ValueError, match="extension"):
        save_image(tmp_path / "cat.unknown", image)
    with pytest.raises(ValueError, match="one image"):
        save_image(tmp_path / "two.png", torch.stack([image, image]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]


@pytest.mark.fast
def test_atomic_output_keeps_existing_file_on_error(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_save_image_grid_layout_and_labels(chelsea_pil, data_dir, tmp_path):
    cat = resize_to_width(_rgb(chelsea_pil), 96)  # (1,3,64,96)
    astronaut = resize_to_width(load_image(data_dir / "photos" / "astronaut.png"), 64)  # square
    rows = [[cat[0], astronaut[0], cat[0]], torch.cat([cat, cat])]
    save_image_grid(tmp_path / "grid.png", rows)
    with Image.open(tmp_path / "grid.png") as grid:
        plain_size = grid.size
    save_image_grid(tmp_path / "grid_labels.png", rows, labels=["row one", "row two"])
    with Image.open(tmp_path / "grid_labels.png") as grid:
        labelled = np.asarray(grid.convert("RGB"))
    assert plain_size == (3 * 96 + 2 * 2, 2 * 64 + 2)
    height = labelled.shape[0]
    strip = (height - plain_size[1]) // 2
    assert strip > 0 and labelled.shape[1] == plain_size[0]
    assert labelled[:strip].min() < 100  # text drawn in the first label strip
    # the square image is scaled to fit its 96x64 cell, centred on white
    cell = labelled[strip : strip + 64, 98 : 98 + 96]
    assert (cell[:, :12] == 255).all() and (cell[:, -12:] == 255).all()
    with pytest.raises(ValueError, match="one label per row"):
        save_image_grid(tmp_path / "bad.png", rows, labels=["only one"])
    with pytest.raises(ValueError, match="at least one image"):
        save_image_grid(tmp_path / "empty.png", [[]])
